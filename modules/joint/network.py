"""One network that finds the lesion and judges it: the classifier's pretrained backbone as a
shared encoder, a light U-Net decoder giving P(lesion) at a quarter of the input side, and a
head that pools the encoder's last feature map under that map (mask-attention pooling).

Why: the two-stage design (a separate segmenter, then a classifier on its ROI) cost 1.7x the
classifier at serving and its ROI made the classifier worse; its Grad-CAM peaked in the lesion
for about a fifth of test images. A shared encoder trained for mask and class together gave
the classifier's AUC, the segmenter's Dice and a lesion map inside the lesion for 93 % of
test images in one pass (design brief, "Segmentation-assisted classifier"); an attention-only
head scored higher and pointed better than one with a global-pooling branch beside it.
"""

from __future__ import annotations

import tensorflow as tf
import tf_keras as keras

from modules import contract as C
from modules.backbones import backbone
from modules.joint.attention import ATTENTION_POOL, MaskAttentionPool
from modules.model import LOGITS_LAYER
from modules.segmenter.network import conv_block, dice_bce_loss

DECODER_WIDTH = 16  # decoder channels at stride 4 (x2 at 8 and 16): ~0.2 M weights


def mask_side(image_size: int) -> int:
    """The lesion map's side for an input of `image_size` (a multiple of 32)."""
    return image_size // C.LESION_MAP_STRIDE


def build_joint_model(
    num_classes: int,
    image_size: int,
    weights: str,
    backbone_name: str,
    dropout: float = 0.0,
    width: int = DECODER_WIDTH,
) -> keras.Model:
    """Image [B, S, S, 3] (float 0..255) -> [probabilities [B, C], lesion_probability
    [B, S/4, S/4, 1]]. One flat functional model: the backbone's layers inline, so the
    explanation reaches `top_activation` and the recipe freezes the encoder by layer."""
    if image_size % 32:
        raise ValueError(f"the joint network needs image_size a multiple of 32, got {image_size}")
    spec = backbone(backbone_name)
    inputs = keras.Input((image_size, image_size, 3), name=C.IMAGE, dtype=tf.float32)
    features = spec.features(inputs, weights)
    encoder = keras.Model(inputs, features)
    skips = [encoder.get_layer(name).output for name in spec.skips]  # strides 4, 8, 16
    x = encoder.get_layer(spec.bottom).output  # stride 32
    for level, filters in reversed(list(enumerate((width, 2 * width, 4 * width)))):
        x = keras.layers.Conv2DTranspose(filters, 2, strides=2, name=f"joint_up{level}")(x)
        x = keras.layers.Concatenate(name=f"joint_skip{level}")([x, skips[level]])
        x = conv_block(x, filters, f"joint_dec{level}")
    lesion = keras.layers.Conv2D(
        1, 1, activation="sigmoid", name=C.LESION_PROBABILITY, dtype=tf.float32
    )(x)
    pooled = MaskAttentionPool(name=ATTENTION_POOL)([features, lesion])
    if dropout > 0:
        pooled = keras.layers.Dropout(dropout, name="head_dropout")(pooled)
    logits = keras.layers.Dense(num_classes, name=LOGITS_LAYER)(pooled)
    probs = keras.layers.Activation("softmax", name=C.PROBABILITIES, dtype=tf.float32)(logits)
    name = f"lesionlens_joint_{backbone_name.replace('-', '_')}"
    return keras.Model(inputs, [probs, lesion], name=name)


def is_joint(model: keras.Model) -> bool:
    return any(layer.name == ATTENTION_POOL for layer in model.layers)


def joint_losses(mask_loss_weight: float) -> tuple[dict, dict]:
    """(losses, loss weights) by output: class cross-entropy + weight x (Dice + BCE) of the
    mask. The mask loss is per image, so a sample weight of 0 removes an image without a
    mask from it (modules/joint/data.py)."""
    losses = {
        C.PROBABILITIES: keras.losses.SparseCategoricalCrossentropy(),
        C.LESION_PROBABILITY: dice_bce_loss,
    }
    return losses, {C.PROBABILITIES: 1.0, C.LESION_PROBABILITY: float(mask_loss_weight)}
