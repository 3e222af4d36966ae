"""Admission of predict requests, shared by the gRPC and REST front ends: an empty batch and a
batch above `Limits.max_batch` are INVALID_ARGUMENT, and past `Limits.max_in_flight` requests
at once a request is refused at once with RESOURCE_EXHAUSTED (REST 429), never queued."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Mapping

import grpc
import numpy as np

from serving.dev.limits import Limits
from serving.dev.model_store import StatusError


class Admission:
    """Counts predict requests in flight; refuses, never queues, past the limit."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._slots = threading.BoundedSemaphore(limits.max_in_flight)

    @contextlib.contextmanager
    def admit(self, arrays: Mapping[str, np.ndarray]) -> Iterator[None]:
        """Holds one in-flight slot while the block runs; StatusError when the batch is empty
        or too large, or every slot is taken.

        An empty batch is refused here, before the model runs: what a model does with zero
        examples depends on the CPU's kernels (some answer with empty outputs, some fail), and
        the answer must not; the client library and the REST row format refuse it too."""
        for alias, array in sorted(arrays.items()):  # a proto map has no order
            batch = np.shape(array)[0] if np.ndim(array) else 1
            if batch == 0:
                raise StatusError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"input {alias}: an empty batch (0 examples); send at least one",
                )
            if batch > self.limits.max_batch:
                raise StatusError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"input {alias}: batch of {batch} exceeds this server's maximum batch size "
                    f"of {self.limits.max_batch} (--max-batch-size); split the request",
                )
        if not self._slots.acquire(blocking=False):
            raise StatusError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"the server is at its limit of {self.limits.max_in_flight} requests in flight "
                "(--max-in-flight); retry later",
            )
        try:
            yield
        finally:
            self._slots.release()
