#!/usr/bin/env bash
# Installs Debian's chromium for the headless-browser tests (tests/chromium.py) when it is
# missing. Never fails the caller: where it cannot install (no apt-get, no root and no
# passwordless sudo, no registry), it says why, and those tests skip with that reason.
set -uo pipefail

say() { printf '[chromium] %s\n' "$*"; }

if [[ -n "${LESIONLENS_CHROMIUM:-}" ]]; then
  say "using LESIONLENS_CHROMIUM=$LESIONLENS_CHROMIUM"; exit 0
fi
if command -v chromium >/dev/null 2>&1; then
  say "$(chromium --version 2>/dev/null | head -n1) already installed"; exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  say "not installed: no apt-get on this host; the browser tests will skip"; exit 0
fi
sudo=()
if [[ "$(id -u)" != 0 ]]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo=(sudo -n)
  else
    say "not installed: installing needs root (apt-get install chromium); the browser tests will skip"
    exit 0
  fi
fi
say "installing Debian's chromium (about 100 MB; a minute or two)"
export DEBIAN_FRONTEND=noninteractive
if ! "${sudo[@]}" apt-get install -y -q chromium >/tmp/lesionlens-chromium.log 2>&1; then
  "${sudo[@]}" apt-get update -q >>/tmp/lesionlens-chromium.log 2>&1
  "${sudo[@]}" apt-get install -y -q chromium >>/tmp/lesionlens-chromium.log 2>&1
fi
if command -v chromium >/dev/null 2>&1; then
  say "installed $(chromium --version 2>/dev/null | head -n1)"
else
  say "could not install (see /tmp/lesionlens-chromium.log); the browser tests will skip"
fi
exit 0
