"""SMOTE in flattened pixel space (the paper's setting), with bounded, stated memory."""

from __future__ import annotations

import logging

import numpy as np
from imblearn.over_sampling import SMOTE

log = logging.getLogger(__name__)


class SmoteMemoryError(MemoryError):
    """The train split would not fit the configured memory budget as float32 pixels."""


def planned_bytes(n: int, n_new: int, features: int) -> int:
    """float32 working set: originals plus synthetic samples (imblearn stacks both)."""
    return 4 * features * (2 * n + n_new)


def target_counts(labels: np.ndarray, target_ratio: float) -> dict[int, int]:
    """Every class up to `target_ratio` x the majority count (1.0 = parity), never down."""
    classes, counts = np.unique(labels, return_counts=True)
    top = counts.max()
    return {
        int(c): max(int(n), int(round(target_ratio * top)))
        for c, n in zip(classes, counts, strict=True)
    }


def smote_images(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    k_neighbors: int,
    seed: int,
    target_ratio: float,
    max_memory_gb: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Returns only the synthetic images (uint8, same shape as inputs) and their labels."""
    n = len(images)
    shape = images.shape[1:]
    features = int(np.prod(shape))
    targets = target_counts(labels, target_ratio)
    counts = {int(c): int((labels == c).sum()) for c in targets}
    strategy = {}
    k = k_neighbors
    for c, want in targets.items():
        if want > counts[c]:
            if counts[c] < 2:
                log.warning(
                    "SMOTE: class %d has %d example(s); cannot interpolate, skipped", c, counts[c]
                )
                continue
            k = min(k, counts[c] - 1)
            strategy[c] = want
    if not strategy:
        return np.zeros((0, *shape), np.uint8), np.zeros((0,), labels.dtype)
    if k != k_neighbors:
        log.warning("SMOTE: k_neighbors lowered from %d to %d (smallest class)", k_neighbors, k)
    n_new = sum(want - counts[c] for c, want in strategy.items())
    need = planned_bytes(n, n_new, features)
    if need > max_memory_gb * 2**30:
        raise SmoteMemoryError(
            f"SMOTE in pixel space needs ~{need / 2**30:.1f} GiB for {n} images of {shape} "
            f"(max_memory_gb={max_memory_gb}); lower image_size, raise max_memory_gb, "
            "or set smote='none'"
        )
    full = {c: max(counts[c], strategy.get(c, counts[c])) for c in counts}
    sampler = SMOTE(sampling_strategy=full, k_neighbors=k, random_state=seed)
    x = images.reshape(n, features).astype(np.float32)
    x_res, y_res = sampler.fit_resample(x, labels)
    new = np.clip(np.rint(x_res[n:]), 0, 255).astype(np.uint8).reshape(-1, *shape)
    return new, y_res[n:]
