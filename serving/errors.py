"""Client-side errors: one exception type per failure a caller handles differently.

Why: a batch scorer must tell "the server/model is not there" (stop, exit 2) apart from
"this request was bad" (skip the image, go on). gRPC status codes and REST HTTP codes are
both mapped onto this hierarchy, so callers never look at transport details.
"""

from __future__ import annotations

import re


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


_REPR = re.compile(r"\s*<[\w.]+ object at 0x[0-9a-fA-F]+>")
_NODE = re.compile(r"\s*\[\[\{\{node [^}]*\}\}\]\]")
_OP = re.compile(r"\s*\[Op:[^\]]*\]")
_GRAPH = re.compile(r"^(Graph execution error:|\(0\) [A-Z_]+:)\s*")
_DETECTED = re.compile(r"Detected at node [^\n]*(\n[ \t<][^\n]*)*\n?")


def plain_message(text: str) -> str:
    """An error's text as people read it: no Python object reprs (`<_io.BytesIO object at
    0x7f...>`), no TensorFlow node names (`[[{{node map/while/Assert/Assert}}]]`, `[Op:...]`),
    no "Graph execution error" or traceback of where a node was defined; one line."""
    text = _DETECTED.sub("", _GRAPH.sub("", text.strip()))
    text = _OP.sub("", _NODE.sub("", _REPR.sub("", text)))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " ".join(lines).strip().rstrip(":").strip() or "unknown error"
