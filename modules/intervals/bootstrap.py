"""Confidence intervals that do not move: a seeded bootstrap, stratified by class.

Why not TFMA's: its jackknife and Poisson bootstrap draw buckets from an unseeded random
state the TFX Evaluator cannot seed, so one model on one test split printed bounds that moved
by several points between runs, and on a small split a bucket without a negative example
made the specificity interval NaN. Here every resample is a pure function of the seed and
the slice's examples in image-id order, and each class is resampled within itself, so a
slice that holds both classes keeps both in every draw and AUC, sensitivity and specificity
are defined in all of them (the class mix is fixed by the split, as in a case-control study).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.stats import rankdata

from modules import contract as C

THRESHOLD = 0.5  # TFMA's binary metrics count `prediction > 0.5` as positive


def rank_auc(truth: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """ROC AUC of each row: truth (bool) and scores [R, n] -> [R], NaN for a one-class row.
    Average ranks, so a tie between a positive and a negative counts one half."""
    pos = truth.sum(axis=1)
    neg = truth.shape[1] - pos
    ranks = rankdata(scores, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        auc = ((ranks * truth).sum(axis=1) - pos * (pos + 1) / 2) / (pos * neg)
    return np.where((pos > 0) & (neg > 0), auc, np.nan)


def rate_metrics(labels: np.ndarray, scores: np.ndarray) -> dict[str, np.ndarray]:
    """Metrics of R samples at once: labels and scores [R, n] -> {metric: [R]}, as TFMA
    defines them; NaN where undefined (AUC of a one-class sample, precision with no positive
    call)."""
    labels = labels == C.POSITIVE_LABEL
    pred = scores > THRESHOLD
    pos = labels.sum(axis=1)
    neg = labels.shape[1] - pos
    tp = (pred & labels).sum(axis=1)
    fp = (pred & ~labels).sum(axis=1)
    tn = neg - fp
    fn = pos - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        return {
            "binary_accuracy": (tp + tn) / labels.shape[1],
            "auc": rank_auc(labels, scores),
            "precision": np.where(tp + fp > 0, tp / (tp + fp), np.nan),
            "recall": np.where(pos > 0, tp / pos, np.nan),
            "specificity": np.where(neg > 0, tn / neg, np.nan),
            "f1_score": np.where(tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), np.nan),
        }


def served_scores(p_positive: np.ndarray, called_positive: np.ndarray) -> np.ndarray:
    """Scores for `rate_metrics` from served answers: above THRESHOLD exactly when the
    served answer is the positive class (P(positive) >= the model's operating threshold),
    ranked by P(positive) on each side, as the served `decision_score` is; so the rates are
    those at the model's threshold and the AUC that of P(positive)."""
    positive = np.asarray(called_positive, bool)
    return (np.asarray(p_positive) + positive) / 2 + positive * 1e-9


def stratified_draws(labels: np.ndarray, n_resamples: int, seed: int) -> np.ndarray:
    """Indices [R, n] of R resamples, each class resampled within itself (classes in label
    order, each class's columns together), from a generator seeded with `seed`."""
    rng = np.random.default_rng(seed)
    columns = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        columns.append(members[rng.integers(0, len(members), size=(n_resamples, len(members)))])
    return np.concatenate(columns, 1)


def percentile_intervals(stats: dict[str, np.ndarray], level: float) -> dict:
    """{metric: [R] values} -> {metric: (lower, upper)}; (nan, nan) where no resample has
    the metric defined (AUC of a one-class slice)."""
    tail = 100 * (1 - level) / 2
    out = {}
    for name, values in stats.items():
        values = values[np.isfinite(values)]
        if values.size == 0:
            out[name] = (float("nan"), float("nan"))
        else:
            lo, hi = np.percentile(values, [tail, 100 - tail])
            out[name] = (float(lo), float(hi))
    return out


def stratified_bootstrap(
    labels: np.ndarray,
    scores: np.ndarray,
    n_resamples: int,
    seed: int,
    level: float,
) -> dict[str, tuple[float, float]]:
    """Percentile intervals of every rate metric; each class is resampled within itself.

    Every slice draws from a fresh generator seeded with `seed`, so its interval does not
    depend on which other slices exist, and two slices holding the same examples get the
    same interval. Metrics undefined in every resample (AUC of a one-class slice) give
    (nan, nan).
    """
    idx = stratified_draws(labels, n_resamples, seed)
    return percentile_intervals(rate_metrics(labels[idx], scores[idx]), level)


def point_estimates(labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """The metrics on the sample itself (what TFMA reports, up to its AUC approximation)."""
    return {k: float(v[0]) for k, v in rate_metrics(labels[None], scores[None]).items()}


def slice_members(n: int, features: dict[str, list[str]], slice_features: list[str]) -> dict:
    """Slice name ("overall", "modality=ultrasound", ...) -> indices of its n examples."""
    out = {"overall": np.arange(n)}
    for feature in slice_features:
        values = np.asarray(features[feature])
        for value in sorted(set(values.tolist())):
            out[f"{feature}={value}"] = np.flatnonzero(values == value)
    return out


def bootstrap_slices(
    labels: np.ndarray,
    columns: tuple[np.ndarray, ...],
    metrics: Callable[..., dict[str, np.ndarray]],
    features: dict[str, list[str]],
    slice_features: list[str],
    n_resamples: int,
    seed: int,
    level: float,
) -> dict[str, dict]:
    """Per slice: example count, point estimates and seeded class-stratified bootstrap
    intervals of `metrics(labels, *columns)`, which maps [R, n] arrays to {name: [R]}."""
    out = {}
    for name, idx in slice_members(len(labels), features, slice_features).items():
        if idx.size == 0:
            continue
        y, cols = labels[idx], [c[idx] for c in columns]
        draws = stratified_draws(y, n_resamples, seed)
        point = metrics(y[None], *(c[None] for c in cols))
        out[name] = {
            "example_count": int(idx.size),
            "metrics": {m: float(v[0]) for m, v in point.items()},
            "intervals": percentile_intervals(metrics(y[draws], *(c[draws] for c in cols)), level),
        }
    return out


def slice_intervals(
    labels: np.ndarray,
    scores: np.ndarray,
    features: dict[str, list[str]],
    slice_features: list[str],
    n_resamples: int,
    seed: int,
    level: float,
) -> dict[str, dict]:
    """Per slice: example count, point estimates and bootstrap intervals of every metric."""
    args = (features, slice_features, n_resamples, seed, level)
    return bootstrap_slices(labels, (scores,), rate_metrics, *args)


def mean_intervals(
    values: dict[str, np.ndarray],
    features: dict[str, list[str]],
    slice_features: list[str],
    n_resamples: int,
    seed: int,
    level: float,
) -> dict[str, dict]:
    """Per slice: count, mean and percentile bootstrap interval of per-image scores (e.g.
    Dice, IoU); each slice and score draws from a fresh generator seeded with `seed`."""
    tail = 100 * (1 - level) / 2
    out = {}
    n = len(next(iter(values.values()))) if values else 0
    for name, idx in slice_members(n, features, slice_features).items():
        if idx.size == 0:
            continue
        means, intervals = {}, {}
        for metric, per_image in values.items():
            sample = per_image[idx]
            draw = np.random.default_rng(seed).integers(0, idx.size, (n_resamples, idx.size))
            lo, hi = np.percentile(sample[draw].mean(axis=1), [tail, 100 - tail])
            means[metric], intervals[metric] = float(sample.mean()), (float(lo), float(hi))
        out[name] = {"example_count": int(idx.size), "metrics": means, "intervals": intervals}
    return out
