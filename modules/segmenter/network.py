"""The lesion segmenter and the ROI a served model uses when a request carries no mask.

Why a segmenter at all: the paper's ROI multiplies each image by the mask a radiologist drew
on that very image; a new patient's image has none, and a classifier trained on masked
images scored below chance on whole ones. The served graph therefore draws its own mask.

Why this network: a four-level U-Net (16-128 channels, ~0.5 M weights) at a low resolution
(`segmenter_size`, 64-96 px): the ROI only has to find the lesion's extent, and it must cost
little next to the classifier on a CPU server (bench/serving_latency.py measures the ratio).
"""

from __future__ import annotations

from dataclasses import dataclass

import tensorflow as tf
import tf_keras as keras

from modules import contract as C
from modules import roi_crop
from modules.options import RoiMode

PROBABILITY = "lesion_probability"
WIDTH = 16


@dataclass(frozen=True)
class RoiPostprocess:
    """Probability map -> ROI mask. Measured on BUSI's eval split (docs/RESULTS.md): keeping
    only the component around the most confident pixel removes scattered false positives,
    and a small dilation keeps the lesion's margin, which carries malignancy cues."""

    threshold: float  # P(lesion) above which a pixel is lesion
    dilation: int  # pixels (at the segmenter's resolution) added around the kept component
    min_area: float  # fraction of the image; a smaller predicted ROI falls back to the whole
    max_area: float  # ... and so does a larger one (nothing specific was found)


def postprocess_of(options) -> RoiPostprocess:
    """From any options object with the `roi_*` fields (TrainerOptions, component params)."""
    return RoiPostprocess(
        threshold=float(options.roi_threshold),
        dilation=int(options.roi_dilation),
        min_area=float(options.roi_min_area),
        max_area=float(options.roi_max_area),
    )


def conv_block(x, filters: int, name: str):
    for i in (1, 2):
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_c{i}")(x)
        # momentum 0.9, not Keras' 0.99: a few hundred steps on a small dataset otherwise
        # leave the inference statistics near their init (demo: eval Dice 0.00 vs 0.94)
        x = keras.layers.BatchNormalization(momentum=0.9, name=f"{name}_bn{i}")(x)
        x = keras.layers.Activation("relu", name=f"{name}_a{i}")(x)
    return x


def build_segmenter(image_size: int, mask_size: int, width: int = WIDTH) -> keras.Model:
    """Whole image [B, S, S, 3] (float 0..255, as the classifier's input) -> P(lesion)
    [B, m, m, 1]; the input is resized to m = `mask_size` inside the model. `width`: the
    first level's channels, doubled at each of the three levels below."""
    if mask_size % 8:
        raise ValueError(f"segmenter_size must be a multiple of 8, got {mask_size}")
    inputs = keras.Input((image_size, image_size, 3), name=C.FULL_IMAGE, dtype=tf.float32)
    x = keras.layers.Resizing(mask_size, mask_size, name="to_mask_size")(inputs)
    x = keras.layers.Rescaling(1.0 / 255.0, name="rescale")(x)
    skips = []
    widths = (width, 2 * width, 4 * width)
    for level, filters in enumerate(widths):
        x = conv_block(x, filters, f"down{level}")
        skips.append(x)
        x = keras.layers.MaxPooling2D(name=f"pool{level}")(x)
    x = conv_block(x, 8 * width, "bottom")
    for level, filters in reversed(list(enumerate(widths))):
        x = keras.layers.Conv2DTranspose(filters, 2, strides=2, name=f"up{level}")(x)
        x = keras.layers.Concatenate(name=f"skip{level}")([x, skips[level]])
        x = conv_block(x, filters, f"dec{level}")
    outputs = keras.layers.Conv2D(1, 1, activation="sigmoid", name=PROBABILITY, dtype=tf.float32)(x)
    return keras.Model(inputs, outputs, name="lesionlens_segmenter")


# Lite0 blocks whose outputs feed the decoder: strides 2, 4, 8, 16 (skips) and 32 (bottom)
LITE0_SKIPS = ("block0_project_bn", "block2_add", "block4_add", "block10_add")
LITE0_BOTTOM = "block15_project_bn"


