"""The interval of a metric's mean over seeds: the test images are resampled (within each
class, seeded, as the pipeline's BootstrapIntervals does), every seed's model is scored on
the same resample, and the per-seed metrics are averaged. So the interval is that of the
number the report prints (the mean), and with one seed it is that seed's own interval."""

from __future__ import annotations

import numpy as np

from modules import contract as C
from modules.intervals.bootstrap import (
    percentile_intervals,
    rate_metrics,
    served_scores,
    stratified_draws,
)
from modules.intervals.multiclass import class_metrics, shortcut_calls


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
        run = {
            "label": np.asarray(p["label"])[idx],
            "probabilities": np.asarray(p[kind][C.PROBABILITIES])[idx],
            "class_id": np.asarray(p[kind][C.CLASS_ID])[idx],
        }
        if "has_mask" in p:
            run["has_mask"] = np.asarray(p["has_mask"])[idx]
        if C.ROI_SOURCE in p[kind]:
            run[C.ROI_SOURCE] = np.asarray(p[kind][C.ROI_SOURCE]).astype(str)[idx]
        aligned.append(run)
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
            score = served_scores(probs[:, C.POSITIVE_LABEL], called == C.POSITIVE_LABEL)
            per_seed.append(rate_metrics(labels[draws], score[draws]))
        else:
            per_seed.append(class_metrics(labels[draws], called[draws], probs[draws], names))
    mean = {k: np.mean([s[k] for s in per_seed], axis=0) for k in per_seed[0]}
    return percentile_intervals(mean, level)


def _accuracy_interval(
    labels: np.ndarray, called: list[np.ndarray], draws: np.ndarray, level: float
) -> tuple[float, float]:
    mean = np.mean([(c[draws] == labels[draws]).mean(axis=1) for c in called], axis=0)
    return percentile_intervals({"accuracy": mean}, level)["accuracy"]


def rule_intervals(
    results: list[dict], names: list[str], resamples: int, seed: int, level: float
) -> dict[tuple[str, str], tuple[float, float]]:
    """{(section, entry) of the pipeline's three-class report: accuracy (lower, upper)} of
    the mean over the runs of one row, for the answers beside the model: the likeliest class
    (without masks, ORACLE) and the rules that look at no pixel (`shortcut_calls`, as the
    pipeline applies them), each on every run's own answers."""
    out = {}
    aligned = {kind: _aligned(results, kind) for kind in ("deployable", "oracle")}
    for kind, runs in aligned.items():
        if runs:
            labels = runs[0]["label"]
            draws = stratified_draws(labels, resamples, seed)
            likeliest = [r["probabilities"].argmax(axis=1) for r in runs]
            out[("argmax", kind)] = _accuracy_interval(labels, likeliest, draws, level)
    runs = aligned["deployable"]
    if "normal" not in names or not runs or any("has_mask" not in r for r in runs):
        return out
    labels = runs[0]["label"]
    draws = stratified_draws(labels, resamples, seed)
    normal = names.index("normal")
    calls = [shortcut_calls(labels, normal, r["has_mask"], r.get(C.ROI_SOURCE)) for r in runs]
    for name in set.intersection(*(set(c) for c in calls)):
        called = [c[name] for c in calls]
        out[("shortcuts", name)] = _accuracy_interval(labels, called, draws, level)
    return out


def shape_rule_intervals(
    results: list[dict], resamples: int, seed: int, level: float
) -> dict[str, dict[str, tuple[float, float]]]:
    """{entry of `mask_shape_rule` (oracle, oracle_24px, predicted): {binary metric: (lower,
    upper)}} of the mean over the runs of one row, from each run's per-image decision
    scores of the rule (above 0.5 = called malignant), resampled as `mean_intervals` does."""
    runs = [r["results"].get("per_image", {}) for r in results]
    runs = [p for p in runs if "mask_shape_rule" in p]
    if not runs:
        return {}
    order = runs[0]["image_id"]
    labels = np.asarray(runs[0]["label"])
    draws = stratified_draws(labels, resamples, seed)
    out = {}
    for entry in sorted(set.intersection(*(set(p["mask_shape_rule"]) for p in runs))):
        per_seed = []
        for p in runs:
            where = {image_id: i for i, image_id in enumerate(p["image_id"])}
            if sorted(where) != sorted(order):
                raise ValueError("the runs of a row were tested on different images")
            scores = np.asarray(p["mask_shape_rule"][entry])[[where[i] for i in order]]
            per_seed.append(rate_metrics(labels[draws], scores[draws]))
        mean = {k: np.mean([s[k] for s in per_seed], axis=0) for k in per_seed[0]}
        out[entry] = percentile_intervals(mean, level)
    return out
