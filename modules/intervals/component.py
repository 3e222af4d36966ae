"""BootstrapIntervals: scores the test split with the trained model once and writes the 95 %
intervals of every metric per slice at the exported operating threshold (without masks: the
deployable answer; and with the records' masks: the oracle) and at 0.5, and the
test split's calibration before / after temperature scaling (`intervals.json`),
reproducible for fixed inputs.

Why a component of its own: TFMA's Evaluator cannot seed its resampling (see bootstrap.py);
it keeps computing the point estimates the thresholds gate on, and this component adds the
intervals beside them in MLMD. It reads the model's own `predict_only` and
`transform_features` signatures, so the numbers are those of the exported graph.
"""

# no `from __future__ import annotations`: the @component decorator reads real type hints

import dataclasses
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
from modules import image_io
from modules.calibration import expected_calibration_error, uncalibrated
from modules.intervals import mask_shape
from modules.intervals.bootstrap import slice_intervals
from modules.intervals.multiclass import multiclass_intervals, shortcut_calls
from modules.split_records import read_split

log = logging.getLogger(__name__)

INTERVALS_FILE = "intervals.json"
BATCH = 32


class MetricIntervals(Artifact):
    """Per-slice point estimates and bootstrap intervals of the test-split metrics."""

    TYPE_NAME = "lesionlens.MetricIntervals"  # namespace.Name: what KFP / Vertex accept


def _image_id(record: bytes) -> bytes:
    return tf.train.Example.FromString(record).features.feature[C.IMAGE_ID].bytes_list.value[0]


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclasses.dataclass
class ScoredSplit:
    """A split scored by the exported model, every array in image-id order."""

    image_ids: list[str]  # [n]
    labels: np.ndarray  # [n]
    has_mask: np.ndarray  # [n], 1 = the record carries a non-empty lesion mask
    features: dict[str, list[str]]  # slice feature -> [n] values
    outputs: dict[str, dict[str, np.ndarray]]  # signature -> output -> [n, ...]


SCORED_OUTPUTS = (
    C.DECISION_SCORE,
    C.POSITIVE_PROBABILITY,
    C.PROBABILITIES,
    C.CLASS_ID,
    C.ROI_SOURCE,
    C.ROI_MASK,  # the mask-shape rule on the segmenter's outline
)


def score_split(
    model_dir: str,
    records: list[bytes],
    slice_features: list[str],
    signatures: tuple[str, ...] = (C.PREDICT_NO_MASK,),
) -> ScoredSplit:
    """Labels, slice values and each signature's outputs for `records`. Signatures:
    PREDICT_NO_MASK (the deployable answer, the segmenter's ROI) and PREDICT_ONLY (the
    records' masks: the oracle ROI)."""
    records = sorted(records, key=_image_id)  # independent of the order files were read in
    loaded = tf.saved_model.load(model_dir)
    transform = loaded.signatures[C.TRANSFORM_FEATURES]
    columns: dict[str, list] = {C.LABEL: [], C.HAS_MASK: []}
    outputs: dict[str, dict[str, list]] = {s: {o: [] for o in SCORED_OUTPUTS} for s in signatures}
    features: dict[str, list[str]] = {f: [] for f in slice_features}
    for start in range(0, len(records), BATCH):
        batch = tf.constant(records[start : start + BATCH])
        for signature in signatures:
            answer = loaded.signatures[signature](**{C.EXAMPLES: batch})
            for name in SCORED_OUTPUTS:
                if name in answer:  # models exported before the ROI outputs have none
                    outputs[signature][name].append(answer[name].numpy())
        transformed = transform(**{C.EXAMPLES: batch})
        for name in columns:
            columns[name].append(transformed[name].numpy().reshape(-1))
        for f in slice_features:
            features[f].extend(_text(v) for v in transformed[f].numpy().reshape(-1))
    return ScoredSplit(
        image_ids=[_image_id(r).decode() for r in records],
        labels=np.concatenate(columns[C.LABEL]),
        has_mask=np.concatenate(columns[C.HAS_MASK]),
        features=features,
        outputs={
            s: {o: np.concatenate(v) for o, v in out.items() if v} for s, out in outputs.items()
        },
    )


