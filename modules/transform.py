"""Transform `preprocessing_fn`: decode, ROI masking and resizing of raw tf.Examples.

The transformed image is stored as a serialized uint8 tensor (one bytes feature): 268 KB per
image at 299x299 before gzip, a quarter of float32, and it decodes without any arithmetic.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import tensorflow as tf

from modules import contract as C
from modules import roi_crop, safe_decode
from modules.options import RoiMode, TransformOptions, from_custom_config


class Prepared(NamedTuple):
    """One decoded example (or a batch of them, with a leading dimension)."""

    image: tf.Tensor  # uint8 [S, S, 3]: the ROI image (image x mask, or the crop around the
    # mask with `roi_mode="crop"`) or the whole image
    has_mask: tf.Tensor  # int64: 1 when a non-empty mask came with it (and was applied)
    full_image: tf.Tensor  # uint8 [S, S, 3]: the whole image, no ROI
    mask: tf.Tensor  # uint8 [m, m]: the given mask at `mask_size`, 1 = lesion; 0 when none


def _resize(image: tf.Tensor, size: int) -> tf.Tensor:
    return _as_uint8(tf.image.resize(tf.cast(image, tf.float32), [size, size], method="bilinear"))


def _as_uint8(image: tf.Tensor) -> tf.Tensor:
    return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)


def _roi_image(
    image: tf.Tensor, mask: tf.Tensor, small: tf.Tensor, size: int, roi_mode: str, margin: float
) -> tf.Tensor:
    """uint8 [H, W, 3] x bool [H, W, 1] (non-empty) -> the ROI image, uint8 [size, size, 3].
    The crop's box comes from the mask at `mask_size` (`small`), as in the served graph, so
    the box a request's `roi_mask` shows is the one cropped."""
    if RoiMode(roi_mode) == RoiMode.CROP:
        box = roi_crop.mask_boxes(small[None], margin)
        return _as_uint8(roi_crop.crop(image[None], box, size)[0])
    return _resize(image * tf.cast(mask, image.dtype), size)


def prepare_image(
    image_bytes: tf.Tensor,
    mask_bytes: tf.Tensor,
    size: int,
    roi: bool,
    max_pixels: int,
    mask_size: int = C.ROI_MASK_SIZE,
    roi_mode: str = RoiMode.MASK,
    roi_margin: float = 0.0,
) -> Prepared:
    """ROI = image x mask at the original resolution, then a bilinear resize (the paper's
    order), or with `roi_mode="crop"` the mask's box (modules/roi_crop.py) cropped from the
    original image; an empty mask string (MRI, or a request without one) or an empty mask
    image leaves the image unchanged. Image and mask above `max_pixels` (by their headers)
    fail before they are decoded, and so does a mask of another size than its image.
    """
    image = safe_decode.decode(image_bytes, 3, max_pixels, "image")
    no_mask = tf.zeros([tf.shape(image)[0], tf.shape(image)[1], 1], tf.bool)

    def given_mask():
        same = tf.debugging.assert_equal(
            safe_decode.header_size(mask_bytes, "mask"),
            tf.cast(tf.shape(image)[:2], tf.int64),
            message="mask size differs from image size",
        )
        with tf.control_dependencies([same]):  # checked from the header, before decoding
            return safe_decode.decode(mask_bytes, 1, max_pixels, "mask") > 0

    mask = tf.cond(tf.strings.length(mask_bytes) > 0, given_mask, lambda: no_mask)
    nonempty = tf.reduce_any(mask)
    whole = _resize(image, size)
    small = tf.image.resize(tf.cast(mask, tf.float32), [mask_size, mask_size], method="area")
    small = tf.cast(small[..., 0] >= 0.5, tf.uint8)
    roi_image = whole
    if roi:
        roi_image = tf.cond(
            nonempty,
            lambda: _roi_image(image, mask, small, size, roi_mode, roi_margin),
            lambda: whole,
        )
    return Prepared(
        image=tf.ensure_shape(roi_image, [size, size, 3]),
        has_mask=tf.cast(nonempty, tf.int64),
        full_image=tf.ensure_shape(whole, [size, size, 3]),
        mask=small,
    )


