"""Transformed examples through the segmenter, batch by batch: what both segmenter
components read."""

from __future__ import annotations

from collections.abc import Iterator

import tensorflow as tf
import tf_keras as keras

from modules import contract as C
from modules.segmenter import network as S
from modules.transform import decode_images, decode_masks

BATCH = 32


def segment_records(
    segmenter: keras.Model,
    records: list[bytes],
    image_size: int,
    post: S.RoiPostprocess,
) -> Iterator[tuple[list[bytes], dict[str, tf.Tensor]]]:
    """(records, {full_image, lesion_mask, probability, roi, found}) per batch."""
    side = segmenter.output_shape[1]
    spec = {
        C.FULL_IMAGE: tf.io.FixedLenFeature([], tf.string),
        C.LESION_MASK: tf.io.FixedLenFeature([], tf.string),
    }
    for start in range(0, len(records), BATCH):
        batch = records[start : start + BATCH]
        parsed = tf.io.parse_example(tf.constant(batch), spec)
        full = decode_images(parsed[C.FULL_IMAGE], image_size)
        probability = segmenter(full, training=False)
        roi, found = S.roi_from_probability(probability, post)
        yield (
            batch,
            {
                C.FULL_IMAGE: full,
                C.LESION_MASK: decode_masks(parsed[C.LESION_MASK], side),
                "probability": probability[..., 0],
                "roi": roi,
                "found": found,
            },
        )
