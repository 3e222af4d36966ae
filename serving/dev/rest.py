"""The REST front end: TF Serving's routes ``POST /v1/models/NAME[/versions/N|/labels/L]:predict``
and ``GET /v1/models/NAME[/versions/N|/labels/L][/metadata]`` over one `ModelStore`, answered
with TF Serving's JSON and its HTTP status for each gRPC code (``:classify`` / ``:regress``:
501). A body above `Limits.max_request_bytes` gets 413 and a path outside ``/v1/`` 404; any
other failure becomes a JSON error, never a dead server.
"""

from __future__ import annotations

import json
import logging
import re
import socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from tensorflow_serving.apis import get_model_metadata_pb2

from serving import audit, rest_json
from serving.dev.admission import Admission
from serving.dev.model_store import (
    DEFAULT_SIGNATURE,
    SIGNATURE_DEF_FIELD,
    ModelStore,
    Servable,
    StatusError,
    metadata_response,
)

log = logging.getLogger(__name__)

# http_server.cc ToHTTPStatusCode
_HTTP_STATUS = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}

# http_rest_api_util.cc
_PREDICT_PATH = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)",
    re.IGNORECASE,
)
_STATUS_PATH = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?",
    re.IGNORECASE,
)
_API_PATH = re.compile(r"/v1/.*", re.IGNORECASE)


def _numpy_dtype(dtype: tf.DType) -> np.dtype:
    return np.dtype(object) if dtype == tf.string else np.dtype(dtype.as_numpy_dtype)


class _RestApi:
    """TF Serving's REST routes over a `ModelStore`; returns (HTTP status, JSON document)."""

    def __init__(
        self, store: ModelStore, admission: Admission, audit_log: audit.AuditLog | None = None
    ) -> None:
        self._store = store
        self._admission = admission
        self.limits = admission.limits
        self.audit = audit_log

    def handle(
        self, method: str, path: str, body: bytes, seen: dict[str, Any] | None = None
    ) -> tuple[int, dict[str, Any]]:
        """(HTTP status, JSON document); `seen` gets what the audit log records, and
        `seen["outcome"]` the gRPC code name of the answer."""
        seen = {} if seen is None else seen
        seen["outcome"] = "INTERNAL"
        try:
            doc = self._dispatch(method, path, body, seen)
            seen["outcome"] = "OK"
            return 200, doc
        except StatusError as error:
            seen["outcome"] = error.code.name
            return _HTTP_STATUS.get(error.code, 500), {"error": error.message}
        except rest_json.JsonRequestError as error:
            seen["outcome"] = grpc.StatusCode.INVALID_ARGUMENT.name
            return 400, {"error": str(error)}
        except Exception as error:
            log.exception("internal error while serving %s %s", method, path)
            return 500, {"error": f"{type(error).__name__}: {error}"}

    def _dispatch(self, method: str, path: str, body: bytes, seen: dict[str, Any]) -> dict:
        if method == "POST" and (match := _PREDICT_PATH.fullmatch(path)):
            name, version, label, verb = match.groups()
            seen["model"] = unquote(name)
            if verb.lower() != "predict":
                raise StatusError(
                    grpc.StatusCode.UNIMPLEMENTED,
                    f"the dev server implements :predict only ({verb})",
                )
            return self._predict(unquote(name), _int(version), _unquote(label), body, seen)
        if method == "GET" and (match := _STATUS_PATH.fullmatch(path)):
            name, version, label, subresource = match.groups()
            if not name:
                raise StatusError(
                    grpc.StatusCode.INVALID_ARGUMENT, "Missing model name in request."
                )
            if subresource:
                request = get_model_metadata_pb2.GetModelMetadataRequest()
                request.model_spec.name = unquote(name)
                if version is not None:
                    request.model_spec.version.value = int(version)
                elif label:
                    request.model_spec.version_label = unquote(label)
                request.metadata_field.append(SIGNATURE_DEF_FIELD)
                return _metadata_json(metadata_response(self._store, request))
            response = self._store.status(unquote(name), _int(version))
            return json_format.MessageToDict(
                response,
                preserving_proto_field_name=True,
                always_print_fields_with_no_presence=True,
            )
        raise StatusError(grpc.StatusCode.INVALID_ARGUMENT, f"Malformed request: {method} {path}")

    def _predict(
        self, name: str, version: int | None, label: str | None, body: bytes, seen: dict
    ) -> dict[str, Any]:
        doc = rest_json.parse_body(body)
        signature_name = rest_json.signature_name(doc) or DEFAULT_SIGNATURE
        seen["signature"] = signature_name
        servable = self._store.get(name, version, label)
        seen.update(model=servable.name, version=servable.version)
        dtypes = self._input_dtypes(servable, signature_name)
        arrays, fmt = rest_json.request_arrays(doc, dtypes)
        if self.audit is not None:
            seen["hashes"] = audit.image_hashes(arrays)
        with self._admission.admit(arrays):
            outputs = servable.run(signature_name, arrays)
        if self.audit is not None:
            seen["answers"] = audit.decisions(outputs, len(seen.get("hashes", [])))
        return rest_json.response_json(outputs, fmt)

    @staticmethod
    def _input_dtypes(servable: Servable, signature_name: str) -> dict[str, np.dtype]:
        try:
            specs = servable.input_specs(signature_name)
        except StatusError:
            # The REST handler looks the signature up itself, with its own wording and code.
            raise StatusError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f'Serving signature name: "{signature_name}" not found in signature def',
            ) from None
        return {alias: _numpy_dtype(spec.dtype) for alias, spec in specs.items()}


