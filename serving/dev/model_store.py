"""The dev server's core: find, load and run the versions of a pushed SavedModel (and load a
newer one when asked), and answer their status and metadata, the way TF Serving does.

Why a module of its own: the gRPC and REST front ends must give the same answers and the same
errors, so both hand plain numpy arrays to one `ModelStore`, and TF Serving's status codes and
error texts (tensorflow_serving/servables/tensorflow/predict_util.cc, core/basic_manager.cc,
model_servers/server_core.cc) are reproduced here once.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import text_format
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2

from serving.versions import is_saved_model, model_versions

log = logging.getLogger(__name__)

DEFAULT_SIGNATURE = tf.saved_model.DEFAULT_SERVING_SIGNATURE_DEF_KEY  # TF Serving's default
_INIT_OP_SIGNATURE = "__saved_model_init_op"
SIGNATURE_DEF_FIELD = "signature_def"  # the one metadata field TF Serving answers
_CODE_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


class StatusError(Exception):
    """A failed request, with the gRPC status code TF Serving would answer."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _invalid(message: str) -> StatusError:
    return StatusError(grpc.StatusCode.INVALID_ARGUMENT, message)


def find_versions(model_dir: str | Path) -> tuple[str, dict[int, Path]]:
    """Returns (default model name, {version: SavedModel dir}) for `model_dir`.

    `model_dir` is either a model base dir holding integer version dirs (TF Serving's
    ``<root>/<name>/<version>/`` layout, what the Pusher writes) or one version dir. A SavedModel
    dir whose name is not an integer is accepted as version 1, so an ad-hoc export also serves.
    """
    path = Path(model_dir).expanduser().resolve()
    if not path.is_dir():
        raise FileNotFoundError(f"model dir {path} does not exist")
    if is_saved_model(path):
        if path.name.isdigit():
            return path.parent.name, {int(path.name): path}
        return path.name, {1: path}
    versions = {version: Path(folder) for version, folder in model_versions(path).items()}
    if not versions:
        raise FileNotFoundError(
            f"no SavedModel found under {path}: expected {path}/<integer version>/saved_model.pb "
            "(TF Serving layout) or a SavedModel dir itself"
        )
    return path.name, versions


def _read_signature_defs(path: Path) -> dict[str, meta_graph_pb2.SignatureDef]:
    """The `serve` meta graph's SignatureDefs, read from the SavedModel proto like TF Serving."""
    saved_model = saved_model_pb2.SavedModel()
    if (path / "saved_model.pb").is_file():
        saved_model.ParseFromString((path / "saved_model.pb").read_bytes())
    else:
        text_format.Parse((path / "saved_model.pbtxt").read_text(), saved_model)
    for meta_graph in saved_model.meta_graphs:
        if "serve" in meta_graph.meta_info_def.tags:
            return dict(meta_graph.signature_def)
    raise ValueError(f"SavedModel at {path} has no meta graph tagged 'serve'")


_GRAPH_ERROR_PREFIX = re.compile(r"^Graph execution error:\s*")
_DETECTED_AT = re.compile(
    r"Detected at node [^\n]* defined at \(most recent call last\):\n(?:[ \t<][^\n]*\n)*"
)
_OP_SUFFIX = re.compile(r"\s*\[Op:[^\]]*\]\s*$")


def clean_tf_message(message: str) -> str:
    """TF's eager error text minus the Python-side decoration C++ TF Serving never shows."""
    message = _GRAPH_ERROR_PREFIX.sub("", message)
    message = _DETECTED_AT.sub("", message)
    return _OP_SUFFIX.sub("", message).strip()


def _dtype_name(dtype: tf.DType) -> str:
    # TF Serving prints DataTypeString(): "float", "string", "int64", ...
    return {tf.float32: "float", tf.float64: "double"}.get(dtype, dtype.name)


def _numpy_dtype_name(array: np.ndarray) -> str:
    if array.dtype.kind in "OSU":
        return "string"
    try:
        return _dtype_name(tf.as_dtype(array.dtype))
    except TypeError:
        return str(array.dtype)


def _join(names: Iterable[str]) -> str:
    return ",".join(sorted(names))


@dataclass(frozen=True)
class InputSpec:
    """One signature input as the SignatureDef declares it."""

    dtype: tf.DType
    shape: tf.TensorShape


