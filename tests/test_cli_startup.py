"""`--help` and argument errors answer without importing TensorFlow or Beam (seconds each):
the commands import them inside the functions that use them. Checked by what a fresh process
has imported, not by a clock (bench/cli_startup.py measures the time)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import ROOT

CHILD = r"""
import sys
argv = sys.argv[1:]
try:
    if argv[0] == "serving.dev":
        from serving.dev.cli import main
        code = main(argv[1:])
    else:
        from lesionlens.cli import main
        code = main(argv)
except SystemExit as e:
    code = e.code
heavy = sorted(m for m in ("tensorflow", "apache_beam", "grpc") if m in sys.modules)
sys.stderr.write("\nHEAVY=" + ",".join(heavy) + "\n")
sys.exit(code or 0)
"""


def run_cli(*argv: str) -> tuple[int, str, list[str]]:
    """(exit code, stderr without the marker line, heavy modules imported)."""
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1")
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    err, _, marker = proc.stderr.rpartition("\nHEAVY=")
    return proc.returncode, err, [m for m in marker.strip().split(",") if m]


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["score", "--help"],
        ["ingest", "--help"],
        ["predict", "--help"],
        ["serve-dev", "--help"],
        ["report", "--help"],
        ["synth", "--help"],
        ["serving.dev", "--help"],
    ],
)
def test_help_imports_neither_tensorflow_nor_beam(argv):
    code, _, heavy = run_cli(*argv)
    assert code == 0
    assert heavy == []


def test_argument_errors_answer_before_tensorflow(tmp_path):
    missing = tmp_path / "nope"
    code, err, heavy = run_cli("score", str(missing), str(tmp_path), str(tmp_path / "out"))
    assert (code, heavy) == (2, [])
    assert f"{missing}: no such model folder" in err
    code, err, heavy = run_cli("score", str(tmp_path), str(missing), str(tmp_path / "out"))
    assert (code, heavy) == (2, [])
    assert f"{missing}: no such file or folder" in err
    code, err, heavy = run_cli("serve-dev", "--model-dir", str(missing), "--port", "0")
    assert (code, heavy) == (2, [])
    assert f"model dir {missing} does not exist" in err
    code, err, heavy = run_cli("score")  # argparse's own error
    assert code == 2 and "the following arguments are required" in err
    assert heavy == []
