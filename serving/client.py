"""Clients for the LesionLens model on TF Serving (or the dev server): gRPC and REST.

Why two: gRPC is the fast path (binary tensors, no base64), REST is what works through
proxies and from a shell. Both expose the same ``predict_images()`` and raise the same
`serving.errors` types, so callers switch transports with a flag. Every error message names
the server, model (and version) and signature, because "NOT_FOUND" alone does not say which
of the three was wrong.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any, Literal
from urllib.parse import quote

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from modules import contract as C
from modules.raw_examples import build_raw_example
from serving import rest_json
from serving.errors import (
    InvalidRequestError,
    ModelNotFoundError,
    ServerUnavailableError,
    ServingError,
    SignatureNotFoundError,
)

InputFormat = Literal["auto", "images", "examples"]
# Outputs whose dtype REST's JSON numbers do not tell (floats default to float32, ints to
# int64): decoded as the signatures declare them, so REST and gRPC return the same dtypes.
REST_OUTPUT_DTYPES: dict[str, np.dtype] = {C.ROI_MASK: np.dtype(np.uint8)}
_REST_CODES = {
    400: "INVALID_ARGUMENT",
    404: "NOT_FOUND",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def _classify_error(code: str, details: str) -> tuple[type[ServingError], str]:
    """(exception type, short reason) for a server status; shared by both transports."""
    lowered = details.lower()
    if code in ("UNAVAILABLE", "DEADLINE_EXCEEDED"):
        return ServerUnavailableError, "cannot reach the model server"
    if code == "NOT_FOUND" and ("servable not found" in lowered or "could not find" in lowered):
        return ModelNotFoundError, "model not found"
    if lowered.startswith("unrecognized servable version label"):
        return ModelNotFoundError, "unknown model version label"
    if "signature" in lowered and "not found" in lowered:
        return SignatureNotFoundError, "signature not found"
    if code == "INVALID_ARGUMENT":
        return InvalidRequestError, "request rejected"
    return ServingError, "request failed"


class _BaseClient:
    """What both transports share: addressing, error wording and `predict_images`."""

    transport = ""

    def __init__(
        self,
        address: str,
        model: str,
        version: int | None = None,
        version_label: str | None = None,
        signature: str = C.SERVING_DEFAULT,
        timeout_s: float = 30.0,
        *,
        input_format: InputFormat = "auto",
        example_features: Mapping[str, str | bytes] | None = None,
    ) -> None:
        if version is not None and version_label:
            raise ValueError("give a model version or a version label, not both")
        self.address = address
        self.model = model
        self.version = version
        self.version_label = version_label
        self.signature = signature
        self.timeout_s = timeout_s
        self.input_format = input_format
        self.example_features = dict(example_features or {})

    def describe(self, signature: str | None = None) -> str:
        """``gRPC 127.0.0.1:8500, model 'm' version 3, signature 's'`` for messages."""
        model = f"model '{self.model}'"
        if self.version is not None:
            model += f" version {self.version}"
        elif self.version_label:
            model += f" label '{self.version_label}'"
        return (
            f"{self.transport} {self.address}, {model}, signature '{signature or self.signature}'"
        )

    def _error(self, code: str, details: str, signature: str) -> ServingError:
        kind, reason = _classify_error(code, details)
        return kind(
            f"{reason} ({self.describe(signature)}): {code}: {details}", code=code, details=details
        )

    def predict(
        self, inputs: Mapping[str, Any], *, signature: str | None = None
    ) -> dict[str, np.ndarray]:
        """Runs a signature on named input arrays; returns its outputs as numpy arrays."""
        raise NotImplementedError

    def uses_images_input(self, signature: str | None = None) -> bool:
        """True when requests carry image_bytes/mask_bytes, False for serialized Examples."""
        if self.input_format != "auto":
            return self.input_format == "images"
        return (signature or self.signature) == C.PREDICT_IMAGES

    def predict_images(
        self,
        image_bytes_list: Sequence[bytes],
        mask_bytes_list: Sequence[bytes | None] | None = None,
        *,
        image_ids: Sequence[str] | None = None,
        signature: str | None = None,
    ) -> dict[str, np.ndarray]:
        """Encoded images (+ optional masks, b"" or None = no mask) -> outputs, batch-first.

        With the `predict_images` signature the bytes go as-is; with any other signature they
        are wrapped in raw tf.train.Examples. An empty list raises ValueError (no request is
        sent: TF Serving has no defined answer for an empty batch).
        """
        images = [bytes(b) for b in image_bytes_list]
        if not images:
            raise ValueError("predict_images() needs at least one image")
        masks = [bytes(m or b"") for m in (mask_bytes_list or [b""] * len(images))]
        if len(masks) != len(images):
            raise ValueError(f"{len(images)} images but {len(masks)} masks")
        ids = list(image_ids) if image_ids is not None else [""] * len(images)
        if self.uses_images_input(signature):
            inputs = {
                C.IMAGE_BYTES: np.array(images, dtype=object),
                C.MASK_BYTES: np.array(masks, dtype=object),
            }
        else:
            features = {k: v for k, v in self.example_features.items() if k != C.IMAGE_ID}
            examples = [
                build_raw_example(image, mask, image_id=image_id, **features)
                for image, mask, image_id in zip(images, masks, ids, strict=True)
            ]
            inputs = {C.EXAMPLES: np.array(examples, dtype=object)}
        return self.predict(inputs, signature=signature)

    def close(self) -> None:
        """Releases the connection (no-op for REST)."""

    def __enter__(self) -> _BaseClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class GrpcClient(_BaseClient):
    """TF Serving's PredictionService over gRPC (`target` = ``host:port``)."""

    transport = "gRPC"

    def __init__(
        self,
        target: str,
        model: str,
        version: int | None = None,
        version_label: str | None = None,
        signature: str = C.SERVING_DEFAULT,
        timeout_s: float = 30.0,
        **options: Any,
    ) -> None:
        super().__init__(target, model, version, version_label, signature, timeout_s, **options)
        # A batch of full-size images passes gRPC's 4 MB default; TF Serving accepts 2 GB.
        self._channel = grpc.insecure_channel(
            target,
            options=[("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)],
        )
        self._stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self.last_model_spec: Any = None  # ModelSpec of the last response (version served)

    def predict(
        self,
        inputs: Mapping[str, Any],
        *,
        signature: str | None = None,
        output_filter: Sequence[str] = (),
    ) -> dict[str, np.ndarray]:
        signature = signature or self.signature
        request = predict_pb2.PredictRequest()
        request.model_spec.name = self.model
        if self.version is not None:
            request.model_spec.version.value = self.version
        elif self.version_label:
            request.model_spec.version_label = self.version_label
        request.model_spec.signature_name = signature
        request.output_filter.extend(output_filter)
        for name, value in inputs.items():
            request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
        try:
            response = self._stub.Predict(request, timeout=self.timeout_s)
        except grpc.RpcError as error:
            code = error.code().name if error.code() else "UNKNOWN"
            raise self._error(code, error.details() or "", signature) from None
        self.last_model_spec = response.model_spec
        return {name: tf.make_ndarray(proto) for name, proto in response.outputs.items()}

    def close(self) -> None:
        self._channel.close()


class RestClient(_BaseClient):
    """TF Serving's REST predict API (`base_url` = ``http://host:port``; scheme optional)."""

    transport = "REST"

    def __init__(
        self,
        base_url: str,
        model: str,
        version: int | None = None,
        version_label: str | None = None,
        signature: str = C.SERVING_DEFAULT,
        timeout_s: float = 30.0,
        **options: Any,
    ) -> None:
        if "://" not in base_url:
            base_url = "http://" + base_url
        super().__init__(
            base_url.rstrip("/"), model, version, version_label, signature, timeout_s, **options
        )

    @property
    def predict_url(self) -> str:
        path = f"/v1/models/{quote(self.model, safe='')}"
        if self.version is not None:
            path += f"/versions/{self.version}"
        elif self.version_label:
            path += f"/labels/{quote(self.version_label, safe='')}"
        return f"{self.address}{path}:predict"

    def predict(
        self, inputs: Mapping[str, Any], *, signature: str | None = None
    ) -> dict[str, np.ndarray]:
        signature = signature or self.signature
        # Columnar ("inputs") format: one JSON value per named input, strings always as b64.
        body = {
            "signature_name": signature,
            "inputs": {
                name: rest_json.array_to_json(np.asarray(v), True) for name, v in inputs.items()
            },
        }
        doc = self._post(self.predict_url, json.dumps(body).encode("utf-8"), signature)
        outputs = doc.get("outputs")
        if outputs is None:
            raise ServingError(f"response without 'outputs' ({self.describe(signature)}): {doc}")
        if isinstance(outputs, dict) and not rest_json.is_b64(outputs):
            return {
                name: rest_json.output_value_to_array(v, REST_OUTPUT_DTYPES.get(name))
                for name, v in outputs.items()
            }
        return {"outputs": rest_json.output_value_to_array(outputs)}  # single-output signature

    def _post(self, url: str, payload: bytes, signature: str) -> dict[str, Any]:
        request = urllib.request.Request(
            url, data=payload, method="POST", headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as reply:
                raw = reply.read()
        except urllib.error.HTTPError as error:
            text = error.read().decode("utf-8", errors="replace")
            try:
                details = json.loads(text).get("error", text)
            except (json.JSONDecodeError, AttributeError):
                details = text or error.reason
            code = _REST_CODES.get(error.code, f"HTTP_{error.code}")
            raise self._error(code, str(details), signature) from None
        except (urllib.error.URLError, ConnectionError, TimeoutError) as error:
            reason = getattr(error, "reason", error)
            code = "DEADLINE_EXCEEDED" if isinstance(reason, TimeoutError) else "UNAVAILABLE"
            raise self._error(code, str(reason), signature) from None
        try:
            return json.loads(raw)
        except json.JSONDecodeError as error:
            raise ServingError(
                f"invalid JSON from the server ({self.describe(signature)}): {error}"
            ) from None


def make_client(
    server: str, model: str, *, rest: bool = False, **kwargs: Any
) -> GrpcClient | RestClient:
    """`GrpcClient` for ``host:port``, or `RestClient` when `rest` (the CLI's --rest flag)."""
    return RestClient(server, model, **kwargs) if rest else GrpcClient(server, model, **kwargs)
