"""Readable console output for local runs: TFX's per-component progress and errors, without
the thousands of INFO/WARNING lines TensorFlow, Beam and TFX print by default."""

from __future__ import annotations

import logging
import re
import time

_PROGRESS = re.compile(r"^Component \S+ is (running|finished)\.$")


class _ProgressOnly(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self.started: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            return True
        message = record.getMessage()
        if not _PROGRESS.match(message):
            return False
        name = message.split()[1]
        if message.endswith("running."):
            self.started[name] = time.time()
            print(f"[pipeline] {name} ...", flush=True)
        else:
            took = time.time() - self.started.get(name, time.time())
            print(f"[pipeline] {name} done ({took:.0f} s)", flush=True)
        return False


def quiet(verbose: bool = False) -> None:
    """Keep component progress and errors; `verbose=True` leaves every library log on."""
    if verbose:
        return
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.INFO)
    logging.getLogger("absl").addFilter(_ProgressOnly())  # TFX logs through absl's logger
    for name in ("tensorflow", "apache_beam", "tfx"):
        logging.getLogger(name).setLevel(logging.ERROR)
