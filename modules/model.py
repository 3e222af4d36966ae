"""The classifier (a registered backbone + a linear head) and the in-graph Grad-CAM used by
every serving signature."""

from __future__ import annotations

from dataclasses import dataclass

import tensorflow as tf
import tf_keras as keras

from modules import contract as C
from modules.backbones import (  # noqa: F401 - re-exported: callers catch it from here
    EFFICIENTNETV2B0,
    LAST_CONV_LAYER,
    WeightsUnavailableError,
    backbone,
)

LOGITS_LAYER = "logits"
EPSILON = 1e-8


def build_model(
    num_classes: int,
    image_size: int,
    weights: str,
    backbone_name: str = EFFICIENTNETV2B0,
    dropout: float = 0.0,
) -> keras.Model:
    """One flat functional model (backbone layers inline) so Grad-CAM can reach
    `top_activation`: backbone -> global average pool -> (dropout) -> logits -> softmax.

    weights: "imagenet", "none" (random init) or a path to a weights file of that backbone
    (see `modules.backbones`).
    """
    inputs = keras.Input((image_size, image_size, 3), name=C.IMAGE, dtype=tf.float32)
    features = backbone(backbone_name).features(inputs, weights)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(features)
    if dropout > 0:
        x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    logits = keras.layers.Dense(num_classes, name=LOGITS_LAYER)(x)
    probs = keras.layers.Activation("softmax", name=C.PROBABILITIES, dtype=tf.float32)(logits)
    return keras.Model(inputs, probs, name=f"lesionlens_{backbone_name.replace('-', '_')}")


def backbone_layers(model: keras.Model) -> set[str]:
    """Names of the layers from the input to `top_activation`: what a head-only phase freezes
    (everything after it, the head and a joint network's decoder, learns from the start)."""
    trunk = keras.Model(model.inputs, model.get_layer(LAST_CONV_LAYER).output)
    return {layer.name for layer in trunk.layers}


class GradCam:
    """The model split at the last conv layer: backbone (images -> feature map) and head
    (feature map -> logits). Only the head runs under the gradient tape, so the exported graph
    holds the head's gradient alone, not a backward pass through the backbone."""

    def __init__(self, model: keras.Model):
        self.backbone = keras.Model(model.inputs, model.get_layer(LAST_CONV_LAYER).output)
        self.pool = model.get_layer("avg_pool")
        self.logits = model.get_layer(LOGITS_LAYER)


@dataclass(frozen=True)
class Decision:
    """How logits become the served answer: calibrated probabilities softmax(logits / T);
    `class_id` is the positive class when P(positive) >= threshold, else the likelier of the
    other classes (with two classes: the negative one). With three classes the malignant
    call therefore keeps the operating point chosen for it, e.g. sensitivity >= 0.95.

    mirror_tta: the logits are the mean of the image's and its left-right mirror's (both in
    one batch), so an image and its mirror get the same answer up to float rounding
    (`mirror_logits`)."""

    temperature: float
    threshold: float
    mirror_tta: bool = False


UNCALIBRATED = Decision(temperature=1.0, threshold=0.5)


def predict_with_gradcam(cam: GradCam, images: tf.Tensor, decision: Decision) -> dict:
    """Probabilities, decided class and Grad-CAM of the decided class, per example.

    Grad-CAM (Selvaraju et al.): gradient of the decided class's score (pre-softmax logit)
    w.r.t. the last conv feature map; channel weights = spatial mean of the gradients; ReLU of
    the weighted channel sum; divided by its per-image max (all-zero maps stay zero). Examples
    are independent at inference, so one gradient of the summed scores is per-example exact.

    With `decision.mirror_tta` the score is the decided class's mirror-averaged logit and its
    feature maps are the image's and its mirror's: each map's weighted channel sum (the
    mirror's flipped back) is added before the ReLU, i.e. Grad-CAM over both maps' channels in
    the image's coordinates; an image's mirror therefore gets the mirrored map.
    """
    mirror = decision.mirror_tta
    fmap = cam.backbone(_with_mirrors(images) if mirror else images, training=False)
    with tf.GradientTape() as tape:
        tape.watch(fmap)
        logits = cam.logits(cam.pool(fmap))
        if mirror:
            logits = _mirror_mean(logits)
        outputs = class_outputs(logits, decision)
        score = tf.gather(logits, outputs[C.CLASS_ID], batch_dims=1)
    grads = tape.gradient(score, fmap)
    weights = tf.reduce_mean(grads, axis=[1, 2])
    heat = tf.einsum("bhwk,bk->bhw", fmap, weights)
    if mirror:
        own, mirrored = tf.split(heat, 2, axis=0)
        heat = own + tf.reverse(mirrored, axis=[2])  # the mirror's map flipped back
    heat = tf.nn.relu(heat)
    heat = heat / (tf.reduce_max(heat, axis=[1, 2], keepdims=True) + EPSILON)
    return {**outputs, C.GRADCAM: heat}


