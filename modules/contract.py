"""The names every stage shares, defined once: feature names and kinds, the pixel budget,
splits and file names, classes and label ids, signature, input and output names, metric
names. Ingestion writes them, Transform and the Trainer read them, the exported signatures
answer with them, clients, bench and tests check them. Plain Python with no third-party
import, so a thin client can use it. Reading images and masks is modules/image_io.py;
building the raw tf.Example, modules/raw_examples.py.

The design brief's tables are the source; change a name here and every stage follows.
"""

from __future__ import annotations

from collections.abc import Iterable

# --------------------------------------------------------------------------- raw tf.Example

IMAGE = "image"  # bytes: the encoded image file (PNG / JPEG), unchanged pixels
MASK = "mask"  # bytes: single-channel PNG, union of the lesion masks; b"" when none
LABEL = "label"  # int64: see LABELS
MODALITY = "modality"  # bytes: "ultrasound" | "mri"
DATASET = "dataset"  # bytes: "busi" | "breast_mri" | "synthetic" | ...
IMAGE_ID = "image_id"  # bytes: stable id (relative source path)
GROUP_ID = "group_id"  # bytes: near-duplicate group; a group never spans splits

# name -> tf.train.Feature kind; every raw example carries exactly these, one value each.
RAW_FEATURES: dict[str, str] = {
    IMAGE: "bytes_list",
    MASK: "bytes_list",
    LABEL: "int64_list",
    MODALITY: "bytes_list",
    DATASET: "bytes_list",
    IMAGE_ID: "bytes_list",
    GROUP_ID: "bytes_list",
}

# --------------------------------------------------------------------------- transformed

HAS_MASK = "has_mask"  # int64: 1 when a non-empty lesion mask came with the image
# int64: 1 for the positive class (malignant / sick), 0 for every other: the label of the
# binary metrics, which with three classes are malignant against the rest.
IS_POSITIVE = "is_positive"
# With ROI on, Transform also writes what the lesion segmenter learns from and what the
# classifier's predicted-ROI training reads: the whole image (no ROI) and the lesion mask
# at the segmenter's resolution (serialized uint8 tensors [S, S, 3] and [m, m], 1 = lesion).
FULL_IMAGE = "full_image"
LESION_MASK = "lesion_mask"
# What Transform writes (the image as a serialized uint8 tensor [S, S, 3]).
TRANSFORMED_FEATURES: dict[str, str] = {
    IMAGE: "bytes_list",
    LABEL: "int64_list",
    MODALITY: "bytes_list",
    DATASET: "bytes_list",
    HAS_MASK: "int64_list",
    IS_POSITIVE: "int64_list",
}
ROI_FEATURES: dict[str, str] = {FULL_IMAGE: "bytes_list", LESION_MASK: "bytes_list"}

# Largest image (width x height) any stage decodes: ingestion, Transform and every serving
# signature check it from the file header first. Ultrasound and MRI images are well under
# 1 Mpx (the BUSI working copy: at most 448 x 447); 16 Mpx leaves room for high-resolution
# scanners and bounds one decoded image to 48 MB (uint8) / 192 MB (float32).
DEFAULT_MAX_IMAGE_PIXELS = 16_000_000

# --------------------------------------------------------------------------- splits, files

TRAIN, EVAL, TEST = "train", "eval", "test"
SPLITS = (TRAIN, EVAL, TEST)
SHARD_PREFIX, SHARD_SUFFIX = "data", ".tfrecord.gz"  # OUT/<split>/data-00000-of-00001...
SHARD_GLOB = f"{SHARD_PREFIX}-*{SHARD_SUFFIX}"
MANIFEST = "manifest.json"

# --------------------------------------------------------------------------- classes

# Label ids: 0 = benign / healthy, 1 = malignant / sick (the positive class), 2 = normal.
LABELS: dict[str, int] = {"benign": 0, "malignant": 1, "normal": 2, "healthy": 0, "sick": 1}
POSITIVE_LABEL = 1
LAYOUT_CLASSES: dict[str, tuple[str, ...]] = {
    "busi": ("benign", "malignant", "normal"),
    "mri": ("healthy", "sick"),
}
DEFAULT_CLASSES: dict[str, tuple[str, ...]] = {
    "busi": ("benign", "malignant"),
    "mri": ("healthy", "sick"),
}
LAYOUT_MODALITY = {"busi": "ultrasound", "mri": "mri"}
LAYOUT_DATASET = {"busi": "busi", "mri": "breast_mri"}
SYNTHETIC_DATASET = "synthetic"


def class_names(classes: Iterable[str]) -> list[str]:
    """Class names ordered by label id, e.g. ("malignant", "benign") -> [benign, malignant]."""
    return sorted(classes, key=lambda c: LABELS[c])