def _int(text: str | None) -> int | None:
    return None if text is None else int(text)


def _unquote(text: str | None) -> str | None:
    return None if text is None else unquote(text)


def _metadata_json(response: Any) -> dict[str, Any]:
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    response.metadata[SIGNATURE_DEF_FIELD].Unpack(signature_map)

    def to_dict(message: Any) -> dict[str, Any]:
        return json_format.MessageToDict(
            message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )

    return {
        "model_spec": to_dict(response.model_spec),
        "metadata": {SIGNATURE_DEF_FIELD: to_dict(signature_map)},
    }


class _RestHandler(BaseHTTPRequestHandler):
    """HTTP plumbing only; all semantics live in `_RestApi`."""

    protocol_version = "HTTP/1.1"
    server_version = "LesionLensDevServer/1"
    api: _RestApi  # set on a per-server subclass

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def _serve(self, method: str) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        path = urlsplit(self.path).path
        audited = self.api.audit is not None and method == "POST" and _PREDICT_PATH.fullmatch(path)
        if not audited:
            self._answer(method, path, length, {})
            return
        timer, request_id = audit.Timer(), audit.new_request_id()
        seen: dict[str, Any] = {"outcome": "INTERNAL"}
        try:
            self._answer(method, path, length, seen, request_id)
        finally:
            self.api.audit.write(
                audit.entry(
                    request_id=request_id,
                    protocol="rest",
                    model=seen.get("model"),
                    version=seen.get("version"),
                    signature=seen.get("signature"),
                    hashes=seen.get("hashes", []),
                    answers=seen.get("answers", ()),
                    latency_ms=timer.ms(),
                    outcome=seen["outcome"],
                    time_utc=timer.time_utc,
                    http_status=seen.get("http_status"),
                )
            )

    def _answer(
        self, method: str, path: str, length: int, seen: dict, request_id: str | None = None
    ) -> None:
        """Reads the body, answers, and notes the HTTP status in `seen`."""
        extra = {audit.HEADER: request_id} if request_id else {}
        if length < 0:
            self.close_connection = True
            seen.update(outcome="INVALID_ARGUMENT", http_status=400)
            self._reply(400, json.dumps({"error": "invalid Content-Length"}).encode(), extra)
            return
        if length > self.api.limits.max_request_bytes:
            self._discard(length)
            message = f"request of {length} bytes exceeds the limit of "
            message += f"{self.api.limits.max_request_bytes} (--max-request-mb)"
            seen.update(outcome="RESOURCE_EXHAUSTED", http_status=413)
            self._reply(413, json.dumps({"error": message}).encode("utf-8"), extra)
            return
        if length == 0 and method == "POST":
            self.close_connection = True  # e.g. a chunked body we do not read: drop the rest
        body = self.rfile.read(length) if length else b""
        if not _API_PATH.fullmatch(path):
            self._reply(404, b"")  # TF Serving does not route paths outside /v1/
            return
        status, doc = self.api.handle(method, path, body, seen)
        seen["http_status"] = status
        self._reply(status, json.dumps(doc).encode("utf-8"), extra)

    def _discard(self, length: int) -> None:
        """Reads an oversized body away in small chunks (memory stays bounded), so the client
        can finish sending and read the answer; past 16 x the limit the connection is just
        closed (the client then sees a broken pipe)."""
        self.close_connection = True
        if length > 16 * self.api.limits.max_request_bytes:
            return
        while length > 0:
            chunk = self.rfile.read(min(length, 2**16))
            if not chunk:
                break
            length -= len(chunk)

    def _reply(self, status: int, payload: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s - %s", self.address_string(), format % args)


class _HTTPServer6(ThreadingHTTPServer):
    address_family = socket.AF_INET6


def http_server(
    store: ModelStore,
    admission: Admission,
    host: str,
    port: int,
    audit_log: audit.AuditLog | None = None,
) -> ThreadingHTTPServer:
    """The REST front end listening on (`host`, `port`), not yet serving (run its
    `serve_forever`); OSError when it cannot listen."""
    api = _RestApi(store, admission, audit_log)
    handler = type("_BoundRestHandler", (_RestHandler,), {"api": api})
    server_class = _HTTPServer6 if ":" in host else ThreadingHTTPServer
    server = server_class((host, port), handler)
    server.daemon_threads = True
    return server
