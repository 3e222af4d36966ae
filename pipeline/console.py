"""One console for local runs: LesionLens's own log lines and TFX's per-component progress,
each as ``[source] message``, without the thousands of INFO/WARNING lines TensorFlow, Beam
and TFX print by default."""

from __future__ import annotations

import logging
import re
import sys
import time

# Loggers of this project; components and jobs log through `logging.getLogger(__name__)`.
PACKAGES = ("lesionlens", "local_runner", "modules", "pipeline", "serving")
_PROGRESS = re.compile(r"^Component \S+ is (running|finished)\.$")
progress = logging.getLogger("lesionlens.pipeline")


class ConsoleFormatter(logging.Formatter):
    """``[trainer] epoch 3/5 ...``: the first name below the package (modules.smote.executor
    -> smote, lesionlens.ingest.job -> ingest), warnings and errors marked as such."""

    def format(self, record: logging.LogRecord) -> str:
        parts = record.name.split(".")
        source = parts[1] if len(parts) > 1 else parts[0]
        level = "" if record.levelno < logging.WARNING else f"{record.levelname}: "
        return f"[{source}] {level}{record.getMessage()}"


class _Stdout(logging.StreamHandler):
    """Writes to whatever sys.stdout is when a record arrives (a caller may swap it)."""

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, value) -> None:
        pass


class _ProgressOnly(logging.Filter):
    """Turns TFX's 'Component X is running/finished.' into one progress line each."""

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
            progress.info("%s ...", name)
        else:
            took = time.time() - self.started.get(name, time.time())
            progress.info("%s done (%.0f s)", name, took)
        return False


def log_to_console() -> None:
    """This project's loggers at INFO on stdout, one ``[source] message`` line each."""
    handler = _Stdout()
    handler.setFormatter(ConsoleFormatter())
    for name in PACKAGES:
        logger = logging.getLogger(name)
        logger.setLevel(logging.INFO)
        logger.handlers[:] = [handler]
        logger.propagate = False


def quiet_libraries() -> None:
    """Of TFX, TensorFlow and Beam: component progress and errors only."""
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.INFO)
    logging.getLogger("absl").addFilter(_ProgressOnly())  # TFX logs through absl's logger
    for name in ("tensorflow", "apache_beam", "tfx"):
        logging.getLogger(name).setLevel(logging.ERROR)