def build_lite0_segmenter(
    image_size: int, mask_size: int, width: int = WIDTH, weights: str = "imagenet"
) -> keras.Model:
    """The same contract as `build_segmenter` (whole image [B, S, S, 3] in 0..255 ->
    P(lesion) [B, m, m, 1]), with EfficientNet-Lite0's stages as the encoder (ImageNet
    weights offline, BatchNorm in inference mode) and a U-Net decoder fed by its stride
    2 / 4 / 8 / 16 feature maps. `mask_size` must be a multiple of 32."""
    from modules.backbones import lite0, pretrained

    if mask_size % 32:
        raise ValueError(f"a Lite0 encoder needs segmenter_size a multiple of 32, got {mask_size}")
    inputs = keras.Input((image_size, image_size, 3), name=C.FULL_IMAGE, dtype=tf.float32)
    x = keras.layers.Resizing(mask_size, mask_size, name="to_mask_size")(inputs)
    features = lite0.lite0_features(x)
    encoder = keras.Model(inputs, features)
    if weights not in ("none", "", None):
        pretrained.load_into(encoder, pretrained.lite0_checkpoint(weights)[0])
    for layer in encoder.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False  # pretrained statistics, inference mode
    skips = [encoder.get_layer(name).output for name in LITE0_SKIPS]
    x = encoder.get_layer(LITE0_BOTTOM).output
    for level, filters in reversed(list(enumerate((width, 2 * width, 4 * width, 8 * width)))):
        x = keras.layers.Conv2DTranspose(filters, 2, strides=2, name=f"up{level + 1}")(x)
        x = keras.layers.Concatenate(name=f"skip{level + 1}")([x, skips[level]])
        x = conv_block(x, filters, f"dec{level + 1}")
    x = keras.layers.Conv2DTranspose(width, 2, strides=2, name="up0")(x)
    x = conv_block(x, width, "dec0")
    outputs = keras.layers.Conv2D(1, 1, activation="sigmoid", name=PROBABILITY, dtype=tf.float32)(x)
    return keras.Model(inputs, outputs, name="lesionlens_segmenter_lite0")


