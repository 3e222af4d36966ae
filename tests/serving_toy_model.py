"""A tiny SavedModel with exactly the pushed model's five signatures, for serving tests.

Why: the serving code must be tested against the contract (names, dtypes, shapes, Grad-CAM
semantics) without waiting for, or depending on, a trained EfficientNetV2B0. The toy decodes
image bytes like the real model, runs a fixed-weight conv net and computes Grad-CAM with a
GradientTape on its conv feature map, so batching and per-example heatmaps are exercised.

ROI outputs: the toy has no lesion segmenter, so `roi_source` is "given" when the request
carried mask bytes and "none" otherwise (never "predicted"); `roi_mask` is the given mask
area-resized to ROI_MASK_SIZE (>= 0.5 kept), or all ones (whole image) without one or for
an all-zero mask, as the real model answers. `predict_no_mask` ignores every request mask.
"""

from __future__ import annotations

from modules.keras2 import use_keras2

use_keras2()  # before anything imports TensorFlow

from pathlib import Path

import numpy as np
import tensorflow as tf

from modules import contract as C

SIZE = 16  # model input side
FEATURE = 8  # Grad-CAM side (one stride-2 conv)
NUM_CLASSES = 2

_RAW_SPEC = {  # the raw contract; only `image` required, as at serving time
    name: tf.io.FixedLenFeature(
        [],
        tf.int64 if kind == "int64_list" else tf.string,
        default_value=None if name == C.IMAGE else (-1 if kind == "int64_list" else ""),
    )
    for name, kind in C.RAW_FEATURES.items()
}
_STRINGS = tf.TensorSpec([None], tf.string)


