"""SegmenterEvaluation: Dice and IoU of the lesion segmenter on the test split, overall and
per slice with seeded bootstrap intervals, and the gate that stops the run before the
classifier trains when the mean Dice is below `min_dice` (as AnomaliesGate stops bad data).

Two masks are scored against the radiologist's: the segmenter's own (P > threshold, what
segmentation papers report) and the served ROI (largest component, dilation, whole-image
fallback: what the classifier sees), beside two baselines that use no image content (the
whole image, and a centred disk of the split's mean lesion area).
"""

# no `from __future__ import annotations`: the @component decorator reads real type hints

import json
import logging
import os

import numpy as np
import tensorflow as tf
from tfx import v1 as tfx
from tfx.types import artifact_utils
from tfx.types.artifact import Artifact
from tfx.utils import path_utils

from modules import contract as C
from modules.intervals.bootstrap import mean_intervals
from modules.segmenter import network as S
from modules.segmenter.records import segment_records
from modules.segmenter.trainer import NORMAL, load_segmenter
from modules.split_records import read_split

RESULT_FILE = "segmentation.json"
log = logging.getLogger(__name__)


class SegmenterQualityError(RuntimeError):
    """The segmenter's test Dice is below the configured lower bound."""


class SegmentationMetrics(Artifact):
    """Per-slice Dice / IoU of the segmenter with bootstrap intervals."""

    TYPE_NAME = "lesionlens.SegmentationMetrics"  # namespace.Name: what KFP / Vertex accept


def _feature(ex: tf.train.Example, name: str):
    f = ex.features.feature[name]
    return f.int64_list.value[0] if f.HasField("int64_list") else f.bytes_list.value[0].decode()


def centre_disk(side: int, area: float) -> np.ndarray:
    """A centred disk covering `area` of a side x side image."""
    yy, xx = np.mgrid[:side, :side] + 0.5 - side / 2
    return (xx**2 + yy**2 <= area * side * side / np.pi).astype(np.uint8)


def score_segmenter(model, records: list[bytes], image_size: int, post, slice_features):
    """Per-image scores {name: [n]} and slice values {feature: [n]} of the images with a
    known mask (non-empty, or `normal`)."""
    keep = []
    for r in records:
        ex = tf.train.Example.FromString(r)
        if _feature(ex, C.HAS_MASK) == 1 or _feature(ex, C.LABEL) == NORMAL:
            keep.append(r)
    scores: dict[str, list] = {k: [] for k in ("dice", "iou", "roi_dice", "roi_iou")}
    truths = []
    features: dict[str, list[str]] = {f: [] for f in slice_features}
    for batch, seg in segment_records(model, keep, image_size, post):
        truth = seg[C.LESION_MASK]
        dice, iou = S.dice_iou(truth, seg["probability"] > post.threshold)
        roi_dice, roi_iou = S.dice_iou(truth, seg["roi"])
        for name, value in zip(scores, (dice, iou, roi_dice, roi_iou), strict=True):
            scores[name].append(value.numpy())
        truths.append(truth.numpy())
        for r in batch:
            ex = tf.train.Example.FromString(r)
            for f in slice_features:
                features[f].append(str(_feature(ex, f)))
    if not keep:
        return {}, features, None
    values = {k: np.concatenate(v) for k, v in scores.items()}
    return values, features, np.concatenate(truths)


def baselines(truth: np.ndarray, area: float) -> dict[str, float]:
    """Mean Dice of masks that look at no image: all foreground, a centred disk."""
    out = {}
    for name, mask in (
        ("all_foreground", np.ones(truth.shape[1:], np.uint8)),
        ("centre_disk", centre_disk(truth.shape[1], area)),
    ):
        guess = tf.constant(np.broadcast_to(mask, truth.shape))
        out[name] = float(S.dice_iou(tf.constant(truth), guess)[0].numpy().mean())
    return out


@tfx.dsl.components.component
def SegmenterEvaluation(
    examples: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Examples],
    segmenter: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Model],
    evaluation: tfx.dsl.components.OutputArtifact[SegmentationMetrics],
    split: tfx.dsl.components.Parameter[str],
    image_size: tfx.dsl.components.Parameter[int],
    min_dice: tfx.dsl.components.Parameter[float],
    slice_features: tfx.dsl.components.Parameter[str],
    roi_threshold: tfx.dsl.components.Parameter[float],
    roi_dilation: tfx.dsl.components.Parameter[int],
    roi_min_area: tfx.dsl.components.Parameter[float],
    roi_max_area: tfx.dsl.components.Parameter[float],
    resamples: tfx.dsl.components.Parameter[int],
    level: tfx.dsl.components.Parameter[float],
    seed: tfx.dsl.components.Parameter[int],
    code_version: tfx.dsl.components.Parameter[str],
) -> None:
    """`slice_features`: JSON list of transformed features; `code_version` keys the cache."""
    del code_version
    post = S.RoiPostprocess(roi_threshold, roi_dilation, roi_min_area, roi_max_area)
    model = load_segmenter(path_utils.serving_model_path(segmenter.uri), image_size)
    features = json.loads(slice_features)
    records = read_split(artifact_utils.get_split_uri([examples], split))
    values, slice_values, truth = score_segmenter(model, records, image_size, post, features)
    if not values:
        raise SegmenterQualityError(f"the {split} split holds no image with a lesion mask")
    # The disk gets this split's mean lesion area: a baseline that knows that much.
    mean_area = float(truth.mean())
    result = {
        "split": split,
        "method": "percentile bootstrap over images",
        "resamples": resamples,
        "level": level,
        "seed": seed,
        "postprocess": {
            "threshold": roi_threshold,
            "dilation": roi_dilation,
            "min_area": roi_min_area,
            "max_area": roi_max_area,
        },
        "min_dice": min_dice,
        "baselines_dice": baselines(truth, mean_area),
        "slices": mean_intervals(values, slice_values, features, resamples, seed, level),
    }
    with tf.io.gfile.GFile(os.path.join(evaluation.uri, RESULT_FILE), "w") as f:
        json.dump(result, f, indent=2)
    overall = result["slices"]["overall"]
    dice, (lo, hi) = overall["metrics"]["dice"], overall["intervals"]["dice"]
    log.info(
        "segmenter on %s (%d images): Dice %.3f [%.3f, %.3f], IoU %.3f; served ROI Dice %.3f; "
        "baselines: all-foreground %.3f, centre disk %.3f",
        split,
        overall["example_count"],
        dice,
        lo,
        hi,
        overall["metrics"]["iou"],
        overall["metrics"]["roi_dice"],
        result["baselines_dice"]["all_foreground"],
        result["baselines_dice"]["centre_disk"],
    )
    evaluation.set_float_custom_property("dice", dice)
    if dice < min_dice:
        raise SegmenterQualityError(
            f"segmenter mean Dice on the {split} split is {dice:.3f}, below min_dice "
            f"{min_dice} (segmentation.json in {evaluation.uri}); train it longer "
            "(segmenter_epochs) or lower min_dice"
        )
