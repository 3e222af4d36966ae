"""The dev server's resource limits (no TensorFlow here: the CLI reads the defaults)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """What one server accepts at once. Beyond `max_in_flight` predict requests it answers
    RESOURCE_EXHAUSTED (REST 429) at once instead of queueing; a batch above `max_batch`
    is INVALID_ARGUMENT. Each image is further bounded by the model's pixel budget."""

    max_in_flight: int = 4
    max_batch: int = 32
    max_request_bytes: int = 64 * 2**20  # a batch of 32 BUSI PNGs is ~5 MB

    def __post_init__(self) -> None:
        if min(self.max_in_flight, self.max_batch, self.max_request_bytes) < 1:
            raise ValueError(f"limits must be >= 1: {self}")
