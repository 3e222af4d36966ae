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
        ["reproduce", "--help"],
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


def test_plain_messages_carry_no_repr_nor_node_name():
    from serving.errors import plain_message

    pillow = "cannot identify image file <_io.BytesIO object at 0x7f3a2c1b5e90>"
    assert plain_message(pillow) == "cannot identify image file"
    tf_text = (
        "Graph execution error:\n\nDetected at node map/while/Assert/Assert defined at (most "
        "recent call last):\n<stack traces unavailable>\nimage is 1x1 pixels, below the "
        "minimum\n\t [[{{node map/while/Assert/Assert}}]] [Op:__inference_signature_3312]"
    )
    assert plain_message(tf_text) == "image is 1x1 pixels, below the minimum"
    assert plain_message("mask size differs from image size") == (
        "mask size differs from image size"
    )


def _score_in_a_process(*argv: str) -> subprocess.CompletedProcess:
    """`python -m lesionlens.cli score ...`, as from a shell (TF_CPP_MIN_LOG_LEVEL unset)."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["TF_USE_LEGACY_KERAS"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "lesionlens.cli", "score", *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


def test_commands_start_without_tensorflow_noise_unless_verbose(tmp_path):
    """No absl / oneDNN / CUDA / Beam start-up line on stderr; the command's own error still
    there; --verbose lets the start-up lines through again."""
    import numpy as np
    from PIL import Image
    from serving_toy_model import save_toy_model

    from serving.quiet import is_noise

    save_toy_model(tmp_path / "toy", version=1)
    (tmp_path / "src").mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(tmp_path / "src/a.png")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"x")
    model = str(tmp_path / "toy")
    good = _score_in_a_process(model, str(tmp_path / "src"), str(tmp_path / "out"))
    assert good.returncode == 0, good.stderr
    assert good.stderr == ""  # nothing at all went wrong, nothing to say
    assert "scored 1, rejected 0" in good.stdout
    bad = _score_in_a_process(model, str(tmp_path / "bad"), str(tmp_path / "out2"))
    assert bad.returncode == 2
    lines = bad.stderr.splitlines()
    assert not [line for line in lines if is_noise(line)], bad.stderr
    assert lines == [
        f"lesionlens score: error: no image of {tmp_path / 'bad'} could be scored (1 rejected; "
        f"reasons in {tmp_path / 'out2'}/rejected-*.jsonl)"
    ]
    loud = _score_in_a_process(model, str(tmp_path / "src"), str(tmp_path / "out3"), "--verbose")
    assert loud.returncode == 0
    if not any(is_noise(line) for line in loud.stderr.splitlines()):  # what was filtered
        pytest.skip("this TensorFlow build printed no start-up line: --verbose has none to show")
