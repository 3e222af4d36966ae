"""Quiet start-up for the command line: TensorFlow's, CUDA's and absl's start-up lines dropped
from stderr unless `--verbose`.

Why a filter on file descriptor 2 and not TF_CPP_MIN_LOG_LEVEL alone: TensorFlow 2.21 logs
through absl before absl is initialised ("All log messages before absl::InitializeLog() is
called are written to STDERR", the oneDNN notice, "Could not find cuda drivers", "failed call
to cuInit"), which that variable does not reach, and Beam workers inherit the descriptor. So
fd 2 becomes a pipe read by a thread that passes on every line except the known start-up
noise (`NOISE`); Python's own `sys.stderr` writes straight to the terminal, so the
command's errors never wait on the thread. Only for a real command line: tests and library
callers keep their stderr untouched.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import sys
import threading

# The start-up lines of TensorFlow / XLA / CUDA / Beam on a machine with or without a GPU.
NOISE = re.compile(
    r"All log messages before absl::InitializeLog\(\) is called"
    r"|oneDNN custom operations are on"
    r"|Could not find cuda drivers"
    r"|failed call to cuInit"
    r"|Unable to register cu(DNN|FFT|BLAS) factory"
    r"|computation placer already registered"
    r"|TF-TRT Warning"
    r"|This TensorFlow binary is optimized to use available CPU instructions"
    r"|To enable the following instructions: "
    r"|Resource module is not available for current platform"
)

_started = False


class _DropNoise(logging.Filter):
    """For records logged on the root logger itself (Beam's memory notice is one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not NOISE.search(record.getMessage())


def is_noise(line: str) -> bool:
    return bool(NOISE.search(line))


def quiet_startup() -> None:
    """Routes fd 2 through the filter for the rest of the process (idempotent)."""
    global _started
    if _started:
        return
    _started = True
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.getLogger().addFilter(_DropNoise())
    sys.stderr.flush()
    terminal = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    sys.stderr = open(terminal, "w", buffering=1, closefd=False)

    def pump() -> None:
        with open(read_end, "rb") as lines:
            for line in lines:
                if not is_noise(line.decode("utf-8", errors="replace")):
                    os.write(terminal, line)

    thread = threading.Thread(target=pump, name="stderr-filter", daemon=True)
    thread.start()

    def restore() -> None:
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(terminal, 2)  # the pipe's last write end here: the thread reads to its end
        thread.join(timeout=2.0)

    atexit.register(restore)