def dice_bce_loss(y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
    """Soft Dice (per image; an empty target with an empty prediction scores 1) + BCE."""
    y_true = tf.cast(y_true, tf.float32)
    inter = tf.reduce_sum(y_true * y_pred, axis=[1, 2, 3])
    total = tf.reduce_sum(y_true + y_pred, axis=[1, 2, 3])
    dice = (2.0 * inter + 1.0) / (total + 1.0)
    bce = tf.reduce_mean(keras.losses.binary_crossentropy(y_true, y_pred), axis=[1, 2])
    return (1.0 - dice) + bce


def dice_iou(truth: tf.Tensor, predicted: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Per-image Dice and IoU of two binary masks [B, m, m] (both empty: 1)."""
    t = tf.cast(tf.cast(truth, tf.float32) > 0, tf.float32)
    p = tf.cast(tf.cast(predicted, tf.float32) > 0, tf.float32)
    inter = tf.reduce_sum(t * p, axis=[1, 2])
    total = tf.reduce_sum(t, axis=[1, 2]) + tf.reduce_sum(p, axis=[1, 2])
    empty = tf.equal(total, 0.0)
    dice = tf.where(empty, 1.0, 2.0 * inter / tf.maximum(total, 1.0))
    iou = tf.where(empty, 1.0, inter / tf.maximum(total - inter, 1.0))
    return dice, iou


def _runs(mask: tf.Tensor, axis: int) -> tuple[tf.Tensor, tf.Tensor]:
    """mask [B, h, w] 0/1 -> (id of each pixel's run of mask pixels along `axis` (1: columns,
    2: rows), unique in the batch; the number of ids). Runs are numbered by counting their
    starts along each line; pixels off the mask share their line's id 0 and stay 0."""
    shape = tf.shape(mask)
    b, h, w = shape[0], shape[1], shape[2]
    if axis == 2:
        before = tf.pad(mask[:, :, :-1], [[0, 0], [0, 0], [1, 0]])
        lines, length = tf.reshape(tf.range(b * h), [b, h, 1]), w
    else:
        before = tf.pad(mask[:, :-1, :], [[0, 0], [1, 0], [0, 0]])
        lines, length = tf.reshape(tf.range(b * w), [b, 1, w]), h
    run = tf.cumsum(mask * (1.0 - before), axis=axis) * mask
    return tf.cast(run, tf.int32) + lines * (length + 1), b * h * w + b * h + b * w


def _component_at_peak(probability: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """The 8-connected component of `mask` [B, m, m, 1] that holds the most confident
    lesion pixel. Grown from that pixel by whole horizontal runs, whole vertical runs and
    one 3x3 step (the diagonals) until the 3x3 step adds nothing: the same set as a
    pixel-by-pixel geodesic dilation, in 2-4 steps instead of one per pixel of the lesion's
    extent (40-75 on BUSI), which made the post-processing cost as much as the segmenter at
    batch 16 (docs/RESULTS.md)."""
    mask = mask[..., 0]
    flat = tf.reshape(probability[..., 0] * mask, [tf.shape(mask)[0], -1])
    seed = tf.one_hot(tf.argmax(flat, axis=1), tf.shape(flat)[1], dtype=tf.float32)
    seed = tf.reshape(seed, tf.shape(mask)) * mask
    runs = [_runs(mask, axis) for axis in (2, 1)]

    def grow(component, _):
        for ids, n in runs:  # a run touching the component joins it whole
            component = tf.gather(tf.math.unsorted_segment_max(component, ids, n), ids) * mask
        bigger = tf.nn.max_pool2d(component[..., None], 3, 1, "SAME")[..., 0] * mask
        # nothing next to it left to add: it is the whole component (one step fewer than
        # waiting for a step that changes nothing at all)
        return bigger, tf.reduce_any(bigger > component)

    component, _ = tf.while_loop(
        lambda _, changed: changed, grow, (seed, tf.constant(True)), maximum_iterations=10_000
    )
    return component[..., None]


def predicted_roi(
    segmenter: keras.Model, full_images: tf.Tensor, post: RoiPostprocess
) -> tuple[tf.Tensor, tf.Tensor]:
    """ROI masks [B, m, m] float32 (1 = kept) and whether one was found [B] bool."""
    return roi_from_probability(segmenter(full_images, training=False), post)


def roi_from_probability(
    probability: tf.Tensor, post: RoiPostprocess
) -> tuple[tf.Tensor, tf.Tensor]:
    """P(lesion) [B, m, m, 1] -> ROI masks [B, m, m] and found [B]. Where none was found
    (area outside [min_area, max_area]: an all-black image, nothing lesion-like, or
    everything), the mask is all ones: the whole image."""
    mask = tf.cast(probability > post.threshold, tf.float32)
    mask = _component_at_peak(probability, mask)
    if post.dilation > 0:
        mask = tf.nn.max_pool2d(mask, 2 * post.dilation + 1, 1, "SAME")
    area = tf.reduce_mean(mask, axis=[1, 2, 3])
    found = (area >= post.min_area) & (area <= post.max_area)
    mask = tf.where(found[:, None, None, None], mask, tf.ones_like(mask))
    return mask[..., 0], found


def crop_margin_of(roi_mode: str, roi_margin: float) -> float | None:
    """The `crop_margin` of `apply_roi` / `choose_roi`: the margin with `roi_mode="crop"`,
    None (image x mask) otherwise."""
    return roi_margin if RoiMode(roi_mode) == RoiMode.CROP else None


def apply_roi(
    images: tf.Tensor, masks: tf.Tensor, crop_margin: float | None = None
) -> tuple[tf.Tensor, tf.Tensor]:
    """images [B, S, S, 3] x masks [B, m, m] -> the ROI images [B, S, S, 3] and their boxes
    [B, 4]: the images x the masks resized to S (nearest: a binary ROI), or with a
    `crop_margin` the masks' boxes cropped (modules/roi_crop.py); the boxes are the whole
    image for masking."""
    if crop_margin is not None:
        boxes = roi_crop.mask_boxes(masks, crop_margin)
        return roi_crop.crop(images, boxes, images.shape[1]), boxes
    big = tf.image.resize(masks[..., None], tf.shape(images)[1:3], method="nearest")
    whole = tf.tile(tf.constant([roi_crop.WHOLE]), [tf.shape(images)[0], 1])
    return images * big, whole


def whole_if_empty(masks: tf.Tensor) -> tf.Tensor:
    """[B, h, w] (any trailing dims) -> the same, an all-zero mask replaced by all ones: a
    request's empty mask means the whole image (the two-stage ROI, the joint attention)."""
    empty = tf.reduce_all(tf.equal(masks, 0), axis=tf.range(1, tf.rank(masks)))
    shape = tf.concat([tf.shape(empty), tf.ones([tf.rank(masks) - 1], tf.int32)], 0)
    return tf.where(tf.reshape(empty, shape), tf.ones_like(masks), masks)


def small_mask(masks: tf.Tensor) -> tf.Tensor:
    """[B, h, w] 0/1 -> the `roi_mask` output: uint8 [B, ROI_MASK_SIZE, ROI_MASK_SIZE]."""
    m = C.ROI_MASK_SIZE
    resized = tf.image.resize(tf.cast(masks, tf.float32)[..., None], [m, m], method="area")
    return tf.cast(resized[..., 0] >= 0.5, tf.uint8)


def choose_roi(
    segmenter: keras.Model | None,
    post: RoiPostprocess,
    roi_images: tf.Tensor,
    full_images: tf.Tensor,
    given: tf.Tensor,
    given_masks: tf.Tensor,
    crop_margin: float | None = None,
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """The classifier's input per example, with `roi_source`, `roi_mask` and the crop box.

    roi_images / full_images: float [B, S, S, 3], the given-mask ROI image (the whole image
    when the mask was empty) and the whole image; given: [B] bool, the request carried mask
    bytes; given_masks: [B, h, w] 0/1. A given mask is used as it is (research / oracle
    mode, the same path as before the segmenter existed); without one the segmenter draws
    the ROI (it runs only when some example of the batch needs it); where it finds nothing
    usable, or there is no segmenter (ROI off), the whole image is used. With a
    `crop_margin` (`roi_mode="crop"`) the ROI is the box around the mask, `roi_mask` is
    that box and the returned boxes [B, 4] place the classifier's input in the whole image
    (for Grad-CAM); otherwise they are the whole image.
    """
    batch = tf.shape(roi_images)[0]
    m = C.ROI_MASK_SIZE
    whole = tf.ones([batch, m, m], tf.uint8)
    whole_boxes = tf.tile(tf.constant([roi_crop.WHOLE]), [batch, 1])
    if segmenter is None:  # ROI off: the whole image, whatever the request carried
        source = tf.fill([batch], C.ROI_NONE)
        return full_images, source, whole, whole_boxes
    if crop_margin is None:
        given_boxes = whole_boxes
        given_small = small_mask(whole_if_empty(given_masks))
    else:
        given_boxes = roi_crop.mask_boxes(given_masks, crop_margin)
        given_small = roi_crop.box_masks(given_boxes, m)
    side = segmenter.output_shape[1]

    def skip():
        return tf.ones([batch, side, side]), tf.zeros([batch], tf.bool)

    masks, found = tf.cond(
        tf.reduce_all(given), skip, lambda: predicted_roi(segmenter, full_images, post)
    )
    predicted, predicted_boxes = apply_roi(full_images, masks, crop_margin)
    g = given[:, None, None, None]
    images = tf.where(g, roi_images, tf.where(found[:, None, None, None], predicted, full_images))
    source = tf.where(
        given,
        C.ROI_GIVEN,
        tf.where(found, tf.constant(C.ROI_PREDICTED), tf.constant(C.ROI_NONE)),
    )
    predicted_small = (
        small_mask(masks) if crop_margin is None else roi_crop.box_masks(predicted_boxes, m)
    )
    roi_mask = tf.where(given[:, None, None], given_small, predicted_small)
    boxes = tf.where(given[:, None], given_boxes, predicted_boxes)
    return images, source, roi_mask, boxes
