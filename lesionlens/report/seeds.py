"""The interval of a metric's mean over seeds: the test images are resampled (within each
class, seeded, as the pipeline's BootstrapIntervals does), every seed's model is scored on
the same resample, and the per-seed metrics are averaged. So the interval is that of the
number the report prints (the mean), and with one seed it is that seed's own interval."""

from __future__ import annotations

import numpy as np

from modules import contract as C
from modules.intervals.bootstrap import percentile_intervals, rate_metrics, stratified_draws
from modules.intervals.multiclass import class_metrics


def _aligned(results: list[dict], kind: str) -> list[dict]:
    """Each run's per-image answers in the first run's image order (the bootstrap's)."""
    runs = [r["results"]["per_image"] for r in results]
    runs = [p for p in runs if kind in p]
    if not runs:
        return []
    order = runs[0]["image_id"]
    aligned = []
    for p in runs:
        where = {image_id: i for i, image_id in enumerate(p["image_id"])}
        if sorted(where) != sorted(order):
            raise ValueError("the runs of a row were tested on different images")
        idx = np.array([where[i] for i in order])
        aligned.append(
            {
                "label": np.asarray(p["label"])[idx],
                "probabilities": np.asarray(p[kind][C.PROBABILITIES])[idx],
                "class_id": np.asarray(p[kind][C.CLASS_ID])[idx],
            }
        )
    return aligned


def mean_intervals(
    results: list[dict], names: list[str], oracle: bool, resamples: int, seed: int, level: float
) -> dict[str, tuple[float, float]]:
    """{metric key: (lower, upper)} of the mean over the runs (seeds) of one row; binary keys
    as TFMA names them with two classes, the three-class keys with three."""
    runs = _aligned(results, "oracle" if oracle else "deployable")
    if not runs:
        return {}
    labels = runs[0]["label"]
    draws = stratified_draws(labels, resamples, seed)
    per_seed = []
    for run in runs:
        probs, called = run["probabilities"], run["class_id"]
        if len(names) == 2:
            # ranks by P(malignant) (a malignant answer means P >= the threshold) and is
            # above 0.5 exactly when the served answer is malignant, as the served
            # `decision_score` is
            positive = called == C.POSITIVE_LABEL
            score = (probs[:, C.POSITIVE_LABEL] + positive) / 2 + positive * 1e-9
            per_seed.append(rate_metrics(labels[draws], score[draws]))
        else:
            per_seed.append(class_metrics(labels[draws], called[draws], probs[draws], names))
    mean = {k: np.mean([s[k] for s in per_seed], axis=0) for k in per_seed[0]}
    return percentile_intervals(mean, level)
