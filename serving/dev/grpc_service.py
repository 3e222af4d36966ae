"""The gRPC front end: TF Serving's PredictionService (Predict, GetModelMetadata; Classify,
Regress and MultiInference stay UNIMPLEMENTED) and ModelService (GetModelStatus) over one
`ModelStore`. Every failure becomes a gRPC status with TF Serving's code and text, never a
dead server; a request above `Limits.max_request_bytes` is refused by gRPC itself
(RESOURCE_EXHAUSTED).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent import futures
from typing import Any

import grpc
import tensorflow as tf
from tensorflow_serving.apis import (
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from serving import audit
from serving.dev.admission import Admission
from serving.dev.model_store import (
    DEFAULT_SIGNATURE,
    ModelStore,
    StatusError,
    metadata_response,
    spec_choice,
)

log = logging.getLogger(__name__)

_MAX_MESSAGE_BYTES = 2**31 - 1  # TF Serving's server accepts int32-max messages


def _guarded(context: grpc.ServicerContext, handler: Callable[[], Any]) -> Any:
    """Runs a handler; any failure becomes a gRPC status, never a dead server."""
    try:
        return handler()
    except StatusError as error:
        context.abort(error.code, error.message)
    except Exception as error:
        log.exception("internal error while serving a gRPC request")
        context.abort(grpc.StatusCode.INTERNAL, f"{type(error).__name__}: {error}")


class _PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    """Predict and GetModelMetadata; Classify/Regress/MultiInference stay UNIMPLEMENTED."""

    def __init__(
        self, store: ModelStore, admission: Admission, audit_log: audit.AuditLog | None = None
    ) -> None:
        self._store = store
        self._admission = admission
        self._audit = audit_log

    def Predict(self, request: Any, context: grpc.ServicerContext) -> Any:
        if self._audit is None:
            return _guarded(context, lambda: self._predict(request, {}))
        timer, request_id = audit.Timer(), audit.new_request_id()
        context.send_initial_metadata(((audit.HEADER, request_id),))
        seen: dict[str, Any] = {}  # what _predict learnt before it answered or failed
        outcome = "INTERNAL"
        try:
            response = self._predict(request, seen)
            outcome = "OK"
            return response
        except StatusError as error:
            outcome = error.code.name
            context.abort(error.code, error.message)
        except Exception as error:
            log.exception("internal error while serving a gRPC request")
            context.abort(grpc.StatusCode.INTERNAL, f"{type(error).__name__}: {error}")
        finally:
            spec = request.model_spec
            self._audit.write(
                audit.entry(
                    request_id=request_id,
                    protocol="grpc",
                    model=seen.get("model", spec.name),
                    version=seen.get("version"),
                    signature=spec.signature_name or DEFAULT_SIGNATURE,
                    hashes=seen.get("hashes", []),
                    answers=seen.get("answers", ()),
                    latency_ms=timer.ms(),
                    outcome=outcome,
                    time_utc=timer.time_utc,
                )
            )

    def GetModelMetadata(self, request: Any, context: grpc.ServicerContext) -> Any:
        return _guarded(context, lambda: metadata_response(self._store, request))

    def _predict(self, request: Any, seen: dict[str, Any]) -> Any:
        """The answer; `seen` gets what the audit log records (model, version, image hashes,
        decisions) as soon as each is known, so a refusal is logged with what was known."""
        spec = request.model_spec
        if self._audit is not None:  # the images, before any check can refuse the request
            seen["hashes"] = audit.image_hashes(_readable(request.inputs))
        servable = self._store.get(spec.name, *spec_choice(spec))
        seen.update(model=servable.name, version=servable.version)
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
        if self._audit is not None:
            seen["answers"] = audit.decisions(outputs, len(seen.get("hashes", [])))
        response = predict_pb2.PredictResponse()
        response.model_spec.name = servable.name
        response.model_spec.version.value = servable.version
        response.model_spec.signature_name = signature_name
        for alias, array in outputs.items():
            response.outputs[alias].CopyFrom(tf.make_tensor_proto(array))
        return response


def _readable(inputs: Any) -> dict[str, Any]:
    """The inputs that parse as tensors (a malformed one is refused later, by name)."""
    out = {}
    for alias, proto in inputs.items():
        try:
            out[alias] = tf.make_ndarray(proto)
        except Exception:
            pass
    return out


class _ModelService(model_service_pb2_grpc.ModelServiceServicer):
    """GetModelStatus, so readiness probes written for TF Serving work here too."""

    def __init__(self, store: ModelStore) -> None:
        self._store = store

    def GetModelStatus(self, request: Any, context: grpc.ServicerContext) -> Any:
        def handler() -> Any:
            if not request.HasField("model_spec"):
                raise StatusError(grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec")
            version, _ = spec_choice(request.model_spec)
            return self._store.status(request.model_spec.name, version)

        return _guarded(context, handler)


def grpc_server(
    store: ModelStore, admission: Admission, audit_log: audit.AuditLog | None = None
) -> grpc.Server:
    """A gRPC server with both services added, not yet bound to a port nor started."""
    # A few workers beyond the predict limit answer metadata and refusals at once.
    workers = admission.limits.max_in_flight + 4
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dev-server-grpc"),
        options=[
            ("grpc.max_receive_message_length", admission.limits.max_request_bytes),
            ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),  # a port in use must fail, not be silently shared
        ],
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        _PredictionService(store, admission, audit_log), server
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(_ModelService(store), server)
    return server
