"""The facts every stage shares, defined once: ingestion writes them, Transform and the
Trainer read them, the exported signatures answer with them, clients, bench and tests check
them. Plain Python (no TensorFlow, Beam or Pillow at import), so a thin client can use it.

The design brief's tables are the source; change a name here and every stage follows.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

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

# --------------------------------------------------------------------------- masks

# BUSI's rule: "NAME_mask.png", "NAME_mask_1.png", ... belong to image "NAME.<ext>".
MASK_RE = re.compile(r"^(?P<stem>.+)_mask(?:_(?P<k>\d+))?\.png$", re.IGNORECASE)


def mask_stem(filename: str) -> str | None:
    """The image stem a mask file belongs to, or None when `filename` is not a mask."""
    m = MASK_RE.match(filename)
    return m["stem"] if m else None


def mask_order(filename: str) -> int:
    """0 for NAME_mask.png, k for NAME_mask_k.png (masks are unioned in this order)."""
    m = MASK_RE.match(filename)
    return int(m["k"] or 0) if m else -1


def sibling_masks(image_path: str) -> list[str]:
    """The mask files of an image in its folder (BUSI layout), in union order."""
    import os

    folder, name = os.path.split(image_path)
    stem = os.path.splitext(name)[0]
    found = [f for f in os.listdir(folder or ".") if mask_stem(f) == stem]
    return [os.path.join(folder, f) for f in sorted(found, key=mask_order)]


def open_image(
    path: str,
    data: bytes,
    what: str,
    max_pixels: int | None = None,
    size: tuple[int, int] | None = None,
    decode: bool = True,
):
    """A fully decoded Pillow image; ValueError naming the file when it is empty, not an
    image, truncated, or (checked from the header, before decoding) above `max_pixels` or
    not of `size` (width, height). `decode=False` checks a PNG's chunks and checksums
    without inflating it (40x cheaper; the model decodes it anyway) and returns it unloaded."""
    import io

    from PIL import Image, UnidentifiedImageError

    if not data:
        raise ValueError(f"{path}: empty {what} file")
    try:
        img = Image.open(io.BytesIO(data))  # reads the header only
    except UnidentifiedImageError:
        raise ValueError(f"{path}: not a readable image ({what})") from None
    except Image.DecompressionBombError as e:  # Pillow's own limit, far above ours
        raise ValueError(f"{path}: {what} is above the pixel budget of {max_pixels}: {e}") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"{path}: unreadable or truncated {what}: {e}") from None
    if max_pixels is not None and img.width * img.height > max_pixels:
        raise ValueError(
            f"{path}: {what} is {img.width}x{img.height} pixels, above the pixel budget of "
            f"{max_pixels}"
        )
    if size is not None and img.size != tuple(size):
        raise ValueError(
            f"{path}: {what} size {img.width}x{img.height} differs from image size "
            f"{size[0]}x{size[1]}"
        )
    try:
        if decode or img.format != "PNG":
            img.load()
        else:
            img.verify()  # the object is unusable afterwards: reopen the header
            img = Image.open(io.BytesIO(data))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ValueError(f"{path}: unreadable or truncated {what}: {e}") from None
    return img


def mask_union(paths: list[str], read: Callable[[str], bytes], size: tuple[int, int] | None):
    """Logical OR (bool [H, W]) of the masks: > 0 is lesion, whatever the pixel mode.

    `size` = (width, height) of the image the masks belong to (None: the first mask's).
    Raises ValueError naming the mask file that is unreadable or of another size.
    """
    import numpy as np

    union = None
    for path in paths:
        img = open_image(path, read(path), "mask", size=size)
        size = size or img.size
        pixels = np.asarray(img.convert("L")) > 0
        union = pixels if union is None else union | pixels
    if union is None:
        raise ValueError("no mask files given")
    return union


def encode_mask(union) -> bytes:
    """The `mask` feature: a single-channel PNG, 255 = lesion."""
    import io

    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(union, dtype=np.uint8) * 255, mode="L").save(buf, format="PNG")
    return buf.getvalue()


# --------------------------------------------------------------------------- builder


def build_raw_example(
    image: bytes,
    mask: bytes = b"",
    *,
    label: int | None = None,
    modality: str | bytes = "",
    dataset: str | bytes = "",
    image_id: str | bytes = "",
    group_id: str | bytes = "",
) -> bytes:
    """A serialized raw tf.Example of the contract. `label` is left out when None (unknown at
    inference; the serving signatures do not need it)."""
    from tensorflow.core.example import example_pb2, feature_pb2

    def b(value: str | bytes) -> feature_pb2.Feature:
        raw = value.encode() if isinstance(value, str) else bytes(value)
        return feature_pb2.Feature(bytes_list=feature_pb2.BytesList(value=[raw]))

    feats = {
        IMAGE: b(image),
        MASK: b(mask or b""),
        MODALITY: b(modality),
        DATASET: b(dataset),
        IMAGE_ID: b(image_id),
        GROUP_ID: b(group_id),
    }
    if label is not None:
        feats[LABEL] = feature_pb2.Feature(int64_list=feature_pb2.Int64List(value=[int(label)]))
    example = example_pb2.Example(features=feature_pb2.Features(feature=feats))
    return example.SerializeToString(deterministic=True)  # same bytes in every process


def without_mask(record: bytes) -> bytes:
    """A serialized raw Example with its mask emptied: what a client without the
    radiologist's mask sends."""
    from tensorflow.core.example import example_pb2

    example = example_pb2.Example.FromString(record)
    example.features.feature[MASK].bytes_list.value[:] = [b""]
    return example.SerializeToString()