def split_calibration(temperature: float, labels: np.ndarray, probabilities: np.ndarray) -> dict:
    """ECE and reliability table of P(positive) on this split, with the exported temperature
    and without it."""
    raw = uncalibrated(probabilities, temperature)
    positive = (labels == C.POSITIVE_LABEL).astype(int)
    return {
        "temperature": temperature,
        "calibrated": expected_calibration_error(positive, probabilities[:, C.POSITIVE_LABEL]),
        "uncalibrated": expected_calibration_error(positive, raw[:, C.POSITIVE_LABEL]),
    }


def class_report(
    scored: ScoredSplit,
    classes: list[str],
    slice_features: list[str],
    resamples: int,
    seed: int,
    level: float,
) -> dict:
    """With three or more classes: the served call's multi-class metrics per slice, without
    masks (deployable) and with the records' masks (ORACLE), and the shortcut a reader must
    see beside them: with ROI on, `normal` images are the ones without a lesion mask, so the
    mask alone says "normal" (and, served without masks, so does a segmenter that finds
    nothing). Each shortcut calls `normal` where it fires and the commonest other class
    of the split elsewhere: what a model that learned only the shortcut would score."""
    names = C.class_names(classes)  # by label id: the model's output order
    normal = names.index("normal") if "normal" in names else None
    args = (names, scored.features, slice_features, resamples, seed, level)
    deployable = scored.outputs[C.PREDICT_NO_MASK]
    report = {
        "classes": names,
        "slices": multiclass_intervals(
            scored.labels, deployable[C.CLASS_ID], deployable[C.PROBABILITIES], *args
        ),
    }
    oracle = scored.outputs.get(C.PREDICT_ONLY)
    if oracle is not None:
        report["oracle_slices"] = multiclass_intervals(
            scored.labels, oracle[C.CLASS_ID], oracle[C.PROBABILITIES], *args
        )

    def overall(called: np.ndarray, probabilities: np.ndarray) -> dict:
        unsliced = (names, {}, [], resamples, seed, level)
        return multiclass_intervals(scored.labels, called, probabilities, *unsliced)["overall"]

    # the likeliest class instead of the served rule (the paper's accuracy): what the
    # malignant operating point costs in three-class accuracy
    report["argmax"] = {
        kind: overall(out[C.PROBABILITIES].argmax(axis=1), out[C.PROBABILITIES])
        for kind, out in (("deployable", deployable), ("oracle", oracle))
        if out is not None
    }
    if normal is not None:
        roi_source = deployable[C.ROI_SOURCE].astype(str)
        calls = shortcut_calls(scored.labels, normal, scored.has_mask, roi_source)
        report["shortcuts"] = {
            name: overall(called, np.eye(len(names))[called]) for name, called in calls.items()
        }
    return report


def record_masks(records: list[bytes]) -> tuple[list[np.ndarray | None], np.ndarray]:
    """Each record's lesion mask at full resolution (None when it has none) and label."""
    masks, labels = [], []
    for record in records:
        feature = tf.train.Example.FromString(record).features.feature
        masks.append(mask_shape.mask_from_png(feature[C.MASK].bytes_list.value[0]))
        labels.append(feature[C.LABEL].int64_list.value[0])
    return masks, np.asarray(labels, dtype=np.int64)


def served_small_masks(records: list[bytes], segmenter_size: int, max_pixels: int) -> np.ndarray:
    """The records' masks as the served graph reduces a given mask to its `roi_mask` output
    [n, ROI_MASK_SIZE, ROI_MASK_SIZE]: Transform's own `prepare_images` (its mask at the
    segmenter's size: the `lesion_mask` feature), then `small_mask`. An empty mask stays all
    zeros (the served output says "whole image" there; here it is the empty outline)."""
    from modules.segmenter.network import small_mask
    from modules.transform import prepare_images

    spec = {C.MASK: tf.io.FixedLenFeature([], tf.string)}
    blank = tf.constant(image_io.encode_mask(np.zeros([1, 1], bool)))
    out = []
    for start in range(0, len(records), BATCH):
        masks = tf.io.parse_example(tf.constant(records[start : start + BATCH]), spec)[C.MASK]
        # the mask path needs the image only for its size: the mask's own PNG stands in for
        # it (3-6x faster than decoding the image), a 1 px one where there is no mask
        images = tf.where(tf.strings.length(masks) > 0, masks, blank)
        prepared = prepare_images(images, masks, 8, True, max_pixels, segmenter_size)
        out.append(small_mask(prepared.mask).numpy())
    return np.concatenate(out) if out else np.zeros([0, C.ROI_MASK_SIZE, C.ROI_MASK_SIZE])


