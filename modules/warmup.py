"""TF Serving warm-up requests written with the exported model.

Why: the first request to a freshly loaded SavedModel pays for building and optimising the
graph of its signature (seconds on a CPU server); TF Serving replays
`assets.extra/tf_serving_warmup_requests` (PredictionLogs, TFRecord) at load instead, once
per signature, with real inputs: here eval-split images re-encoded as PNG, without a mask
(the segmenter's path) and with one (the given-mask path).
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

from modules import contract as C
from modules.raw_examples import build_raw_example


def _png(image: np.ndarray) -> bytes:
    return tf.io.encode_png(tf.constant(image, tf.uint8)).numpy()


def warmup_logs(images: np.ndarray, model_name: str) -> list[prediction_log_pb2.PredictionLog]:
    """One PredictionLog per predict signature (batch = len(images)), plus `predict_images`
    with a centred square mask, so both ROI paths are traced."""
    pngs = [_png(img) for img in images]
    side = images.shape[1]
    square = np.zeros((side, side), np.uint8)
    square[side // 4 : 3 * side // 4, side // 4 : 3 * side // 4] = 255
    mask = _png(square[..., None])
    examples = [build_raw_example(p) for p in pngs]
    requests = [
        (C.SERVING_DEFAULT, {C.EXAMPLES: examples}),
        (C.PREDICT_ONLY, {C.EXAMPLES: examples}),
        (C.PREDICT_NO_MASK, {C.EXAMPLES: examples}),
        (C.PREDICT_IMAGES, {C.IMAGE_BYTES: pngs, C.MASK_BYTES: [b""] * len(pngs)}),
        (C.PREDICT_IMAGES, {C.IMAGE_BYTES: pngs, C.MASK_BYTES: [mask] * len(pngs)}),
    ]
    logs = []
    for signature, inputs in requests:
        request = predict_pb2.PredictRequest(
            model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature)
        )
        for name, values in inputs.items():
            request.inputs[name].CopyFrom(tf.make_tensor_proto(values, dtype=tf.string))
        logs.append(
            prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)
            )
        )
    return logs


def write_warmup_requests(model_dir: str, images: np.ndarray, model_name: str) -> str:
    """Writes the warm-up file into the SavedModel's assets.extra; returns its path."""
    path = os.path.join(model_dir, C.WARMUP_REQUESTS)
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.TFRecordWriter(path) as writer:
        for log in warmup_logs(images, model_name):
            writer.write(log.SerializeToString())
    return path


def read_warmup_requests(model_dir: str) -> list[prediction_log_pb2.PredictionLog]:
    """The PredictionLogs of a SavedModel's warm-up file ([] when it has none)."""
    path = os.path.join(model_dir, C.WARMUP_REQUESTS)
    if not tf.io.gfile.exists(path):
        return []
    return [
        prediction_log_pb2.PredictionLog.FromString(r.numpy())
        for r in tf.data.TFRecordDataset([path])
    ]
