"""The mask-shape rule: how much of the ORACLE is the outline.

With ROI on, the ORACLE figures give the classifier each test image's radiologist's mask,
and a mask says more than where the lesion is: BUSI's malignant outlines are irregular,
spiculated and taller than wide, its benign ones round or oval. This rule looks at no pixel
of the image: a logistic regression on five shape numbers of the mask (standardised),
fitted on the train split's masks, its threshold chosen on eval as the model's is
(`calibration.robust_threshold` with the run's operating point), scored on test with the
same seeded class-stratified bootstrap as the model (bootstrap.py). Where it comes close to
the ORACLE model, the mask hands the model the answer, as the empty mask hands it `normal`
with three classes (multiclass.py).

The five numbers, of the mask as one region (all its pixels; BUSI's masks of one image are
unioned at ingestion), from scikit-image's `regionprops`:

- solidity: area / area of the convex hull (1 for a convex shape, low for a spiky one);
- extent: area / area of the axis-aligned bounding box (pi / 4 for a disc);
- area fraction: area / the image's area;
- aspect: elongation of the ellipse with the mask's second moments, major / minor axis
  (>= 1, any orientation), each pixel counted as a unit square (its own variance 1/12 added
  to both eigenvalues of the inertia tensor, so a one-pixel line of n pixels gives n and a
  single pixel 1, never a division by zero). Chosen on the eval split, never on test, among
  four aspect ratios (the rule's eval AUC, grouped / paper split: bounding-box height /
  width 0.966 / 0.932, width / height 0.975 / 0.966, longer / shorter side 0.975 / 0.967,
  this ellipse 0.975 / 0.978);
- perimeter^2 / area: scikit-image's perimeter estimate (4-connectivity); 4 pi for a disc,
  larger the more ragged the outline.

An empty mask (no lesion outlined: `normal` images with three classes, or a segmenter that
found nothing) gets the features of a vanishing disc: solidity 1, extent pi / 4, area
fraction 0, aspect 1, perimeter^2 / area 4 pi; the regression learns what that means from
the train split (with three classes, the normal images).
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable

import numpy as np

from modules import contract as C
from modules.calibration import robust_threshold
from modules.intervals.bootstrap import bootstrap_slices, rate_metrics
from modules.options import OperatingPoint

FEATURES = ("solidity", "extent", "area_fraction", "aspect", "perimeter2_per_area")
EMPTY = np.array([1.0, math.pi / 4, 0.0, 1.0, 4 * math.pi])  # a vanishing disc
EMPTY_NOTE = "an empty mask gets the features of a vanishing disc: " + ", ".join(
    f"{name} {value:.4g}" for name, value in zip(FEATURES, EMPTY, strict=True)
)
RULE = (
    "logistic regression (scikit-learn, standardised features) on five shape numbers of the "
    "lesion mask, no pixel of the image: " + ", ".join(FEATURES)
)


def shape_features(mask: np.ndarray | None) -> np.ndarray:
    """The five numbers [5] of a 2-D mask (> 0 = lesion); EMPTY for None or an empty mask."""
    if mask is None or not np.any(mask):
        return EMPTY.copy()
    from skimage.measure import regionprops

    mask = np.asarray(mask) > 0
    (region,) = regionprops(mask.astype(np.uint8))
    major, minor = np.asarray(region.inertia_tensor_eigvals, dtype=np.float64) + 1 / 12
    area = float(region.area)
    return np.array(
        [
            area / float(region.area_convex),
            area / float(region.area_bbox),
            area / float(mask.size),
            math.sqrt(major / minor),
            float(region.perimeter) ** 2 / area,
        ]
    )


def features_of(masks: Iterable[np.ndarray | None]) -> np.ndarray:
    """[n, 5] for n masks."""
    rows = [shape_features(m) for m in masks]
    return np.stack(rows) if rows else np.zeros([0, len(FEATURES)])


def mask_from_png(data: bytes) -> np.ndarray | None:
    """A record's `mask` feature (single-channel PNG, b"" when none) -> bool [h, w] or None."""
    if not data:
        return None
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("L")) > 0


def fit_rule(features: np.ndarray, positive: np.ndarray):
    """StandardScaler + LogisticRegression (lbfgs, C = 1: deterministic) fitted on train."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rule = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    return rule.fit(features, np.asarray(positive, int))


def probability(rule, features: np.ndarray) -> np.ndarray:
    """P(positive) [n] of the fitted rule."""
    return rule.predict_proba(features)[:, 1]


def decision_scores(p: np.ndarray, threshold: float) -> np.ndarray:
    """P(positive) mapped as the served `decision_score` maps it (modules/model.py): above
    0.5 exactly when p >= threshold, monotone, so `rate_metrics` gives the rates at the
    threshold and the AUC of p."""
    p = np.asarray(p, dtype=np.float64)
    below = 0.5 * p / max(threshold, 1e-6)
    above = 0.5 + 1e-6 + (0.5 - 1e-6) * (p - threshold) / max(1.0 - threshold, 1e-6)
    return np.where(p >= threshold, above, below)


def coefficients(rule) -> dict[str, float]:
    """The regression's weights per standardised feature, and its intercept."""
    model = rule[-1]
    out = {name: float(w) for name, w in zip(FEATURES, model.coef_[0], strict=True)}
    return {**out, "intercept": float(model.intercept_[0])}


def score_rule(
    train: tuple[np.ndarray, np.ndarray],
    eval_: tuple[np.ndarray, np.ndarray],
    tests: dict[str, tuple[np.ndarray, np.ndarray]],
    operating_point: str,
    operating_target: float,
    threshold_method: str,
    threshold_seed: int,
    resamples: int,
    seed: int,
    level: float,
) -> tuple[dict, dict[str, np.ndarray]]:
    """Fits the rule on train ((features [n, 5], labels [n]); positive = POSITIVE_LABEL:
    malignant against the rest), chooses its threshold on eval as the Trainer chooses the
    model's, and scores each test set of `tests` (name -> (features, labels)) with the
    seeded class-stratified bootstrap. Returns ({"fit": ..., name: overall entry}, {name:
    test decision scores [n]}); each entry is bootstrap_slices' "overall" (example count,
    metrics, intervals)."""
    positive = train[1] == C.POSITIVE_LABEL
    if positive.all() or not positive.any():
        raise ValueError("the mask-shape rule needs both classes in the train split")
    rule = fit_rule(train[0], positive)
    eval_positive = (eval_[1] == C.POSITIVE_LABEL).astype(int)
    threshold = robust_threshold(
        eval_positive,
        probability(rule, eval_[0]),
        OperatingPoint(operating_point),
        operating_target,
        threshold_method,
        seed=threshold_seed,
    )
    eval_called = probability(rule, eval_[0]) >= threshold
    report: dict = {
        "fit": {
            "train_images": int(len(train[1])),
            "coefficients": coefficients(rule),
            "threshold": threshold,
            "eval_sensitivity": float(eval_called[eval_positive == 1].mean()),
            "eval_specificity": float((~eval_called)[eval_positive == 0].mean()),
        }
    }
    scores = {}
    for name, (features, labels) in tests.items():
        scores[name] = decision_scores(probability(rule, features), threshold)
        report[name] = bootstrap_slices(
            labels, (scores[name],), rate_metrics, {}, [], resamples, seed, level
        )["overall"]
    return report, scores
