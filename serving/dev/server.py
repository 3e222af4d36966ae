"""Local development server speaking TF Serving's gRPC and REST protocols.

Why: there is no tensorflow_model_server binary or Docker here, yet clients must be developed
and tested against the real protocol. This server answers TF Serving's PredictionService
(Predict, GetModelMetadata) and ModelService (GetModelStatus) over gRPC, and the REST routes
``POST /v1/models/NAME[/versions/N|/labels/L]:predict`` and ``GET /v1/models/NAME[...][/metadata]``,
from the pushed SavedModel loaded with plain ``tf.saved_model.load``. Status codes and error
texts follow TF Serving's, so client error handling written here holds against production.
A bad request never takes the server down: every failure becomes an error response.

Not mimicked: batching, model polling/reload (restart to pick up a newly pushed version),
Classify/Regress/MultiInference (UNIMPLEMENTED), CORS, request logging.

Usage: ``python -m serving.dev --model-dir out/serving/lesionlens`` or
``lesionlens serve-dev ...``; from Python, ``with serve(dir, "name", port=0, rest_port=0) as s:``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import socket
import threading
from collections.abc import Callable, Mapping
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from serving import rest_json
from serving.dev.limits import Limits
from serving.dev.model_store import (
    DEFAULT_SIGNATURE,
    ModelStore,
    Servable,
    StatusError,
    find_versions,
)

log = logging.getLogger(__name__)

_MAX_MESSAGE_BYTES = 2**31 - 1  # TF Serving's server accepts int32-max messages
_SIGNATURE_DEF_FIELD = "signature_def"

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


def _spec_choice(model_spec: Any) -> tuple[int | None, str | None]:
    """(version, version_label) of a ModelSpec proto; at most one is set (a oneof)."""
    choice = model_spec.WhichOneof("version_choice")
    if choice == "version":
        return model_spec.version.value, None
    if choice == "version_label":
        return None, model_spec.version_label or None
    return None, None


def _numpy_dtype(dtype: tf.DType) -> np.dtype:
    return np.dtype(object) if dtype == tf.string else np.dtype(dtype.as_numpy_dtype)


class _Admission:
    """Counts predict requests in flight; refuses, never queues, past the limit."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._slots = threading.BoundedSemaphore(limits.max_in_flight)

    @contextlib.contextmanager
    def admit(self, arrays: Mapping[str, np.ndarray]):
        for alias, array in arrays.items():
            batch = np.shape(array)[0] if np.ndim(array) else 1
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


def _guarded(context: grpc.ServicerContext, handler: Callable[[], Any]) -> Any:
    """Runs a handler; any failure becomes a gRPC status, never a dead server."""
    try:
        return handler()
    except StatusError as error:
        context.abort(error.code, error.message)
    except Exception as error:
        log.exception("internal error while serving a gRPC request")
        context.abort(grpc.StatusCode.INTERNAL, f"{type(error).__name__}: {error}")