def mask_shape_report(
    splits: dict[str, list[bytes]],
    info: dict,
    resamples: int,
    seed: int,
    level: float,
    test_roi: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[dict, dict[str, list[float]]] | None:
    """The mask-shape rule (mask_shape.py) beside the ORACLE: fitted on `splits[train]`'s
    masks, its threshold chosen on eval with the model's operating point (`info`, the
    exported lesionlens.json), scored on test. Entries (malignant against the rest, so for
    two and three classes):

    - `oracle`: the radiologist's test masks at full resolution;
    - with a segmenter (`info["segmenter_size"]`): the rule refitted on the train masks
      reduced as the served graph reduces a mask to `roi_mask` (24 px, so that its features
      compare with the segmenter's outline), its threshold chosen on eval's reduced masks,
      scored on the test masks reduced the same way (`oracle_24px`) and, given `test_roi`
      (the `predict_no_mask` outputs roi_mask [n, 24, 24] and roi_source [n] in the test
      records' image-id order), on the outline the segmenter drew (`predicted`; where it
      found nothing, `roi_source` none, the empty outline). `predicted` keeps the
      threshold chosen on the radiologist's reduced eval masks: its AUC is the fair
      comparison; its sensitivity and specificity also carry the shift from the
      radiologist's outline to the segmenter's (dilated) one.

    Returns (report, {entry: test decision scores in image-id order}); None when no train
    image has a mask (nothing to learn from)."""
    ordered = {s: sorted(r, key=_image_id) for s, r in splits.items()}
    masks, labels = {}, {}
    for split, records in ordered.items():
        masks[split], labels[split] = record_masks(records)
    if not any(m is not None for m in masks[C.TRAIN]):
        return None
    feats = {s: mask_shape.features_of(m) for s, m in masks.items()}
    point = {
        "operating_point": info["operating_point"],
        "operating_target": info["operating_target"],
        "threshold_method": info.get("threshold_method", "empirical"),
    }
    args = (*point.values(), info.get("seed", seed), resamples, seed, level)

    def split(name: str, features: dict) -> tuple[np.ndarray, np.ndarray]:
        return features[name], labels[name]

    full, scores = mask_shape.score_rule(
        split(C.TRAIN, feats), split(C.EVAL, feats), {"oracle": split(C.TEST, feats)}, *args
    )
    report = {
        "rule": mask_shape.RULE,
        "features": list(mask_shape.FEATURES),
        "empty_mask": mask_shape.EMPTY_NOTE,
        "fit_split": C.TRAIN,
        "threshold_split": C.EVAL,
        **point,
        "oracle": {
            "masks": "the radiologist's, full resolution (ORACLE)",
            **full["fit"],
            **full["oracle"],
        },
    }
    segmenter_size = int(info.get("segmenter_size") or 0)
    if segmenter_size:
        budget = int(info.get("max_pixels") or C.DEFAULT_MAX_IMAGE_PIXELS)
        small = {s: served_small_masks(r, segmenter_size, budget) for s, r in ordered.items()}
        feats24 = {s: mask_shape.features_of(m) for s, m in small.items()}
        tests = {"oracle_24px": split(C.TEST, feats24)}
        if test_roi is not None:
            roi_mask, roi_source = test_roi
            drawn = [
                m if src == C.ROI_PREDICTED else None
                for m, src in zip(roi_mask, roi_source, strict=True)
            ]
            tests["predicted"] = (mask_shape.features_of(drawn), labels[C.TEST])
        reduced, more = mask_shape.score_rule(
            split(C.TRAIN, feats24), split(C.EVAL, feats24), tests, *args
        )
        size = C.ROI_MASK_SIZE
        report["oracle_24px"] = {
            "masks": f"the radiologist's, reduced to the served roi_mask ({size} px) (ORACLE)",
            **reduced["fit"],
            **reduced["oracle_24px"],
        }
        if "predicted" in reduced:
            report["predicted"] = {
                "masks": f"the segmenter's served roi_mask ({size} px; none found: empty), "
                f"scored by the rule of oracle_24px (fitted on the radiologist's train masks "
                f"at {size} px)",
                **reduced["fit"],
                **reduced["predicted"],
            }
        scores.update(more)
    return report, {name: s.tolist() for name, s in scores.items()}


@tfx.dsl.components.component
def BootstrapIntervals(
    examples: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Examples],
    model: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Model],
    intervals: tfx.dsl.components.OutputArtifact[MetricIntervals],
    split: tfx.dsl.components.Parameter[str],
    slice_features: tfx.dsl.components.Parameter[str],
    resamples: tfx.dsl.components.Parameter[int],
    level: tfx.dsl.components.Parameter[float],
    seed: tfx.dsl.components.Parameter[int],
    code_version: tfx.dsl.components.Parameter[str],
) -> None:
    """`slice_features`: JSON list; `code_version` only keys the cache on the module code."""
    del code_version
    features = json.loads(slice_features)
    model_dir = path_utils.serving_model_path(model.uri)
    with tf.io.gfile.GFile(os.path.join(model_dir, C.MODEL_INFO)) as f:
        info = json.load(f)  # classes, the exported temperature
    records = read_split(artifact_utils.get_split_uri([examples], split))
    scored = score_split(model_dir, records, features, (C.PREDICT_NO_MASK, C.PREDICT_ONLY))
    labels = scored.labels
    deployable, oracle = scored.outputs[C.PREDICT_NO_MASK], scored.outputs[C.PREDICT_ONLY]
    args = (scored.features, features, resamples, seed, level)
    result = {
        "method": "percentile bootstrap, resampled within each class",
        "split": split,
        "resamples": resamples,
        "level": level,
        "seed": seed,
        "model_uri": model.uri,
        # at the exported operating threshold (what the server decides), every request
        # without a mask: the segmenter's ROI when ROI is on (deployable); with three
        # classes, malignant against the rest
        "slices": slice_intervals(labels, deployable[C.DECISION_SCORE], *args),
        # the same, each request carrying the radiologist's mask (ORACLE: needs the test
        # image's ground-truth mask; equal to "slices" with ROI off)
        "oracle_slices": slice_intervals(labels, oracle[C.DECISION_SCORE], *args),
        # at P(positive) > 0.5, for comparison
        "at_probability_0_5": slice_intervals(labels, deployable[C.POSITIVE_PROBABILITY], *args),
        "calibration": split_calibration(
            info["decision"]["temperature"], labels, deployable[C.PROBABILITIES]
        ),
    }
    # per test image, for plots (ROC curves, reliability diagrams, galleries: `lesionlens
    # report`); probabilities are the calibrated ones
    result["per_image"] = {
        "image_id": scored.image_ids,
        "label": labels.tolist(),
        "has_mask": scored.has_mask.tolist(),
        **{
            kind: {
                C.PROBABILITIES: out[C.PROBABILITIES].round(6).tolist(),
                C.CLASS_ID: out[C.CLASS_ID].tolist(),
                C.ROI_SOURCE: out[C.ROI_SOURCE].astype(str).tolist(),
            }
            for kind, out in (("deployable", deployable), ("oracle", oracle))
        },
    }
    if len(info["classes"]) > 2:
        result["multiclass"] = class_report(
            scored, info["classes"], features, resamples, seed, level
        )
    # beside the ORACLE: what the mask's outline alone gives (mask_shape.py)
    splits = {s: read_split(artifact_utils.get_split_uri([examples], s)) for s in (C.TRAIN, C.EVAL)}
    try:
        shape = mask_shape_report(
            {**splits, C.TEST: records},
            info,
            resamples,
            seed,
            level,
            # with roi_mode=crop the served roi_mask is the crop's box: no outline to score
            (deployable[C.ROI_MASK], deployable[C.ROI_SOURCE].astype(str))
            if C.ROI_MASK in deployable and info.get("roi_mode", "mask") != "crop"
            else None,
        )
    except ValueError as e:  # e.g. one class in a split: the model's intervals still count
        log.warning("no mask-shape rule: %s", e)
        shape = None
    if shape is not None:
        result["mask_shape_rule"], result["per_image"]["mask_shape_rule"] = shape
    with tf.io.gfile.GFile(os.path.join(intervals.uri, INTERVALS_FILE), "w") as f:
        json.dump(result, f, indent=2)
    intervals.set_string_custom_property("model_uri", model.uri)
    log.info("bootstrap intervals for %d %s examples, %d resamples", len(labels), split, resamples)
