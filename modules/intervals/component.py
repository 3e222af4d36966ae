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
from modules.calibration import expected_calibration_error
from modules.intervals.bootstrap import slice_intervals
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


def score_split(
    model_dir: str,
    records: list[bytes],
    slice_features: list[str],
    signature: str = C.PREDICT_NO_MASK,
):
    """Labels, `decision_score`, `positive_probability` (each [n]) and {feature: [n] slice
    values}, in image-id order. `signature`: PREDICT_NO_MASK (the deployable answer, the
    segmenter's ROI) or PREDICT_ONLY (the records' masks: the oracle ROI)."""
    records = sorted(records, key=_image_id)  # independent of the order files were read in
    loaded = tf.saved_model.load(model_dir)
    predict = loaded.signatures[signature]
    transform = loaded.signatures[C.TRANSFORM_FEATURES]
    columns: dict[str, list] = {C.LABEL: [], C.DECISION_SCORE: [], C.POSITIVE_PROBABILITY: []}
    features: dict[str, list[str]] = {f: [] for f in slice_features}
    for start in range(0, len(records), BATCH):
        batch = tf.constant(records[start : start + BATCH])
        outputs = predict(**{C.EXAMPLES: batch})
        for name in (C.DECISION_SCORE, C.POSITIVE_PROBABILITY):
            columns[name].append(outputs[name].numpy())
        transformed = transform(**{C.EXAMPLES: batch})
        columns[C.LABEL].append(transformed[C.LABEL].numpy().reshape(-1))
        for f in slice_features:
            features[f].extend(_text(v) for v in transformed[f].numpy().reshape(-1))
    arrays = {name: np.concatenate(parts) for name, parts in columns.items()}
    return arrays[C.LABEL], arrays[C.DECISION_SCORE], arrays[C.POSITIVE_PROBABILITY], features


def split_calibration(model_dir: str, labels: np.ndarray, probability: np.ndarray) -> dict:
    """ECE and reliability table on this split, with the exported temperature and without it
    (binary: P_raw = sigmoid(T x logit(P)))."""
    with tf.io.gfile.GFile(os.path.join(model_dir, C.MODEL_INFO)) as f:
        temperature = json.load(f)["decision"]["temperature"]
    p = np.clip(probability.astype(np.float64), 1e-7, 1 - 1e-7)
    raw = 1.0 / (1.0 + np.exp(-temperature * np.log(p / (1 - p))))
    positive = (labels == C.POSITIVE_LABEL).astype(int)
    return {
        "temperature": temperature,
        "calibrated": expected_calibration_error(positive, probability),
        "uncalibrated": expected_calibration_error(positive, raw),
    }


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
    records = read_split(artifact_utils.get_split_uri([examples], split))
    labels, decision, probability, values = score_split(model_dir, records, features)
    oracle = score_split(model_dir, records, features, C.PREDICT_ONLY)[1]
    result = {
        "method": "percentile bootstrap, resampled within each class",
        "split": split,
        "resamples": resamples,
        "level": level,
        "seed": seed,
        "model_uri": model.uri,
        # at the exported operating threshold (what the server decides), every request
        # without a mask: the segmenter's ROI when ROI is on (deployable)
        "slices": slice_intervals(labels, decision, values, features, resamples, seed, level),
        # the same, each request carrying the radiologist's mask (ORACLE: needs the test
        # image's ground-truth mask; equal to "slices" with ROI off)
        "oracle_slices": slice_intervals(labels, oracle, values, features, resamples, seed, level),
        # at P(positive) > 0.5, for comparison
        "at_probability_0_5": slice_intervals(
            labels, probability, values, features, resamples, seed, level
        ),
        "calibration": split_calibration(model_dir, labels, probability),
    }
    with tf.io.gfile.GFile(os.path.join(intervals.uri, INTERVALS_FILE), "w") as f:
        json.dump(result, f, indent=2)
    intervals.set_string_custom_property("model_uri", model.uri)
    log.info("bootstrap intervals for %d %s examples, %d resamples", len(labels), split, resamples)
