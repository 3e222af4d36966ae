"""Client-side errors: one exception type per failure a caller handles differently.

Why: a batch scorer must tell "the server/model is not there" (stop, exit 2) apart from
"this request was bad" (skip the image, go on). gRPC status codes and REST HTTP codes are
both mapped onto this hierarchy, so callers never look at transport details.
"""

from __future__ import annotations


class ServingError(Exception):
    """Any failure talking to a model server; the message names server, model and signature."""

    def __init__(self, message: str, *, code: str | None = None, details: str = "") -> None:
        super().__init__(message)
        self.code = code  # gRPC status name (e.g. "NOT_FOUND"), also for REST errors
        self.details = details  # the server's own error text


class ServerUnavailableError(ServingError):
    """Server unreachable: connection refused, UNAVAILABLE, or the deadline passed."""


class ModelNotFoundError(ServingError):
    """The server answers but has no such model / version / version label."""


class SignatureNotFoundError(ServingError):
    """The model is loaded but has no signature of the requested name."""


class InvalidRequestError(ServingError):
    """The server rejected the request's content (e.g. bytes that are not an image)."""


#: Failures that concern the whole run rather than one input (CLI exit code 2).
FATAL_ERRORS: tuple[type[ServingError], ...] = (
    ServerUnavailableError,
    ModelNotFoundError,
    SignatureNotFoundError,
)