class Servable:
    """One loaded model version: its SignatureDefs (for checks and metadata) and functions."""

    def __init__(self, name: str, version: int, path: Path) -> None:
        self.name = name
        self.version = version
        self.path = path
        self.signature_defs = _read_signature_defs(path)
        self._loaded = tf.saved_model.load(str(path))
        self._functions = dict(self._loaded.signatures)
        self.warmup_requests, self.warmup_seconds = self._warm_up()

    def _warm_up(self) -> tuple[int, float]:
        """Replays the version's `assets.extra/tf_serving_warmup_requests` as TF Serving
        does at load; a failing one fails the load (TF Serving's rule too)."""
        from modules.warmup import read_warmup_requests

        logs = read_warmup_requests(str(self.path))
        start = time.perf_counter()
        for log in logs:
            request = log.predict_log.request
            inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
            try:
                self.run(request.model_spec.signature_name, inputs)
            except StatusError as error:
                raise ValueError(
                    f"{self.path}: warm-up request for signature "
                    f"{request.model_spec.signature_name!r} failed: {error}"
                ) from None
        return len(logs), time.perf_counter() - start

    def signature(self, name: str) -> meta_graph_pb2.SignatureDef:
        """The SignatureDef `name` ('' = serving_default); FAILED_PRECONDITION if absent."""
        name = name or DEFAULT_SIGNATURE
        if name not in self._functions or name not in self.signature_defs:
            raise StatusError(
                grpc.StatusCode.FAILED_PRECONDITION, f'Serving signature key "{name}" not found.'
            )
        return self.signature_defs[name]

    def input_specs(self, signature_name: str) -> dict[str, InputSpec]:
        """Input name -> dtype/shape of a signature (raises like `signature`)."""
        signature = self.signature(signature_name)
        return {
            alias: InputSpec(tf.as_dtype(info.dtype), tf.TensorShape(info.tensor_shape))
            for alias, info in signature.inputs.items()
        }

    def check_input_names(self, signature_name: str, names: Iterable[str]) -> None:
        """TF Serving's input-count and alias checks, with its exact messages."""
        signature = self.signature(signature_name)
        sent = set(names)
        wanted = set(signature.inputs)
        has_defaults = bool(getattr(signature, "defaults", None))
        if len(sent) > len(wanted) or (len(sent) < len(wanted) and not has_defaults):
            raise _invalid(
                f"input size does not match signature: {len(sent)}!={len(wanted)} "
                f"len({{{_join(sent)}}}) != len({{{_join(wanted)}}}). "
                f"Sent extra: {{{_join(sent - wanted)}}}. "
                f"Missing but required: {{{_join(wanted - sent)}}}."
            )
        unknown = sorted(sent - wanted)
        if unknown:
            raise _invalid(
                f"input tensor alias not found in signature: {unknown[0]}. "
                f"Inputs expected to be in the set {{{_join(wanted)}}}."
            )

    def run(
        self,
        signature_name: str,
        inputs: Mapping[str, np.ndarray],
        output_filter: Sequence[str] = (),
    ) -> dict[str, np.ndarray]:
        """Runs one signature on numpy inputs; every failure becomes a `StatusError`."""
        signature_name = signature_name or DEFAULT_SIGNATURE
        self.check_input_names(signature_name, inputs)
        specs = self.input_specs(signature_name)
        outputs_wanted = self._check_output_filter(signature_name, output_filter)
        tensors = {}
        for index, alias in enumerate(sorted(inputs)):
            array = np.asarray(inputs[alias])
            spec = specs[alias]
            tensors[alias] = self._to_tensor(index, alias, array, spec)
        try:
            result = self._functions[signature_name](**tensors)
        except tf.errors.OpError as error:
            code = _CODE_BY_NUMBER.get(error.error_code, grpc.StatusCode.UNKNOWN)
            raise StatusError(code, clean_tf_message(error.message)) from None
        except (TypeError, ValueError) as error:
            raise _invalid(clean_tf_message(str(error))) from None
        return {alias: result[alias].numpy() for alias in outputs_wanted}

    def _check_output_filter(self, signature_name: str, output_filter: Sequence[str]) -> list[str]:
        outputs = self.signature(signature_name).outputs
        seen: list[str] = []
        for alias in output_filter:
            if alias not in outputs:
                raise _invalid(
                    f"output tensor alias not found in signature: {alias} "
                    f"Outputs expected to be in the set {{{_join(outputs)}}}."
                )
            if alias in seen:
                raise _invalid(f"duplicate output tensor alias: {alias}")
            seen.append(alias)
        return seen or sorted(outputs)

    @staticmethod
    def _to_tensor(index: int, alias: str, array: np.ndarray, spec: InputSpec) -> tf.Tensor:
        is_string = array.dtype.kind in "OSU"
        if is_string:
            matches = spec.dtype == tf.string
        else:
            try:
                matches = tf.as_dtype(array.dtype) == spec.dtype
            except TypeError:
                matches = False
        if not matches:
            # DirectSession's wording for a fed tensor of the wrong type.
            raise _invalid(
                f"Expects arg[{index}] to be {_dtype_name(spec.dtype)} but "
                f"{_numpy_dtype_name(array)} is provided"
            )
        if not spec.shape.is_compatible_with(array.shape):
            raise _invalid(
                f"input {alias}: shape {list(array.shape)} is not compatible with the "
                f"signature's shape {spec.shape.as_list() if spec.shape.rank is not None else '?'}"
            )
        if is_string and array.dtype.kind == "U":
            array = np.vectorize(lambda s: s.encode("utf-8"), otypes=[object])(array)
        return tf.constant(array, dtype=spec.dtype)


