"""What every set of serving signatures does before its model runs: parse raw tf.Examples,
note which requests carried a mask (or drop every mask: the no-mask signature), and run the
Transform graph; and the `transform_features` signature TFMA calls. One home for the
two-stage signatures (modules/trainer.py) and the joint network's (modules/joint/)."""

from __future__ import annotations

import tensorflow as tf
import tensorflow_transform as tft
import tf_keras as keras

from modules import contract as C

EXAMPLES = tf.TensorSpec([None], tf.string, name=C.EXAMPLES)
IMAGE_BYTES = (
    tf.TensorSpec([None], tf.string, name=C.IMAGE_BYTES),
    tf.TensorSpec([None], tf.string, name=C.MASK_BYTES),
)
_SERVING_SPEC = {
    C.IMAGE: tf.io.FixedLenFeature([1], tf.string),
    C.MASK: tf.io.FixedLenFeature([1], tf.string, default_value=[""]),
    C.MODALITY: tf.io.FixedLenFeature([1], tf.string, default_value=[""]),
    C.DATASET: tf.io.FixedLenFeature([1], tf.string, default_value=[""]),
}


def transformed_requests(
    model: keras.Model, serialized: tf.Tensor, ignore_masks: bool
) -> tuple[dict[str, tf.Tensor], tf.Tensor]:
    """(Transform's features of the requests, given [B]: the request carried mask bytes);
    with `ignore_masks` every request is treated as sent without its mask."""
    parsed = tf.io.parse_example(serialized, _SERVING_SPEC)
    if ignore_masks:
        parsed[C.MASK] = tf.fill(tf.shape(parsed[C.MASK]), "")
    given = tf.strings.length(tf.reshape(parsed[C.MASK], [-1])) > 0
    return model.tft_layer(parsed), given


def transform_features_signature(model: keras.Model, output: tft.TFTransformOutput):
    """examples -> the transformed features (TFMA's preprocessing function)."""
    raw_spec = output.raw_feature_spec()

    @tf.function(autograph=False, input_signature=[EXAMPLES])
    def transform_features(serialized):
        return model.tft_layer(tf.io.parse_example(serialized, raw_spec))

    return transform_features.get_concrete_function()
