"""The model handler Beam's RunInference calls: a pushed SavedModel's named signature.

Why our own handler: Beam's TFModelHandlerTensor imports tensorflow_hub, which does not
import under TF 2.21 (no tf.compat.v1.estimator), and tfx-bsl's predict handler cannot
split our per-image string output `roi_source` (it assumes every output row is an array).
This one loads with tf.saved_model.load, feeds serialized raw tf.Examples to the signature,
and keeps Beam's RunInference semantics (one model per worker process, shared by threads).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import Future
from typing import Any

import numpy as np
from apache_beam.io.filesystems import FileSystems
from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from modules import contract as C
from serving.versions import is_saved_model, newest_version

LATENCY = "_latency_ms"  # added to each answered row: its batch's model call, for the audit log

# One element = one planned batch: (batch key, [(path, true class or "", raw example), ...]).
Batch = tuple[Any, list[tuple[str, str, bytes]]]


class ModelError(ValueError):
    """The model cannot be used to score (missing, not a SavedModel, wrong signature)."""


def resolve_model(path: str) -> str:
    """A SavedModel folder, or the newest numbered version below a Pusher's base folder (the
    version TF Serving would serve)."""
    path = path.rstrip("/")
    if is_saved_model(path):
        return path
    if not FileSystems.exists(path):
        raise ModelError(f"{path}: no such model folder")
    newest = newest_version(path)
    if newest is None:
        raise ModelError(f"{path}: neither a SavedModel nor a folder of numbered versions")
    return newest


def check_signature(model_path: str, signature: str) -> list[str]:
    """The signature's output names; ModelError when the model lacks it or its input."""
    from tensorflow.python.saved_model import loader_impl

    try:
        saved = loader_impl.parse_saved_model(model_path)
    except OSError as e:
        raise ModelError(f"{model_path}: not a readable SavedModel: {e}") from None
    signatures = saved.meta_graphs[0].signature_def
    if signature not in signatures:
        raise ModelError(f"{model_path}: no signature {signature!r}; it has {sorted(signatures)}")
    inputs = dict(signatures[signature].inputs)
    if list(inputs) != [C.EXAMPLES]:
        raise ModelError(
            f"{model_path}: signature {signature!r} takes {sorted(inputs)}, not [{C.EXAMPLES!r}]"
        )
    missing = {C.PROBABILITIES, C.CLASS_ID} - set(signatures[signature].outputs)
    if missing:
        raise ModelError(f"{model_path}: signature {signature!r} lacks {sorted(missing)}")
    return sorted(signatures[signature].outputs)


# One load per model per worker process. Beam's own sharing (shared.Shared, held by the
# DoFn) does not survive the DaskRunner, which rebuilds every DoFn for each partition: there
# each partition would load the SavedModel again (about 10 s each).
_MODELS: dict[str, Future] = {}
_MODELS_LOCK = threading.Lock()


def _load(model_path: str) -> Any:
    import tensorflow as tf

    return tf.saved_model.load(model_path)


def preload(model_path: str) -> Future:
    """The model of this process, loading in a background thread if not yet started: the
    read step calls it, so the load overlaps the reading of the images."""
    with _MODELS_LOCK:
        future = _MODELS.get(model_path)
        if future is None:
            future = _MODELS[model_path] = Future()
            threading.Thread(target=_fill, args=(future, model_path), daemon=True).start()
        return future


def _fill(future: Future, model_path: str) -> None:
    try:
        future.set_result(_load(model_path))
    except BaseException as e:
        future.set_exception(e)


def release(model_path: str) -> None:
    """Drops this process's copy (the launcher calls it when an in-process run ends)."""
    with _MODELS_LOCK:
        _MODELS.pop(model_path, None)


class ExampleSignatureHandler(ModelHandler[Batch, PredictionResult, Any]):
    """Runs one planned batch of raw tf.Examples through `signature`; when the batch fails,
    retries its images one by one so one bad image costs only itself."""

    def __init__(self, model_path: str, signature: str) -> None:
        super().__init__()
        self._model_path = model_path
        self._signature = signature

    def load_model(self) -> Any:
        return preload(self._model_path).result()

    def run_inference(
        self, batch: Sequence[Batch], model: Any, inference_args: dict | None = None
    ) -> Iterable[PredictionResult]:
        fn = model.signatures[self._signature]
        return [PredictionResult(element, self._score(fn, element[1])) for element in batch]

    def _score(self, fn: Any, items: list[tuple[str, str, bytes]]) -> list[dict | str]:
        """Per image: {output: row} or the error message."""
        import time

        import tensorflow as tf

        t0 = time.perf_counter()
        try:
            out = fn(examples=tf.constant([item[-1] for item in items]))
        except Exception as e:
            if len(items) == 1:
                from serving.errors import plain_message

                return [f"{items[0][0]}: the model rejected it: {plain_message(str(e))}"]
            return [row for item in items for row in self._score(fn, [item])]
        arrays = {name: np.asarray(value) for name, value in out.items()}
        ms = 1000 * (time.perf_counter() - t0)
        return [
            {**{name: value[i] for name, value in arrays.items()}, LATENCY: ms}
            for i in range(len(items))
        ]

    def should_skip_batching(self) -> bool:
        # Batches are planned before RunInference (sorted inputs, fixed size, grouped by
        # key); Beam's BatchElements would also hold its last batch until finish_bundle,
        # which the DaskRunner drops.
        return True

    def get_num_bytes(self, batch: Sequence[Batch]) -> int:
        return sum(len(item[-1]) for _, items in batch for item in items)

    def get_metrics_namespace(self) -> str:
        return "lesionlens_score"

    def share_model_across_processes(self) -> bool:
        return False