def checked_classes(classes: Iterable[str]) -> tuple[str, ...]:
    """A model's classes: known names ordered by label id, the ids 0..n-1 with n >= 2
    (benign,malignant[,normal] or healthy,sick); ValueError saying so otherwise."""
    names = tuple(classes)
    ordered = tuple(class_names(c for c in names if c in LABELS))
    ids = [LABELS[c] for c in ordered]
    if len(names) < 2 or len(ordered) != len(names) or ids != list(range(len(names))):
        raise ValueError(
            f"classes {','.join(names) or '(none)'} do not have label ids 0..n-1 with n >= 2; "
            "use benign,malignant[,normal] or healthy,sick"
        )
    return ordered


def parse_classes(text: str) -> tuple[str, ...]:
    """Every `--classes` flag: comma-separated names, any case, any order -> `checked_classes`;
    its error as argparse.ArgumentTypeError (argparse prints that as the flag's error)."""
    import argparse

    try:
        return checked_classes(c.strip().lower() for c in text.split(",") if c.strip())
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


# --------------------------------------------------------------------------- serving

SERVING_DEFAULT = "serving_default"  # examples -> PREDICT_OUTPUTS
PREDICT_IMAGES = "predict_images"  # image_bytes, mask_bytes -> PREDICT_OUTPUTS
PREDICT_ONLY = "predict_only"  # examples -> CLASS_OUTPUTS (no Grad-CAM)
# examples -> CLASS_OUTPUTS with every request mask ignored: what a client without masks
# gets. The Evaluator gates on it, so the blessed numbers are the deployable ones.
PREDICT_NO_MASK = "predict_no_mask"
TRANSFORM_FEATURES = "transform_features"  # examples -> TRANSFORMED_FEATURES (for TFMA)
PREDICT_SIGNATURES = (PREDICT_IMAGES, SERVING_DEFAULT, PREDICT_ONLY, PREDICT_NO_MASK)

EXAMPLES = "examples"  # input: serialized raw tf.Examples [B]
IMAGE_BYTES = "image_bytes"  # input: encoded images [B]
MASK_BYTES = "mask_bytes"  # input: PNG masks [B], b"" = no mask

PROBABILITIES = "probabilities"  # float32 [B, C]
CLASS_ID = "class_id"  # int64 [B]
POSITIVE_PROBABILITY = "positive_probability"  # float32 [B]: P(label POSITIVE_LABEL)
GRADCAM = "gradcam"  # float32 [B, h, w] in [0, 1]
THRESHOLD = "threshold"  # float32 [B]: the operating threshold chosen on the eval split
# float32 [B]: P(positive) mapped monotonically so that the threshold sits at 0.5 (what the
# Evaluator and the intervals threshold at 0.5, so their metrics are the served decision's)
DECISION_SCORE = "decision_score"
# float32 [B, C]: the decided class as a one-hot row (what TFMA's multi-class metrics count,
# so they are those of the served `class_id`)
CLASS_ONE_HOT = "class_one_hot"
ROI_SOURCE = "roi_source"  # string [B]: one of ROI_SOURCES
ROI_MASK = "roi_mask"  # uint8 [B, m, m], m = ROI_MASK_SIZE: the ROI used (1 = kept)
ROI_GIVEN = "given"  # the request carried a mask: used as given (all-zero: whole image)
ROI_PREDICTED = "predicted"  # the model's own lesion segmenter drew it
ROI_NONE = "none"  # the whole image: ROI off, or no mask given and none found
ROI_SOURCES = (ROI_GIVEN, ROI_PREDICTED, ROI_NONE)
ROI_MASK_SIZE = 24  # 576 bytes per image: enough for an outline on the overlay
CLASS_OUTPUTS = (
    PROBABILITIES,
    CLASS_ID,
    POSITIVE_PROBABILITY,
    THRESHOLD,
    DECISION_SCORE,
    CLASS_ONE_HOT,
    ROI_SOURCE,
    ROI_MASK,
)
PREDICT_OUTPUTS = (*CLASS_OUTPUTS, GRADCAM)
# float32 [B, h, w] in [0, 1]: the joint network's own P(lesion) map (its decoder's output, at
# a quarter of the input side), beside `gradcam` in the signatures that explain; only models
# trained with `architecture = joint` return it.
LESION_PROBABILITY = "lesion_probability"
LESION_MAP_STRIDE = 4  # its side is the input's / 4 (40 x 40 at 160 px)

# Written beside the SavedModel: classes, image size, training summary.
MODEL_INFO = "assets.extra/lesionlens.json"
# TF Serving replays these PredictionLogs when it loads a version, so the first live request
# does not pay for tracing and graph warm-up (serve-dev replays them too).
WARMUP_REQUESTS = "assets.extra/tf_serving_warmup_requests"

# --------------------------------------------------------------------------- metrics

# TFMA metric class -> metric name (the key of thresholds, tables and intervals).
METRICS: dict[str, str] = {
    "ExampleCount": "example_count",
    "BinaryAccuracy": "binary_accuracy",
    "AUC": "auc",
    "Precision": "precision",
    "Recall": "recall",
    "Specificity": "specificity",
    "F1Score": "f1_score",
}
METRIC_NAMES = tuple(METRICS.values())
RATE_METRICS = tuple(m for m in METRIC_NAMES if m != "example_count")