def _metadata_response(store: ModelStore, request: Any) -> Any:
    """GetModelMetadata: TF Serving's validation order and SignatureDefMap packing."""
    if not request.HasField("model_spec"):
        raise StatusError(grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec")
    if not request.metadata_field:
        raise StatusError(
            grpc.StatusCode.INVALID_ARGUMENT,
            "GetModelMetadataRequest must specify at least one metadata_field",
        )
    for field in request.metadata_field:
        if field != _SIGNATURE_DEF_FIELD:
            raise StatusError(
                grpc.StatusCode.INVALID_ARGUMENT, f"Metadata field {field} is not supported"
            )
    servable = store.get(request.model_spec.name, *_spec_choice(request.model_spec))
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    response.model_spec.name = servable.name
    response.model_spec.version.value = servable.version
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    for name, signature in servable.signature_defs.items():
        signature_map.signature_def[name].CopyFrom(signature)
    response.metadata[_SIGNATURE_DEF_FIELD].Pack(signature_map)
    return response


class _PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    """Predict and GetModelMetadata; Classify/Regress/MultiInference stay UNIMPLEMENTED."""

    def __init__(self, store: ModelStore, admission: _Admission) -> None:
        self._store = store
        self._admission = admission

    def Predict(self, request: Any, context: grpc.ServicerContext) -> Any:
        return _guarded(context, lambda: self._predict(request))

    def GetModelMetadata(self, request: Any, context: grpc.ServicerContext) -> Any:
        return _guarded(context, lambda: _metadata_response(self._store, request))

    def _predict(self, request: Any) -> Any:
        spec = request.model_spec
        servable = self._store.get(spec.name, *_spec_choice(spec))
        signature_name = spec.signature_name or DEFAULT_SIGNATURE
        servable.check_input_names(signature_name, request.inputs.keys())
        arrays = {}
        for alias, proto in request.inputs.items():
            try:
                arrays[alias] = tf.make_ndarray(proto)
            except Exception:
                raise StatusError(
                    grpc.StatusCode.INVALID_ARGUMENT, f"tensor parsing error: {alias}"
                ) from None
        with self._admission.admit(arrays):
            outputs = servable.run(signature_name, arrays, list(request.output_filter))
        response = predict_pb2.PredictResponse()
        response.model_spec.name = servable.name
        response.model_spec.version.value = servable.version
        response.model_spec.signature_name = signature_name
        for alias, array in outputs.items():
            response.outputs[alias].CopyFrom(tf.make_tensor_proto(array))
        return response


class _ModelService(model_service_pb2_grpc.ModelServiceServicer):
    """GetModelStatus, so readiness probes written for TF Serving work here too."""

    def __init__(self, store: ModelStore) -> None:
        self._store = store

    def GetModelStatus(self, request: Any, context: grpc.ServicerContext) -> Any:
        def handler() -> Any:
            if not request.HasField("model_spec"):
                raise StatusError(grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec")
            version, _ = _spec_choice(request.model_spec)
            return self._store.status(request.model_spec.name, version)

        return _guarded(context, handler)


class _RestApi:
    """TF Serving's REST routes over a `ModelStore`; returns (HTTP status, JSON document)."""

    def __init__(self, store: ModelStore, admission: _Admission) -> None:
        self._store = store
        self._admission = admission
        self.limits = admission.limits

    def handle(self, method: str, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
        try:
            return 200, self._dispatch(method, path, body)
        except StatusError as error:
            return _HTTP_STATUS.get(error.code, 500), {"error": error.message}
        except rest_json.JsonRequestError as error:
            return 400, {"error": str(error)}
        except Exception as error:
            log.exception("internal error while serving %s %s", method, path)
            return 500, {"error": f"{type(error).__name__}: {error}"}

    def _dispatch(self, method: str, path: str, body: bytes) -> dict[str, Any]:
        if method == "POST" and (match := _PREDICT_PATH.fullmatch(path)):
            name, version, label, verb = match.groups()
            if verb.lower() != "predict":
                raise StatusError(
                    grpc.StatusCode.UNIMPLEMENTED,
                    f"the dev server implements :predict only ({verb})",
                )
            return self._predict(unquote(name), _int(version), _unquote(label), body)
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
                request.metadata_field.append(_SIGNATURE_DEF_FIELD)
                return _metadata_json(_metadata_response(self._store, request))
            response = self._store.status(unquote(name), _int(version))
            return json_format.MessageToDict(
                response,
                preserving_proto_field_name=True,
                always_print_fields_with_no_presence=True,
            )
        raise StatusError(grpc.StatusCode.INVALID_ARGUMENT, f"Malformed request: {method} {path}")

    def _predict(
        self, name: str, version: int | None, label: str | None, body: bytes
    ) -> dict[str, Any]:
        doc = rest_json.parse_body(body)
        signature_name = rest_json.signature_name(doc) or DEFAULT_SIGNATURE
        servable = self._store.get(name, version, label)
        dtypes = self._input_dtypes(servable, signature_name)
        arrays, fmt = rest_json.request_arrays(doc, dtypes)
        with self._admission.admit(arrays):
            outputs = servable.run(signature_name, arrays)
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
    response.metadata[_SIGNATURE_DEF_FIELD].Unpack(signature_map)

    def to_dict(message: Any) -> dict[str, Any]:
        return json_format.MessageToDict(
            message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )

    return {
        "model_spec": to_dict(response.model_spec),
        "metadata": {_SIGNATURE_DEF_FIELD: to_dict(signature_map)},
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
        if length < 0:
            self.close_connection = True
            self._reply(400, json.dumps({"error": "invalid Content-Length"}).encode("utf-8"))
            return
        if length > self.api.limits.max_request_bytes:
            self._discard(length)
            message = f"request of {length} bytes exceeds the limit of "
            message += f"{self.api.limits.max_request_bytes} (--max-request-mb)"
            self._reply(413, json.dumps({"error": message}).encode("utf-8"))
            return
        if length == 0 and method == "POST":
            self.close_connection = True  # e.g. a chunked body we do not read: drop the rest
        body = self.rfile.read(length) if length else b""
        path = urlsplit(self.path).path
        if not _API_PATH.fullmatch(path):
            self._reply(404, b"")  # TF Serving does not route paths outside /v1/
            return
        status, doc = self.api.handle(method, path, body)
        self._reply(status, json.dumps(doc).encode("utf-8"))

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

    def _reply(self, status: int, payload: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s - %s", self.address_string(), format % args)


class _HTTPServer6(ThreadingHTTPServer):
    address_family = socket.AF_INET6


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class DevServer:
    """A running dev server (gRPC, optionally REST). Use as a context manager or call `stop()`."""

    def __init__(
        self,
        store: ModelStore,
        grpc_server: grpc.Server,
        grpc_port: int,
        http_server: ThreadingHTTPServer | None,
        host: str,
        admission: _Admission,
    ) -> None:
        self.store = store
        self.admission = admission  # requests in flight and the limits
        self.host = host
        self.grpc_port = grpc_port
        self.rest_port = http_server.server_address[1] if http_server else None
        self._grpc_server = grpc_server
        self._http_server = http_server
        self._http_thread: threading.Thread | None = None
        self._stopped = threading.Event()
        if http_server is not None:
            self._http_thread = threading.Thread(
                target=http_server.serve_forever, name="dev-server-rest", daemon=True
            )
            self._http_thread.start()

    def start_polling(
        self, seconds: float, on_new_version: Callable[[Servable], None] | None = None
    ) -> None:
        """Loads newly pushed versions in a background thread until `stop()`."""

        def poll() -> None:
            failed: set[int] = set()  # versions that did not load: not retried
            while not self._stopped.wait(seconds):
                newest = -1
                try:
                    newest = max(find_versions(self.store.model_dir)[1])
                    if newest in failed:
                        continue
                    servable = self.store.load_newer()
                except Exception as error:
                    failed.add(newest)
                    log.error(
                        "version %d not loaded, still serving %d: %s", newest, self.version, error
                    )
                    continue
                if servable is not None and on_new_version is not None:
                    on_new_version(servable)

        threading.Thread(target=poll, name="dev-server-poll", daemon=True).start()

    @property
    def model_name(self) -> str:
        return self.store.name

    @property
    def version(self) -> int:
        return self.store.latest.version

    @property
    def grpc_target(self) -> str:
        """``host:port`` for `grpc.insecure_channel` / `GrpcClient`."""
        return _address(self.host, self.grpc_port)

    @property
    def rest_url(self) -> str | None:
        """``http://host:port`` for `RestClient`, or None when REST is off."""
        return None if self.rest_port is None else f"http://{_address(self.host, self.rest_port)}"

    def stop(self, grace: float | None = 1.0) -> None:
        """Stops both front ends; in-flight requests get `grace` seconds. Idempotent."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        if self._http_server is not None:
            self._http_server.shutdown()
            self._http_server.server_close()
        done = self._grpc_server.stop(grace).wait(timeout=(grace or 0.0) + 10.0)
        if not done:
            log.warning("gRPC server did not stop within %.0f s", (grace or 0.0) + 10.0)

    def wait(self, timeout: float | None = None) -> bool:
        """Blocks until `stop()` was called (or `timeout` passed); True once stopped."""
        return self._stopped.wait(timeout)

    def __enter__(self) -> DevServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def serve(
    model_dir: str | Path,
    model_name: str | None = None,
    port: int = 8500,
    rest_port: int | None = 8501,
    host: str = "127.0.0.1",
    *,
    version_labels: Mapping[str, int] | None = None,
    limits: Limits | None = None,
    poll_seconds: float = 1.0,
    on_new_version: Callable[[Servable], None] | None = None,
) -> DevServer:
    """Loads the newest version under `model_dir` and serves it; returns once listening.

    `model_dir` is ``<root>/<name>`` (holding integer version dirs) or one version dir.
    `model_name` defaults to that base dir's name. Port 0 picks a free port (read the actual
    ones from the handle); `rest_port=None` turns REST off. `version_labels` maps TF Serving
    version labels (e.g. ``{"stable": 3}``) to loaded versions. `limits` bounds concurrent
    predict requests and batch sizes (defaults: `Limits()`). Every `poll_seconds` (> 0) the
    model dir is checked for a newer version, which is loaded (and warmed up) beside the
    serving one and then swapped in; `on_new_version` is called with it. A version that fails
    to load is logged and skipped, and the current one keeps serving (TF Serving's rule).
    """
    store = ModelStore.from_dir(model_dir, model_name, version_labels)
    admission = _Admission(limits or Limits())
    # A few workers beyond the predict limit answer metadata and refusals at once.
    workers = admission.limits.max_in_flight + 4
    grpc_server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dev-server-grpc"),
        options=[
            ("grpc.max_receive_message_length", admission.limits.max_request_bytes),
            ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),  # a port in use must fail, not be silently shared
        ],
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        _PredictionService(store, admission), grpc_server
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(_ModelService(store), grpc_server)
    try:
        bound = grpc_server.add_insecure_port(_address(host, port))
    except RuntimeError as error:
        raise OSError(f"cannot listen for gRPC on {_address(host, port)}: {error}") from None
    if not bound:
        raise OSError(f"cannot listen for gRPC on {_address(host, port)}")
    http_server = None
    if rest_port is not None:
        handler = type("_BoundRestHandler", (_RestHandler,), {"api": _RestApi(store, admission)})
        server_class = _HTTPServer6 if ":" in host else ThreadingHTTPServer
        try:
            http_server = server_class((host, rest_port), handler)
        except OSError as error:
            grpc_server.stop(None)
            raise OSError(
                f"cannot listen for REST on {_address(host, rest_port)}: {error}"
            ) from None
        http_server.daemon_threads = True
    grpc_server.start()
    server = DevServer(store, grpc_server, bound, http_server, host, admission)
    if poll_seconds > 0:
        server.start_polling(poll_seconds, on_new_version)
    log.info(
        "serving %s v%d: gRPC %s, REST %s",
        store.name,
        server.version,
        server.grpc_target,
        server.rest_url,
    )
    return server
