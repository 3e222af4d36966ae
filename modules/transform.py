"""Transform `preprocessing_fn`: decode, ROI masking and resizing of raw tf.Examples.

The transformed image is stored as a serialized uint8 tensor (one bytes feature): 268 KB per
image at 299x299 before gzip, a quarter of float32, and it decodes without any arithmetic.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from modules import contract as C
from modules import safe_decode
from modules.options import TransformOptions, from_custom_config


def prepare_image(
    image_bytes: tf.Tensor, mask_bytes: tf.Tensor, size: int, roi: bool, max_pixels: int
):
    """One example: RGB uint8 [size, size, 3] and whether a non-empty lesion mask came with it.

    ROI = image x mask at the original resolution, then a bilinear resize (the paper's order);
    an empty mask string (MRI) or an empty mask image leaves the image unchanged. Image and
    mask above `max_pixels` (by their headers) fail before they are decoded.
    """
    image = safe_decode.decode(image_bytes, 3, max_pixels, "image")

    def with_mask():
        same = tf.debugging.assert_equal(
            safe_decode.header_size(mask_bytes, "mask"),
            tf.cast(tf.shape(image)[:2], tf.int64),
            message="mask size differs from image size",
        )
        with tf.control_dependencies([same]):  # checked from the header, before decoding
            mask = safe_decode.decode(mask_bytes, 1, max_pixels, "mask") > 0
        nonempty = tf.reduce_any(mask)
        masked = image * tf.cast(mask, image.dtype) if roi else image
        return tf.cond(nonempty, lambda: masked, lambda: image), nonempty

    has_bytes = tf.strings.length(mask_bytes) > 0
    image, has_mask = tf.cond(has_bytes, with_mask, lambda: (image, tf.constant(False)))
    resized = tf.image.resize(tf.cast(image, tf.float32), [size, size], method="bilinear")
    resized = tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)
    return tf.ensure_shape(resized, [size, size, 3]), tf.cast(has_mask, tf.int64)


def prepare_images(
    image_bytes: tf.Tensor, mask_bytes: tf.Tensor, size: int, roi: bool, max_pixels: int
):
    """Batch version of `prepare_image`: [B] encoded images and masks -> ([B,S,S,3], [B])."""
    return tf.map_fn(
        tf.autograph.experimental.do_not_convert(
            lambda x: prepare_image(x[0], x[1], size, roi, max_pixels)
        ),
        (image_bytes, mask_bytes),
        fn_output_signature=(tf.TensorSpec([size, size, 3], tf.uint8), tf.TensorSpec([], tf.int64)),
    )


def encode_images(images: tf.Tensor) -> tf.Tensor:
    """[B, S, S, 3] uint8 -> [B] serialized tensors (the transformed `image` feature)."""
    return tf.map_fn(tf.io.serialize_tensor, images, fn_output_signature=tf.string)


def decode_images(serialized: tf.Tensor, size: int) -> tf.Tensor:
    """Inverse of `encode_images`, as float32 0..255 (EfficientNetV2 rescales internally)."""
    images = tf.map_fn(
        tf.autograph.experimental.do_not_convert(lambda s: tf.io.parse_tensor(s, tf.uint8)),
        serialized,
        fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8),
    )
    return tf.cast(tf.ensure_shape(images, [None, size, size, 3]), tf.float32)


def _flat(t: tf.Tensor) -> tf.Tensor:
    return tf.reshape(t, [-1])


def preprocessing_fn(inputs: dict[str, Any], custom_config: dict[str, Any]) -> dict[str, Any]:
    """tf.Transform entry point (TFX Transform calls it); options come from PipelineConfig."""
    opts = from_custom_config(TransformOptions, custom_config)
    images, has_mask = prepare_images(
        _flat(inputs[C.IMAGE]), _flat(inputs[C.MASK]), opts.image_size, opts.roi, opts.max_pixels
    )
    return {
        C.IMAGE: encode_images(images),
        C.LABEL: _flat(inputs[C.LABEL]),
        C.MODALITY: _flat(inputs[C.MODALITY]),
        C.DATASET: _flat(inputs[C.DATASET]),
        C.HAS_MASK: has_mask,
    }
