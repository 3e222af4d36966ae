"""Does a Grad-CAM heatmap point at the lesion? The per-image scores of the pointing
benchmark (bench/gradcam_vs_mask.py, bench/roi_modes.py): the pointing game against the
radiologist's mask and the image centre, the heat inside the mask, the distance of a miss."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from serving.overlay import upsample


def score(heatmap: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """One image: pointing-game hits (model and centre baseline), heat share, mask area, and
    the peak's distance to the mask in feature-map cells (0 for a hit)."""
    heat = upsample(heatmap, (mask.shape[1], mask.shape[0]))
    peak = np.unravel_index(int(np.argmax(heat)), heat.shape)
    total = float(heat.sum())
    cell = (heatmap.shape[0] / mask.shape[0], heatmap.shape[1] / mask.shape[1])
    return {
        "hit": float(mask[peak]),
        "miss_cells": float(ndimage.distance_transform_edt(~mask, sampling=cell)[peak]),
        "centre_hit": float(mask[mask.shape[0] // 2, mask.shape[1] // 2]),
        "heat_in_mask": float((heat * mask).sum() / total) if total > 0 else 0.0,
        "area": float(mask.mean()),
    }