def predict_only(cam: GradCam, images: tf.Tensor, decision: Decision) -> dict:
    logits_of = lambda x: cam.logits(cam.pool(cam.backbone(x, training=False)))  # noqa: E731
    return class_outputs(mirror_logits(logits_of, images, decision.mirror_tta), decision)


def mirror_logits(logits_of, images: tf.Tensor, mirror: bool) -> tf.Tensor:
    """`logits_of(images)`; with `mirror`, the mean of the logits of each image and of its
    left-right mirror, computed in one batch and combined symmetrically, so an image and its
    mirror get equal logits up to float rounding: a CPU's kernels may sum in a different order
    for different positions in a batch (seen on AMD EPYC with oneDNN: relative 2e-6), so equal
    is not bitwise. What the served graph, the eval-split fit of the decision and
    bench/recipe.py compute."""
    if not mirror:
        return logits_of(images)
    return _mirror_mean(logits_of(_with_mirrors(images)))


def _with_mirrors(images: tf.Tensor) -> tf.Tensor:
    """[B, H, W, C] -> [2B, H, W, C]: the images, then their left-right mirrors."""
    return tf.concat([images, tf.reverse(images, axis=[2])], axis=0)


def _mirror_mean(x: tf.Tensor) -> tf.Tensor:
    """[2B, ...] from `_with_mirrors` -> [B, ...]: (own + mirror) / 2, which is symmetric in
    the two halves (float addition commutes)."""
    own, mirrored = tf.split(x, 2, axis=0)
    return (own + mirrored) * 0.5


def class_outputs(logits: tf.Tensor, decision: Decision) -> dict[str, tf.Tensor]:
    """Outputs every predict signature shares; positive = label 1 (malignant / sick).

    `decision_score` maps P(positive) piecewise linearly so that the threshold lands on 0.5
    (monotone: same ranking, same AUC): the Evaluator's and the intervals' metrics, which
    count a score above 0.5 as positive, are those of the served decision.
    """
    probs = tf.nn.softmax(logits / decision.temperature, axis=-1)
    positive = probs[:, C.POSITIVE_LABEL]
    t = decision.threshold
    classes = probs.shape[-1]
    is_positive = tf.one_hot(C.POSITIVE_LABEL, classes, on_value=True, off_value=False)
    others = tf.argmax(tf.where(is_positive, -1.0, probs), axis=-1)
    class_id = tf.where(positive >= t, tf.constant(C.POSITIVE_LABEL, tf.int64), others)
    # [0, t) -> [0, 0.5) and [t, 1] -> (0.5, 1]: strictly above 0.5 exactly when called positive
    below = 0.5 * positive / max(t, 1e-6)
    above = 0.5 + 1e-6 + (0.5 - 1e-6) * (positive - t) / max(1.0 - t, 1e-6)
    return {
        C.PROBABILITIES: probs,
        C.CLASS_ID: class_id,
        C.POSITIVE_PROBABILITY: positive,
        C.THRESHOLD: tf.fill(tf.shape(positive), tf.constant(t, tf.float32)),
        C.DECISION_SCORE: tf.where(positive >= t, above, below),
        C.CLASS_ONE_HOT: tf.one_hot(class_id, classes, dtype=tf.float32),
    }
