"""What the joint network trains on: the whole image, its class and its lesion mask at the
lesion map's side, with a per-image weight that keeps images without a mask out of the mask
loss; and augmentation that moves image and mask together."""

from __future__ import annotations

import logging

import numpy as np
import tensorflow as tf
import tf_keras as keras

from modules import contract as C
from modules import recipe
from modules.options import Augment
from modules.training import transformed_records
from modules.transform import decode_images, decode_masks

AUTOTUNE = tf.data.AUTOTUNE
NORMAL = C.LABELS["normal"]
log = logging.getLogger(__name__)

Batch = tuple[tf.Tensor, dict[str, tf.Tensor], dict[str, tf.Tensor]]


def joint_dataset(
    file_patterns: list[str],
    image_size: int,
    mask_size: int,
    batch_size: int,
    class_weights: dict[int, float] | None = None,
    shuffle_seed: int | None = None,
) -> tf.data.Dataset:
    """(image float32 [B, S, S, 3], targets, sample weights) batches; targets and weights by
    output name: the label and its class weight (1 without `class_weights`), the mask
    float32 [B, m, m, 1] and its weight: 1 when the image came with a non-empty mask or is
    `normal` (a normal breast has no lesion: an empty mask is its truth), else 0 (an MRI
    image, a lesion image whose mask is missing or empty), so it adds only the class loss."""
    spec = {
        C.IMAGE: tf.io.FixedLenFeature([], tf.string),
        C.LABEL: tf.io.FixedLenFeature([], tf.int64),
        C.HAS_MASK: tf.io.FixedLenFeature([], tf.int64),
        C.LESION_MASK: tf.io.FixedLenFeature([], tf.string),
    }
    table = np.ones(max(3, *(class_weights or {0: 1}).keys()) + 1, np.float32)
    for label, weight in (class_weights or {}).items():
        table[label] = weight
    table = tf.constant(table)

    @tf.autograph.experimental.do_not_convert
    def parse(serialized):
        d = tf.io.parse_example(serialized, spec)
        labels = d[C.LABEL]
        masks = tf.cast(decode_masks(d[C.LESION_MASK], mask_size), tf.float32)[..., None]
        known = (d[C.HAS_MASK] > 0) | tf.equal(labels, NORMAL)
        targets = {C.PROBABILITIES: labels, C.LESION_PROBABILITY: masks}
        weights = {
            C.PROBABILITIES: tf.gather(table, labels),
            C.LESION_PROBABILITY: tf.cast(known, tf.float32),
        }
        return decode_images(d[C.IMAGE], image_size), targets, weights

    ds = transformed_records(file_patterns, shuffle_seed).batch(batch_size)
    return ds.map(parse, num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE)


def joint_augmented(ds: tf.data.Dataset, seed: int, level: str | bool) -> tf.data.Dataset:
    """`recipe.augmented` for joint batches: the geometry (flip, rotation, zoom, shift) runs
    once on the image and its mask stacked as a fourth channel, so they stay aligned; the
    intensity changes touch the image only."""
    level = Augment.of(level)
    if level == Augment.NONE:
        return ds
    geometry, intensity = recipe.augmenter_parts(seed, level)
    move = keras.Sequential(geometry, name="joint_geometry")
    shade = keras.Sequential(intensity, name="joint_intensity") if intensity else None

    def augment(images, targets, weights):
        masks = targets[C.LESION_PROBABILITY]
        side = tf.shape(masks)[1:3]
        big = tf.image.resize(masks, tf.shape(images)[1:3], method="nearest")
        moved = move(tf.concat([images, big * 255.0], axis=-1), training=True)
        images, big = moved[..., :3], moved[..., 3:] / 255.0
        if shade is not None:
            images = recipe.gamma_and_speckle(shade(images, training=True), seed)
        masks = tf.cast(tf.image.resize(big, side, method="area") >= 0.5, tf.float32)
        return images, {**targets, C.LESION_PROBABILITY: masks}, weights

    return ds.map(augment, num_parallel_calls=AUTOTUNE)


def mask_report(labels: np.ndarray, has_mask: np.ndarray, classes: list[str]) -> dict[str, int]:
    """Counts the Trainer logs before training: images in the mask loss, and the two cases a
    user must hear about (never silently dropped): a benign / malignant image without a
    mask (class loss only) and a `normal` image that carries a mask (its mask is trained as
    given; a normal breast should have none)."""
    normal = labels == NORMAL
    report = {
        "images": int(len(labels)),
        "in_mask_loss": int(((has_mask > 0) | normal).sum()),
        "lesion_images_without_mask": int(((has_mask == 0) & ~normal).sum()),
        "normal_images_with_mask": int(((has_mask > 0) & normal).sum()),
    }
    log.info(
        "lesion map: %d of %d training images in the mask loss", report["in_mask_loss"], len(labels)
    )
    if report["lesion_images_without_mask"]:
        log.warning(
            "%d of %d training images of class %s have no lesion mask (or an empty one): "
            "they train the class only, not the lesion map",
            report["lesion_images_without_mask"],
            report["images"],
            "/".join(c for c in classes if c != "normal"),
        )
    if report["normal_images_with_mask"]:
        log.warning(
            "%d normal training images carry a non-empty mask: trained as given",
            report["normal_images_with_mask"],
        )
    return report