def prepare_images(
    image_bytes: tf.Tensor,
    mask_bytes: tf.Tensor,
    size: int,
    roi: bool,
    max_pixels: int,
    mask_size: int = C.ROI_MASK_SIZE,
    roi_mode: str = RoiMode.MASK,
    roi_margin: float = 0.0,
) -> Prepared:
    """Batch version of `prepare_image`: [B] encoded images and masks -> [B, ...] each."""
    pixels = tf.TensorSpec([size, size, 3], tf.uint8)
    return Prepared(
        *tf.map_fn(
            tf.autograph.experimental.do_not_convert(
                lambda x: tuple(
                    prepare_image(
                        x[0], x[1], size, roi, max_pixels, mask_size, roi_mode, roi_margin
                    )
                )
            ),
            (image_bytes, mask_bytes),
            fn_output_signature=(
                pixels,
                tf.TensorSpec([], tf.int64),
                pixels,
                tf.TensorSpec([mask_size, mask_size], tf.uint8),
            ),
        )
    )


def encode_images(images: tf.Tensor) -> tf.Tensor:
    """[B, S, S, 3] uint8 -> [B] serialized tensors (the transformed `image` feature)."""
    return tf.map_fn(tf.io.serialize_tensor, images, fn_output_signature=tf.string)


def _parse_uint8(serialized: tf.Tensor, shape: list[int | None]) -> tf.Tensor:
    """[B] serialized uint8 tensors -> uint8 [B, *shape]."""
    return tf.map_fn(
        tf.autograph.experimental.do_not_convert(lambda s: tf.io.parse_tensor(s, tf.uint8)),
        serialized,
        fn_output_signature=tf.TensorSpec([None] * len(shape), tf.uint8),
    )


def decode_images(serialized: tf.Tensor, size: int) -> tf.Tensor:
    """Inverse of `encode_images`, as float32 0..255 (EfficientNetV2 rescales internally)."""
    images = _parse_uint8(serialized, [size, size, 3])
    return tf.cast(tf.ensure_shape(images, [None, size, size, 3]), tf.float32)


def decode_masks(serialized: tf.Tensor, size: int) -> tf.Tensor:
    """The `lesion_mask` feature -> uint8 [B, size, size], 1 = lesion."""
    return tf.ensure_shape(_parse_uint8(serialized, [size, size]), [None, size, size])


def _flat(t: tf.Tensor) -> tf.Tensor:
    return tf.reshape(t, [-1])


def preprocessing_fn(inputs: dict[str, Any], custom_config: dict[str, Any]) -> dict[str, Any]:
    """tf.Transform entry point (TFX Transform calls it); options come from PipelineConfig."""
    opts = from_custom_config(TransformOptions, custom_config)
    prepared = prepare_images(
        _flat(inputs[C.IMAGE]),
        _flat(inputs[C.MASK]),
        opts.image_size,
        opts.roi,
        opts.max_pixels,
        opts.segmenter_size or C.ROI_MASK_SIZE,
        opts.roi_mode,
        opts.roi_margin,
    )
    outputs = {
        C.IMAGE: encode_images(prepared.image),
        C.LABEL: _flat(inputs[C.LABEL]),
        C.MODALITY: _flat(inputs[C.MODALITY]),
        C.DATASET: _flat(inputs[C.DATASET]),
        C.HAS_MASK: prepared.has_mask,
        C.IS_POSITIVE: tf.cast(tf.equal(_flat(inputs[C.LABEL]), C.POSITIVE_LABEL), tf.int64),
    }
    if opts.segmenter_size:  # what the segmenter and predicted-ROI training read
        outputs[C.FULL_IMAGE] = encode_images(prepared.full_image)
        outputs[C.LESION_MASK] = tf.map_fn(
            tf.io.serialize_tensor, prepared.mask, fn_output_signature=tf.string
        )
    return outputs
