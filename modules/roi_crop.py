"""The lesion-centred crop ROI (`roi_mode="crop"`): the ROI's bounding box, squared and widened
by a margin, resized to the classifier's input, so the lesion fills the frame instead of a
30-50 px patch of a 160 px image, and the tissue around it (its margin, shadowing) stays.

One box rule for every path: the given mask at Transform (cropped from the original image),
the segmenter's mask in PredictedRoi and in the served graph (cropped from the whole image at
the classifier's size). Boxes are in normalised coordinates (y1, x1, y2, x2) and square in
them, i.e. square in the whole-image frame the classifier sees when ROI is off, so a lesion's
aspect ratio is the same on every path.
"""

from __future__ import annotations

import tensorflow as tf

WHOLE = (0.0, 0.0, 1.0, 1.0)
MIN_SIDE = 0.125  # a tiny mask is not zoomed past 8x


def _extent(present: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """[B, n] bool -> first and one-past-last true index / n, float32 [B] each."""
    n = tf.shape(present)[1]
    first = tf.argmax(tf.cast(present, tf.int32), axis=1, output_type=tf.int32)
    last = n - tf.argmax(tf.cast(present[:, ::-1], tf.int32), axis=1, output_type=tf.int32)
    scale = tf.cast(n, tf.float32)
    return tf.cast(first, tf.float32) / scale, tf.cast(last, tf.float32) / scale


def mask_boxes(masks: tf.Tensor, margin: float) -> tf.Tensor:
    """[B, h, w] masks (nonzero = lesion) -> [B, 4] float32 boxes: the mask's bounding box
    widened by `margin` x its longer side on each side, made square (at least MIN_SIDE, at
    most the whole image) and moved inside the image without leaving the lesion. An empty
    mask gives the whole image."""
    lesion = tf.cast(masks, tf.float32) > 0
    y1, y2 = _extent(tf.reduce_any(lesion, axis=2))
    x1, x2 = _extent(tf.reduce_any(lesion, axis=1))
    side = tf.maximum(y2 - y1, x2 - x1) * (1.0 + 2.0 * margin)
    side = tf.clip_by_value(side, MIN_SIDE, 1.0)
    top = tf.clip_by_value((y1 + y2 - side) / 2.0, 0.0, 1.0 - side)
    left = tf.clip_by_value((x1 + x2 - side) / 2.0, 0.0, 1.0 - side)
    boxes = tf.stack([top, left, top + side, left + side], axis=1)
    empty = ~tf.reduce_any(lesion, axis=[1, 2])
    return tf.where(empty[:, None], tf.constant([WHOLE]), boxes)


def crop(images: tf.Tensor, boxes: tf.Tensor, size: int) -> tf.Tensor:
    """0..255 [B, H, W, C] x boxes [B, 4] -> float32 [B, size, size, C] (bilinear), rounded
    to whole pixel values: what storing it as uint8 keeps, so every path sees the same."""
    index = tf.range(tf.shape(images)[0])
    cropped = tf.image.crop_and_resize(tf.cast(images, tf.float32), boxes, index, [size, size])
    return tf.clip_by_value(tf.round(cropped), 0.0, 255.0)


def box_masks(boxes: tf.Tensor, side: int) -> tf.Tensor:
    """The `roi_mask` of a crop: uint8 [B, side, side], 1 where a cell's centre is inside
    the box."""
    centres = (tf.range(side, dtype=tf.float32) + 0.5) / side
    rows = (centres >= boxes[:, 0:1]) & (centres < boxes[:, 2:3])  # [B, side]
    cols = (centres >= boxes[:, 1:2]) & (centres < boxes[:, 3:4])
    return tf.cast(rows[:, :, None] & cols[:, None, :], tf.uint8)


def to_whole_frame(heatmaps: tf.Tensor, boxes: tf.Tensor) -> tf.Tensor:
    """Grad-CAM of a crop [B, h, w] -> the same map in the whole image's frame (0 outside the
    box), renormalised to [0, 1]: what an overlay on the request's image needs."""
    height, width = heatmaps.shape[1], heatmaps.shape[2]
    y1, x1, y2, x2 = tf.unstack(boxes, axis=1)
    dy, dx = tf.maximum(y2 - y1, 1e-6), tf.maximum(x2 - x1, 1e-6)
    inverse = tf.stack([-y1 / dy, -x1 / dx, (1.0 - y1) / dy, (1.0 - x1) / dx], axis=1)
    index = tf.range(tf.shape(heatmaps)[0])
    whole = tf.image.crop_and_resize(
        heatmaps[..., None], inverse, index, [height, width], extrapolation_value=0.0
    )[..., 0]
    peak = tf.reduce_max(whole, axis=[1, 2], keepdims=True)
    return tf.math.divide_no_nan(whole, peak)
