"""The audit log: one JSON line per predict request, so an imaging group can say which model
version answered which image, when, and what it said.

Why these fields and no others: an image is named by the SHA-256 of its encoded bytes (the
same file hashes the same anywhere, so it can be matched to an archive) and never by a path,
a name or pixels; a tf.Example's `image_id` and any other feature are never read. Each line:

  time        UTC, ISO 8601 with milliseconds (when the request arrived)
  request_id  random, also returned to the client (REST header / gRPC metadata x-request-id)
  protocol    grpc | rest
  model, version, signature   what answered (version null when no version was found)
  images      per image: sha256 (null when it could not be read from the request),
              class_id and positive_probability (P(malignant)) when the model answered
  latency_ms  from arrival to the answer or the refusal
  outcome     OK, or the gRPC status code name of the refusal (INVALID_ARGUMENT, ...)
  http_status REST only

`lesionlens score` writes the same fields per image to OUT/audit.jsonl, with protocol
`score`, the batch's model call as latency, and outcome OK or REJECTED (an input refused
before or by the model; `rejected-*.jsonl` says why). Used by the dev server and by `score`,
hence here and not under serving/dev/.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import logging.handlers
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from modules import contract as C

HEADER = "x-request-id"  # the request id's name in REST headers and gRPC metadata
DEFAULT_MAX_MB = 64
DEFAULT_BACKUPS = 10


def utc_now() -> str:
    """``2026-12-07T23:09:12.345Z``."""
    now = dt.datetime.now(dt.UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def new_request_id() -> str:
    return uuid.uuid4().hex


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _example_image(serialized: bytes) -> bytes | None:
    """The `image` feature of a serialized raw tf.Example; no other feature is read."""
    from tensorflow.core.example import example_pb2

    try:
        feature = example_pb2.Example.FromString(serialized).features.feature
    except Exception:
        return None
    values = feature[C.IMAGE].bytes_list.value if C.IMAGE in feature else []
    return values[0] if values else None


def image_hashes(arrays: Mapping[str, Any]) -> list[str | None]:
    """SHA-256 of each image of a request's inputs (`image_bytes`, or the `image` feature
    inside each of `examples`); None for one that cannot be read."""
    if C.IMAGE_BYTES in arrays:
        values, unwrap = np.ravel(np.asarray(arrays[C.IMAGE_BYTES], dtype=object)), None
    elif C.EXAMPLES in arrays:
        values, unwrap = np.ravel(np.asarray(arrays[C.EXAMPLES], dtype=object)), _example_image
    else:
        return []
    out: list[str | None] = []
    for value in values:
        data = value if isinstance(value, bytes) else None
        if data is not None and unwrap is not None:
            data = unwrap(data)
        out.append(None if data is None else sha256(data))
    return out


def decisions(outputs: Mapping[str, Any], count: int) -> list[dict[str, Any]]:
    """Per image: class_id and positive_probability, where the outputs hold them."""
    ids = outputs.get(C.CLASS_ID)
    ps = outputs.get(C.POSITIVE_PROBABILITY)
    if ps is None and outputs.get(C.PROBABILITIES) is not None:
        probabilities = np.asarray(outputs[C.PROBABILITIES])
        if probabilities.ndim == 2 and probabilities.shape[1] > C.POSITIVE_LABEL:
            ps = probabilities[:, C.POSITIVE_LABEL]
    rows = []
    for i in range(count):
        row: dict[str, Any] = {}
        if ids is not None and i < len(ids):
            row["class_id"] = int(ids[i])
        if ps is not None and i < len(ps):
            row["positive_probability"] = round(float(ps[i]), 6)
        rows.append(row)
    return rows


def entry(
    *,
    request_id: str,
    protocol: str,
    model: str | None,
    version: int | str | None,
    signature: str | None,
    hashes: Sequence[str | None],
    answers: Sequence[Mapping[str, Any]] = (),
    latency_ms: float,
    outcome: str,
    time_utc: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """One audit line's fields, in a fixed order."""
    images = []
    for i, digest in enumerate(hashes):
        image = {"sha256": digest}
        if i < len(answers):
            image.update(answers[i])
        images.append(image)
    return {
        "time": time_utc or utc_now(),
        "request_id": request_id,
        "protocol": protocol,
        "model": model,
        "version": None if version is None else int(version),
        "signature": signature,
        "images": images,
        "latency_ms": round(latency_ms, 1),
        "outcome": outcome,
        **extra,
    }


class AuditLog:
    """Appends JSON lines to `path`, rotated by size (`path.1` ... `path.<backups>`); safe
    to call from the server's threads (logging's handler holds a lock per record)."""

    def __init__(
        self, path: str | Path, max_mb: float = DEFAULT_MAX_MB, backups: int = DEFAULT_BACKUPS
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handler = logging.handlers.RotatingFileHandler(
            self.path, maxBytes=int(max_mb * 2**20), backupCount=backups, encoding="utf-8"
        )
        self._handler.setFormatter(logging.Formatter("%(message)s"))
        # A logger of its own, not propagated: audit lines never reach the console.
        self._logger = logging.getLogger(f"lesionlens.audit.{id(self)}")
        self._logger.propagate = False
        self._logger.setLevel(logging.INFO)
        self._logger.addHandler(self._handler)

    def write(self, fields: Mapping[str, Any]) -> None:
        self._logger.info(json.dumps(fields, sort_keys=False, separators=(",", ":")))

    def close(self) -> None:
        self._logger.removeHandler(self._handler)
        self._handler.close()


class Timer:
    """Arrival time (UTC text) and elapsed milliseconds of one request."""

    def __init__(self) -> None:
        self.time_utc = utc_now()
        self._t0 = time.perf_counter()

    def ms(self) -> float:
        return 1000 * (time.perf_counter() - self._t0)
