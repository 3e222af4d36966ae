"""The typed shape of what the pipeline hands each module file (`custom_config`, component
parameters). Values come from `PipelineConfig` only; there are no defaults here, so a key
the pipeline forgot fails at once with its name instead of silently taking another value.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, TypeVar

T = TypeVar("T")


class SmoteMethod(str, enum.Enum):
    """How the train split is rebalanced."""

    PIXEL = "pixel"  # imbalanced-learn's SMOTE in flattened pixel space (the paper)
    NONE = "none"  # no resampling


class OperatingPoint(str, enum.Enum):
    """How the exported decision threshold is chosen on the eval split."""

    SENSITIVITY = "sensitivity"  # highest threshold with eval sensitivity >= target
    SPECIFICITY = "specificity"  # lowest threshold with eval specificity >= target
    YOUDEN = "youden"  # threshold maximising sensitivity + specificity - 1 on eval


class Backbone(str, enum.Enum):
    """The classifier's backbone (modules/backbones)."""

    EFFICIENTNETV2B0 = "efficientnetv2b0"  # the paper's; ImageNet weights are a download
    EFFICIENTNET_LITE0 = "efficientnet-lite0"  # ImageNet weights from an installed package


class SegmenterEncoder(str, enum.Enum):
    """The lesion segmenter's encoder (modules/segmenter/network.py)."""

    UNET = "unet"  # the U-Net's own, random init
    EFFICIENTNET_LITE0 = "efficientnet-lite0"  # ImageNet-pretrained Lite0 stages


class Optimizer(str, enum.Enum):
    NADAM = "nadam"  # the paper
    ADAMW = "adamw"  # decoupled weight decay


class Schedule(str, enum.Enum):
    CONSTANT = "constant"  # the paper
    COSINE = "cosine"  # linear warm-up, then cosine decay to 0 over the fine-tuning epochs


class Augment(str, enum.Enum):
    """Train-only augmentation (modules/recipe.py); `true` / `false` read as full / none."""

    NONE = "none"
    FLIP = "flip"  # left-right mirror only
    MILD = "mild"  # mirror, +-3.6 degree rotation, 5 % zoom, 3 % shift
    FULL = "full"  # mirror, +-11 degrees, 10 % zoom, 6 % shift, gain, contrast, gamma, speckle

    @classmethod
    def of(cls, value: str | bool) -> Augment:
        if isinstance(value, bool):
            return cls.FULL if value else cls.NONE
        return cls(value)


class KeptEpoch(str, enum.Enum):
    LAST = "last"  # the paper
    BEST_EVAL_AUC = "best_eval_auc"  # weights of the epoch with the highest eval AUC


class ThresholdMethod(str, enum.Enum):
    """How the operating threshold is read off eval (modules/calibration.py)."""

    EMPIRICAL = "empirical"
    BOOTSTRAP = "bootstrap"
    LOGIT_NORMAL = "logit_normal"


def values(choices: type[enum.Enum]) -> list[str]:
    """An enum's values, e.g. for argparse `choices`."""
    return [c.value for c in choices]


class TrainRoi(str, enum.Enum):
    """Which ROI the classifier trains on (with ROI on); the served model draws its own."""

    MASK = "mask"  # the radiologist's mask (the paper): serving without one is a shift
    PREDICTED = "predicted"  # the segmenter's mask, as the served model computes it


class Architecture(str, enum.Enum):
    """How the lesion is found and judged (modules/joint.py)."""

    TWO_STAGE = "two-stage"  # a separate segmenter draws the ROI, the classifier judges it
    JOINT = "joint"  # one network: shared encoder, lesion decoder, mask-attention head


class RoiMode(str, enum.Enum):
    """What the ROI does to the image (with ROI on)."""

    MASK = "mask"  # image x mask (the paper): the lesion is a small patch of the frame
    CROP = "crop"  # the mask's box + margin resized to the input: the lesion fills the frame


def from_custom_config(cls: type[T], custom_config: dict[str, Any] | None) -> T:
    """`cls(**custom_config)`, with an error that lists missing and unknown keys."""
    given = dict(custom_config or {})
    names = {f.name for f in dataclasses.fields(cls)}
    missing, unknown = sorted(names - set(given)), sorted(set(given) - names)
    if missing or unknown:
        raise ValueError(
            f"{cls.__name__}: custom_config is missing {missing} / has unknown {unknown}; "
            "the pipeline (pipeline/pipeline.py) builds it from PipelineConfig"
        )
    return cls(**given)


@dataclasses.dataclass(frozen=True)
class TransformOptions:
    image_size: int
    roi: bool
    roi_mode: str  # a RoiMode value
    roi_margin: float  # crop: the box widened by this x its longer side on each side
    segmenter_size: int  # 0: no segmenter (ROI off); else the lesion_mask feature's side
    max_pixels: int  # pixel budget of one decoded image (checked from its header)
    code: str  # fingerprint of the code this step runs (pipeline/fingerprint.py): cache key


@dataclasses.dataclass(frozen=True)
class TrainerOptions:
    image_size: int
    roi: bool
    roi_mode: str
    roi_margin: float
    max_pixels: int
    batch_size: int
    epochs: int
    learning_rate: float
    classes: list[str]
    backbone: str  # a modules.backbones name
    weights: str
    recipe: dict[str, Any]  # modules.recipe.Recipe's fields beyond epochs / lr / batch size
    seed: int
    calibrate: bool  # temperature scaling fitted on the eval split
    operating_point: str  # an OperatingPoint value
    operating_target: float  # the sensitivity or specificity it must reach on eval
    threshold_method: str  # modules.calibration.THRESHOLD_METHODS
    mirror_tta: bool  # served logits = mean of the image's and its left-right mirror's
    train_roi: str  # a TrainRoi value
    segmenter_size: int  # 0 when there is no segmenter (ROI off)
    roi_threshold: float  # RoiPostprocess fields, see modules/segmenter/network.py
    roi_dilation: int
    roi_min_area: float
    roi_max_area: float
    architecture: str  # an Architecture value
    mask_loss_weight: float  # joint: weight of the mask's Dice + BCE beside the class loss
    code: str


@dataclasses.dataclass(frozen=True)
class SegmenterOptions:
    image_size: int
    segmenter_size: int
    width: int  # U-Net channels at the first level
    encoder: str  # "unet" (random init) | "efficientnet-lite0" (pretrained encoder)
    encoder_weights: str  # the Lite0 encoder's weights: "imagenet" | "none" | a file
    batch_size: int
    epochs: int
    learning_rate: float
    seed: int
    code: str
