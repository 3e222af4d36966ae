"""EfficientNetV2B0 classifier and the in-graph Grad-CAM used by every serving signature."""

from __future__ import annotations

import os

import tensorflow as tf
import tf_keras as keras

from modules import contract as C

LAST_CONV_LAYER = "top_activation"  # EfficientNetV2B0's last conv feature map (10x10 at 299)
LOGITS_LAYER = "logits"
EPSILON = 1e-8


class WeightsUnavailableError(RuntimeError):
    """ImageNet weights could not be downloaded (offline machine)."""


def build_model(num_classes: int, image_size: int, weights: str) -> keras.Model:
    """One flat functional model (backbone layers inline) so Grad-CAM can reach `top_activation`.

    weights: "imagenet" (Keras download), "none" (random init) or a path to a no-top weights file.
    """
    inputs = keras.Input((image_size, image_size, 3), name=C.IMAGE, dtype=tf.float32)
    w = None if weights in ("none", "", None) else weights
    if w not in (None, "imagenet") and not os.path.exists(w):
        raise FileNotFoundError(f"weights file not found: {w}")
    try:
        backbone = keras.applications.EfficientNetV2B0(
            include_top=False, weights=w, input_tensor=inputs, include_preprocessing=True
        )
    except Exception as e:  # noqa: BLE001 - Keras raises several types for a failed download
        if w == "imagenet":
            raise WeightsUnavailableError(
                "could not download ImageNet weights for EfficientNetV2B0 "
                f"({type(e).__name__}: {e}). On an offline machine, download "
                "efficientnetv2-b0_notop.h5 elsewhere (https://storage.googleapis.com/"
                "tensorflow/keras-applications/efficientnet_v2/efficientnetv2-b0_notop.h5) and "
                "pass its path: --weights /path/efficientnetv2-b0_notop.h5, or --weights none."
            ) from e
        raise
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(backbone.output)
    logits = keras.layers.Dense(num_classes, name=LOGITS_LAYER)(x)
    probs = keras.layers.Activation("softmax", name=C.PROBABILITIES, dtype=tf.float32)(logits)
    return keras.Model(inputs, probs, name="lesionlens_efficientnetv2b0")


class GradCam:
    """The model split at the last conv layer: backbone (images -> feature map) and head
    (feature map -> logits). Only the head runs under the gradient tape, so the exported graph
    holds the head's gradient alone, not a backward pass through the backbone."""

    def __init__(self, model: keras.Model):
        self.backbone = keras.Model(model.inputs, model.get_layer(LAST_CONV_LAYER).output)
        self.pool = model.get_layer("avg_pool")
        self.logits = model.get_layer(LOGITS_LAYER)


def predict_with_gradcam(cam: GradCam, images: tf.Tensor) -> dict[str, tf.Tensor]:
    """Probabilities, predicted class and Grad-CAM of the predicted class, per example.

    Grad-CAM (Selvaraju et al.): gradient of the predicted class's score (pre-softmax logit)
    w.r.t. the last conv feature map; channel weights = spatial mean of the gradients; ReLU of
    the weighted channel sum; divided by its per-image max (all-zero maps stay zero). Examples
    are independent at inference, so one gradient of the summed scores is per-example exact.
    """
    fmap = cam.backbone(images, training=False)
    with tf.GradientTape() as tape:
        tape.watch(fmap)
        logits = cam.logits(cam.pool(fmap))
        class_id = tf.argmax(logits, axis=-1)
        score = tf.gather(logits, class_id, batch_dims=1)
    grads = tape.gradient(score, fmap)
    weights = tf.reduce_mean(grads, axis=[1, 2])
    heat = tf.nn.relu(tf.einsum("bhwk,bk->bhw", fmap, weights))
    heat = heat / (tf.reduce_max(heat, axis=[1, 2], keepdims=True) + EPSILON)
    return {**_class_outputs(tf.nn.softmax(logits, axis=-1)), C.GRADCAM: heat}


def predict_only(model: keras.Model, images: tf.Tensor) -> dict[str, tf.Tensor]:
    return _class_outputs(model(images, training=False))


def _class_outputs(probs: tf.Tensor) -> dict[str, tf.Tensor]:
    """Outputs every predict signature shares; positive = label 1 (malignant / sick)."""
    return {
        C.PROBABILITIES: probs,
        C.CLASS_ID: tf.argmax(probs, axis=-1),
        C.POSITIVE_PROBABILITY: probs[:, C.POSITIVE_LABEL],
    }
