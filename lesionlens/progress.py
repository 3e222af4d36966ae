"""Progress of a Beam job as plain lines: images done / total, rate and ETA.

Why through files: Beam's workers may be other processes or machines (multi_processing,
Dask, Dataflow), so a count kept in a worker's memory says nothing about the job. Each worker
marks a finished unit with an empty file ``<folder>/<unit key>.<count>`` (the same name when a
unit is retried, so nothing is counted twice), and the launcher lists that folder every few
seconds and logs one line. Works on every filesystem Beam knows (local, gs://).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

from apache_beam.io.filesystems import FileSystems

log = logging.getLogger(__name__)

EVERY_S = 5.0  # the launcher's listing period and the least time between two lines


def mark(folder: str, key: str, count: int) -> None:
    """Worker side: `count` images of unit `key` are done (idempotent per key)."""
    if count <= 0:
        return
    try:
        with FileSystems.create(FileSystems.join(folder, f"{key}.{count}")):
            pass
    except Exception as e:  # progress must never fail the job
        log.debug("progress mark %s not written: %s", key, e)


def count_marks(folder: str) -> int:
    """Images done: the sum of the counts of every unit marked in `folder`."""
    try:
        found = FileSystems.match([FileSystems.join(folder, "*")])[0].metadata_list
    except Exception:  # no folder yet
        return 0
    done = 0
    for m in found:
        suffix = os.path.basename(m.path).rsplit(".", 1)[-1]
        done += int(suffix) if suffix.isdigit() else 0
    return done


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def progress_line(done: int, total: int | None, elapsed_s: float, what: str = "images") -> str:
    """``48/780 images (6 %), 5.2 images/s, ETA 2 min 21 s``; with no total known (TFRecords
    are counted as they are read), no percentage nor ETA."""
    rate = done / elapsed_s if elapsed_s > 0 else 0.0
    if total is None:
        return f"{done} {what} done, {rate:.1f} {what}/s, {_duration(elapsed_s)} elapsed"
    done = min(done, total)
    share = f"{100 * done / total:.0f} %" if total else "100 %"
    if done >= total:
        eta = "done"
    elif rate > 0:
        eta = f"ETA {_duration((total - done) / rate)}"
    else:
        eta = "ETA unknown (nothing done yet)"
    return f"{done}/{total} {what} ({share}), {rate:.1f} {what}/s, {eta}"


class Reporter:
    """Launcher side: a thread that logs `progress_line` whenever the count changed (at most
    every `every_s`), from `start()` (the clock's zero) to `stop()`."""

    def __init__(
        self,
        folder: str,
        total: int | None,
        what: str = "images",
        every_s: float = EVERY_S,
        emit: Callable[[str], None] | None = None,
    ) -> None:
        self.folder, self.total, self.what, self.every_s = folder, total, what, every_s
        self.emit = emit or log.info
        self.lines: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = 0.0

    def start(self) -> Reporter:
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="progress", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        last = -1
        while not self._stop.wait(self.every_s):
            done = count_marks(self.folder)
            if done != last:
                self._say(done)
                last = done

    def _say(self, done: int) -> None:
        line = progress_line(done, self.total, time.monotonic() - self._t0, self.what)
        self.lines.append(line)
        self.emit(line)

    def stop(self) -> None:
        """Ends the thread and logs the final count once."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.every_s + 5)
        self._say(count_marks(self.folder))

    def __enter__(self) -> Reporter:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def clear(folder: str) -> None:
    """Removes a progress folder (before a run, so old marks do not count, and after it)."""
    found = FileSystems.match([FileSystems.join(folder, "*")])[0].metadata_list
    paths = [m.path for m in found]
    if paths:
        FileSystems.delete(paths)
    if "://" not in folder and os.path.isdir(folder):
        try:
            os.rmdir(folder)
        except OSError:
            pass