class ToyLesionModel(tf.Module):
    """Fixed random weights; the five serving signatures of the pushed model."""

    def __init__(self, seed: int = 7, roi_outputs: bool = True) -> None:
        super().__init__()
        self.roi_outputs = roi_outputs
        rng = np.random.default_rng(seed)
        self.conv_w = tf.Variable(rng.normal(0, 0.5, (3, 3, 3, 6)).astype("float32"))
        self.conv_b = tf.Variable(rng.normal(0, 0.1, (6,)).astype("float32"))
        self.dense_w = tf.Variable(rng.normal(0, 1.0, (6, NUM_CLASSES)).astype("float32"))
        self.dense_b = tf.Variable(np.zeros(NUM_CLASSES, "float32"))

    def _decode_one(self, pair: tuple[tf.Tensor, tf.Tensor]) -> tf.Tensor:
        image_bytes, mask_bytes = pair
        image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
        image = tf.image.resize(tf.cast(image, tf.float32), [SIZE, SIZE])

        def _mask() -> tf.Tensor:
            mask = tf.io.decode_png(mask_bytes, channels=1)
            mask = tf.image.resize(mask, [SIZE, SIZE], method="nearest")
            return tf.cast(mask > 0, tf.float32)

        mask = tf.cond(tf.strings.length(mask_bytes) > 0, _mask, lambda: tf.ones([SIZE, SIZE, 1]))
        return image * mask

    def _images(self, image_bytes: tf.Tensor, mask_bytes: tf.Tensor) -> tf.Tensor:
        return tf.map_fn(
            self._decode_one,
            (image_bytes, mask_bytes),
            fn_output_signature=tf.TensorSpec([SIZE, SIZE, 3], tf.float32),
        )

    @staticmethod
    def _roi_mask_one(mask_bytes: tf.Tensor) -> tf.Tensor:
        m = C.ROI_MASK_SIZE
        whole = tf.ones([m, m], tf.uint8)

        def _given() -> tf.Tensor:
            mask = tf.cast(tf.io.decode_png(mask_bytes, channels=1) > 0, tf.float32)
            small = tf.image.resize(mask, [m, m], method="area")[..., 0]
            small = tf.cast(small >= 0.5, tf.uint8)
            return tf.cond(tf.reduce_any(mask > 0), lambda: small, lambda: whole)

        return tf.cond(tf.strings.length(mask_bytes) > 0, _given, lambda: whole)

    def _roi(self, mask_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
        given = tf.strings.length(mask_bytes) > 0
        roi_mask = tf.map_fn(
            self._roi_mask_one,
            mask_bytes,
            fn_output_signature=tf.TensorSpec([C.ROI_MASK_SIZE, C.ROI_MASK_SIZE], tf.uint8),
        )
        source = tf.where(given, tf.constant(C.ROI_GIVEN), tf.constant(C.ROI_NONE))
        return {C.ROI_SOURCE: source, C.ROI_MASK: roi_mask}

    def _answer(self, image_bytes: tf.Tensor, mask_bytes: tf.Tensor, with_gradcam: bool) -> dict:
        out = self._head(self._images(image_bytes, mask_bytes), with_gradcam)
        return {**out, **self._roi(mask_bytes)} if self.roi_outputs else out

    def _head(self, images: tf.Tensor, with_gradcam: bool) -> dict[str, tf.Tensor]:
        with tf.GradientTape() as tape:
            fmap = tf.nn.relu(tf.nn.conv2d(images / 255.0, self.conv_w, 2, "SAME") + self.conv_b)
            tape.watch(fmap)
            logits = tf.reduce_mean(fmap, axis=[1, 2]) @ self.dense_w + self.dense_b
            class_id = tf.argmax(logits, axis=-1)
            score = tf.gather(logits, class_id, batch_dims=1)
        out = {C.PROBABILITIES: tf.nn.softmax(logits), C.CLASS_ID: class_id}
        if with_gradcam:
            grads = tape.gradient(score, fmap)
            weights = tf.reduce_mean(grads, axis=[1, 2], keepdims=True)
            cam = tf.nn.relu(tf.reduce_sum(fmap * weights, axis=-1))
            peak = tf.reduce_max(cam, axis=[1, 2], keepdims=True)
            out[C.GRADCAM] = cam / (peak + 1e-8)
        return out

    def _parse(self, examples: tf.Tensor) -> dict[str, tf.Tensor]:
        return tf.io.parse_example(examples, _RAW_SPEC)

    @tf.function(input_signature=[_STRINGS])
    def serving_default(self, examples: tf.Tensor) -> dict[str, tf.Tensor]:
        raw = self._parse(examples)
        return self._answer(raw[C.IMAGE], raw[C.MASK], with_gradcam=True)

    @tf.function(input_signature=[_STRINGS, _STRINGS])
    def predict_images(self, image_bytes: tf.Tensor, mask_bytes: tf.Tensor) -> dict:
        return self._answer(image_bytes, mask_bytes, with_gradcam=True)

    @tf.function(input_signature=[_STRINGS])
    def predict_only(self, examples: tf.Tensor) -> dict[str, tf.Tensor]:
        raw = self._parse(examples)
        return self._answer(raw[C.IMAGE], raw[C.MASK], with_gradcam=False)

    @tf.function(input_signature=[_STRINGS])
    def predict_no_mask(self, examples: tf.Tensor) -> dict[str, tf.Tensor]:
        image = self._parse(examples)[C.IMAGE]
        return self._answer(image, tf.fill(tf.shape(image), ""), with_gradcam=False)

    @tf.function(input_signature=[_STRINGS])
    def transform_features(self, examples: tf.Tensor) -> dict[str, tf.Tensor]:
        raw = self._parse(examples)
        return {"image_xf": self._images(raw[C.IMAGE], raw[C.MASK]), C.LABEL: raw[C.LABEL]}


def save_toy_model(
    model_base: Path, version: int = 1, seed: int = 7, roi_outputs: bool = True
) -> Path:
    """Writes the toy as ``model_base/<version>/`` (TF Serving layout); returns that dir.

    `roi_outputs=False`: a model exported before the ROI contract (no roi_source / roi_mask
    outputs, no predict_no_mask), for checking that clients still serve it unchanged.
    """
    module = ToyLesionModel(seed, roi_outputs)
    path = Path(model_base) / str(version)
    signatures = {
        C.SERVING_DEFAULT: module.serving_default,
        C.PREDICT_IMAGES: module.predict_images,
        C.PREDICT_ONLY: module.predict_only,
        C.TRANSFORM_FEATURES: module.transform_features,
    }
    if roi_outputs:
        signatures[C.PREDICT_NO_MASK] = module.predict_no_mask
    tf.saved_model.save(module, str(path), signatures=signatures)
    return path