class ModelStore:
    """The servables of one model name plus version labels; resolves a request's ModelSpec."""

    def __init__(
        self,
        servables: Sequence[Servable],
        version_labels: Mapping[str, int],
        model_dir: str | Path | None = None,
    ) -> None:
        self.servables = {s.version: s for s in servables}
        self.name = servables[0].name
        self.model_dir = model_dir
        missing = {k: v for k, v in version_labels.items() if v not in self.servables}
        if missing:
            raise ValueError(f"version labels point at versions that are not loaded: {missing}")
        self.version_labels = dict(version_labels)

    def load_newer(self) -> Servable | None:
        """Loads a version above the latest if one was pushed (TF Serving's file-system
        polling with the `latest` policy) and swaps it in, keeping versions that labels name;
        returns it, or None. Requests in flight finish on the version they started with."""
        if self.model_dir is None:
            return None
        _, versions = find_versions(self.model_dir)
        newest = max(versions)
        if newest <= self.latest.version:
            return None
        log.info("loading model %r version %d from %s", self.name, newest, versions[newest])
        servable = Servable(self.name, newest, versions[newest])
        labelled = {v: self.servables[v] for v in self.version_labels.values()}
        self.servables = {**labelled, newest: servable}  # one assignment: readers see old or new
        return servable

    @classmethod
    def from_dir(
        cls,
        model_dir: str | Path,
        model_name: str | None = None,
        version_labels: Mapping[str, int] | None = None,
    ) -> ModelStore:
        """Loads the highest version found (TF Serving's default `latest` version policy)."""
        default_name, versions = find_versions(model_dir)
        version = max(versions)
        name = model_name or default_name
        log.info("loading model %r version %d from %s", name, version, versions[version])
        servable = Servable(name, version, versions[version])
        return cls([servable], version_labels or {}, model_dir)

    @property
    def latest(self) -> Servable:
        return self.servables[max(self.servables)]

    def get(self, name: str, version: int | None = None, label: str | None = None) -> Servable:
        """The servable a ModelSpec asks for; NOT_FOUND / INVALID_ARGUMENT texts as TF Serving."""
        if label:
            if name != self.name or label not in self.version_labels:
                raise _invalid(f"Unrecognized servable version label: {label}")
            version = self.version_labels[label]
        if version is not None:
            if name == self.name and version in self.servables:
                return self.servables[version]
            raise StatusError(
                grpc.StatusCode.NOT_FOUND,
                f"Servable not found for request: Specific({name}, {version})",
            )
        if name != self.name:
            raise StatusError(
                grpc.StatusCode.NOT_FOUND, f"Servable not found for request: Latest({name})"
            )
        return self.latest

    def status(self, name: str, version: int | None = None) -> Any:
        """GetModelStatusResponse for `name` (all loaded versions, or one)."""
        if version is not None and (name != self.name or version not in self.servables):
            raise StatusError(
                grpc.StatusCode.NOT_FOUND, f"Could not find version {version} of model {name}"
            )
        if name != self.name:
            raise StatusError(
                grpc.StatusCode.NOT_FOUND, f"Could not find any versions of model {name}"
            )
        response = get_model_status_pb2.GetModelStatusResponse()
        for number in sorted(self.servables) if version is None else [version]:
            entry = response.model_version_status.add()
            entry.version = number
            entry.state = get_model_status_pb2.ModelVersionStatus.AVAILABLE
            entry.status.SetInParent()  # error_code OK, error_message "" (TF Serving prints both)
        return response


def spec_choice(model_spec: Any) -> tuple[int | None, str | None]:
    """(version, version_label) of a ModelSpec proto; at most one is set (a oneof)."""
    choice = model_spec.WhichOneof("version_choice")
    if choice == "version":
        return model_spec.version.value, None
    if choice == "version_label":
        return None, model_spec.version_label or None
    return None, None


def metadata_response(store: ModelStore, request: Any) -> Any:
    """GetModelMetadata (gRPC, and REST's ``/metadata``): TF Serving's validation order and
    SignatureDefMap packing."""
    if not request.HasField("model_spec"):
        raise _invalid("Missing ModelSpec")
    if not request.metadata_field:
        raise _invalid("GetModelMetadataRequest must specify at least one metadata_field")
    for field in request.metadata_field:
        if field != SIGNATURE_DEF_FIELD:
            raise _invalid(f"Metadata field {field} is not supported")
    servable = store.get(request.model_spec.name, *spec_choice(request.model_spec))
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    response.model_spec.name = servable.name
    response.model_spec.version.value = servable.version
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    for name, signature in servable.signature_defs.items():
        signature_map.signature_def[name].CopyFrom(signature)
    response.metadata[SIGNATURE_DEF_FIELD].Pack(signature_map)
    return response
