"""The joint network's mask-attention pooling layer, alone in its module: loading a saved
joint model (its lesion map's evaluation) needs the layer registered, and importing only this
keeps the segmenter's components independent of the classifier's code (pipeline/fingerprint)."""

from __future__ import annotations

import tensorflow as tf
import tf_keras as keras

ATTENTION_POOL = "attention_pool"


@keras.utils.register_keras_serializable(package="lesionlens")
class MaskAttentionPool(keras.layers.Layer):
    """[feature map [B, h, w, K], attention [B, H, W, 1] in [0, 1]] -> [B, K]: the feature
    map's mean weighted by the attention, averaged down to h x w. `epsilon` keeps an
    all-but-empty attention finite (a map that finds nothing pools almost nothing)."""

    def __init__(self, epsilon: float = 1e-3, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = epsilon

    def call(self, inputs):
        features, attention = inputs
        factor = attention.shape[1] // features.shape[1]  # static: 8 for the lesion map
        weights = tf.nn.avg_pool2d(attention, factor, factor, "VALID")  # ResizeArea has no
        # gradient, and the class loss must reach the decoder through the attention
        total = tf.reduce_sum(weights, axis=[1, 2])
        return tf.reduce_sum(features * weights, axis=[1, 2]) / (total + self.epsilon)

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}
