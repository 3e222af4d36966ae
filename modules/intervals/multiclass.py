"""Three-class metrics (benign / malignant / normal, the paper's Table 7 setting) of the
served `class_id`, per slice, with the same seeded class-stratified bootstrap as the binary
malignant-against-the-rest metrics in bootstrap.py."""

from __future__ import annotations

import numpy as np

from modules import contract as C
from modules.intervals.bootstrap import bootstrap_slices, rank_auc, slice_members


def class_metrics(
    labels: np.ndarray, class_ids: np.ndarray, probabilities: np.ndarray, names: list[str]
) -> dict[str, np.ndarray]:
    """labels, class_ids [R, n] and probabilities [R, n, K] -> {metric: [R]}: accuracy,
    per class one-vs-rest sensitivity, specificity and AUC (`auc/<class>`), and macro AUC
    (their mean; NaN when a class is absent from the sample)."""
    out = {"accuracy": (class_ids == labels).mean(axis=1)}
    aucs = []
    with np.errstate(divide="ignore", invalid="ignore"):
        for k, name in enumerate(names):
            truth, called = labels == k, class_ids == k
            pos = truth.sum(axis=1)
            neg = truth.shape[1] - pos
            out[f"sensitivity/{name}"] = np.where(pos > 0, (called & truth).sum(1) / pos, np.nan)
            out[f"specificity/{name}"] = np.where(neg > 0, (~called & ~truth).sum(1) / neg, np.nan)
            aucs.append(rank_auc(truth, probabilities[..., k]))
            out[f"auc/{name}"] = aucs[-1]
    out["macro_auc"] = np.mean(aucs, axis=0)
    return out


def confusion_matrix(labels: np.ndarray, class_ids: np.ndarray, k: int) -> list[list[int]]:
    """Counts [true class][called class]."""
    matrix = np.zeros((k, k), dtype=int)
    np.add.at(matrix, (labels, class_ids), 1)
    return matrix.tolist()


def multiclass_intervals(
    labels: np.ndarray,
    class_ids: np.ndarray,
    probabilities: np.ndarray,
    names: list[str],
    features: dict[str, list[str]],
    slice_features: list[str],
    n_resamples: int,
    seed: int,
    level: float,
) -> dict[str, dict]:
    """Per slice: count, point estimates, bootstrap intervals and the confusion matrix."""

    def metrics(y: np.ndarray, c: np.ndarray, p: np.ndarray) -> dict[str, np.ndarray]:
        return class_metrics(y, c, p, names)

    args = (features, slice_features, n_resamples, seed, level)
    out = bootstrap_slices(labels, (class_ids, probabilities), metrics, *args)
    for name, idx in slice_members(len(labels), features, slice_features).items():
        if name in out:
            out[name]["confusion_matrix"] = confusion_matrix(
                labels[idx], class_ids[idx], len(names)
            )
    return out


def shortcut_calls(
    labels: np.ndarray, normal: int, has_mask: np.ndarray, roi_source: np.ndarray | None
) -> dict[str, np.ndarray]:
    """The rules that look at no pixel, as called classes: `normal` where the rule fires, the
    commonest other class of the split elsewhere. "empty_mask_is_normal" reads the record's
    mask (ORACLE); "no_roi_found_is_normal" only where a segmenter drew ROIs (ROI on)."""
    others = labels[labels != normal]
    fallback = int(np.bincount(others).argmax()) if others.size else 0
    rules = {"empty_mask_is_normal": has_mask == 0}
    if roi_source is not None and (roi_source == C.ROI_PREDICTED).any():
        rules["no_roi_found_is_normal"] = roi_source == C.ROI_NONE
    return {name: np.where(fires, normal, fallback) for name, fires in rules.items()}
