"""The joint network's served answer: class outputs from the attention-pooled head, its own
lesion map, and an explanation of the decided class faithful to that head.

Why not Grad-CAM: Grad-CAM weights each channel by its spatially averaged gradient, then sums
the activations everywhere, so it ignores where the head pooled; channels that fire on bright
tissue elsewhere light up there too (measured: its peak in the lesion for 8-14 % of test
images). HiResCAM (Draelos & Carin 2020) keeps the gradient element-wise: for a head that
pools and then applies a linear layer, sum_k dS/dA_ijk * A_ijk is exactly position (i, j)'s
share of the score S, so the map is where the evidence was pooled. For a global-average head
it equals Grad-CAM. The score explained is the decided class's logit margin over the others'
mean (for two classes z_c - z_other): evidence *for the decision*, so a benign call shows the
evidence for benign, not the (rightly absent) evidence for malignant.
"""

from __future__ import annotations

import tensorflow as tf
import tf_keras as keras

from modules import contract as C
from modules.backbones import LAST_CONV_LAYER
from modules.joint.attention import ATTENTION_POOL
from modules.model import EPSILON, LOGITS_LAYER, Decision, class_outputs
from modules.segmenter.network import whole_if_empty

METHOD = "HiResCAM of the decided class (logit margin), under the lesion attention"


class JointExplainer:
    """The joint model split at its last conv: the trunk (image -> feature map and lesion map)
    and the head (feature map, attention -> logits). Only the head runs under the gradient
    tape, so the exported graph holds the head's gradient alone."""

    def __init__(self, model: keras.Model):
        self.trunk = keras.Model(
            model.inputs,
            [model.get_layer(LAST_CONV_LAYER).output, model.get_layer(C.LESION_PROBABILITY).output],
        )
        self.pool = model.get_layer(ATTENTION_POOL)
        self.logits = model.get_layer(LOGITS_LAYER)

    def head(self, features: tf.Tensor, attention: tf.Tensor) -> tf.Tensor:
        return self.logits(self.pool([features, attention]))


def attention_of(lesion: tf.Tensor, given: tf.Tensor | None, given_masks: tf.Tensor | None):
    """The head's attention [B, m, m, 1]: the network's own lesion map, or where a request
    carried a mask (research / ORACLE), that mask (an all-zero one: the whole image)."""
    if given is None:
        return lesion
    masks = whole_if_empty(tf.cast(given_masks, tf.float32))[..., None]
    return tf.where(given[:, None, None, None], masks, lesion)


def decided_margin(logits: tf.Tensor, class_id: tf.Tensor) -> tf.Tensor:
    """[B]: the decided class's logit minus the mean of the other classes' logits."""
    chosen = tf.gather(logits, class_id, batch_dims=1)
    classes = tf.cast(tf.shape(logits)[-1], logits.dtype)
    others = (tf.reduce_sum(logits, axis=-1) - chosen) / (classes - 1.0)
    return chosen - others


def predict_joint(
    explainer: JointExplainer,
    images: tf.Tensor,
    decision: Decision,
    given: tf.Tensor | None = None,
    given_masks: tf.Tensor | None = None,
    explain: bool = True,
) -> dict[str, tf.Tensor]:
    """Class outputs, `lesion_probability` [B, m, m] and (with `explain`) `gradcam` [B, h, w]:
    the HiResCAM map of the decided class, ReLU, divided by its per-image maximum.
    Examples are independent at inference (BatchNorm in inference mode, pooling per image),
    so one gradient of the summed scores is per-example exact."""
    features, lesion = explainer.trunk(images, training=False)
    attention = attention_of(lesion, given, given_masks)
    out = {C.LESION_PROBABILITY: lesion[..., 0]}
    if not explain:
        return {**class_outputs(explainer.head(features, attention), decision), **out}
    with tf.GradientTape() as tape:
        tape.watch(features)
        logits = explainer.head(features, attention)
        outputs = class_outputs(logits, decision)
        score = decided_margin(logits, outputs[C.CLASS_ID])
    grads = tape.gradient(score, features)
    heat = tf.nn.relu(tf.reduce_sum(grads * features, axis=-1))
    heat = heat / (tf.reduce_max(heat, axis=[1, 2], keepdims=True) + EPSILON)
    return {**outputs, **out, C.GRADCAM: heat}
