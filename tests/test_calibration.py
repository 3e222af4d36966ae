"""Temperature scaling and the operating threshold: the fitted T undoes a known distortion,
each rule reaches its target on the data it was chosen on, and the exported outputs decide
exactly as the threshold says."""

import numpy as np
import pytest
import tensorflow as tf

from modules import model as M
from modules.calibration import (
    calibrated_positive,
    choose_threshold,
    expected_calibration_error,
    fit_temperature,
    uncalibrated,
)
from modules.options import OperatingPoint


def sample(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from well-calibrated logits; returns (labels, logits [n, 2])."""
    rng = np.random.default_rng(seed)
    margin = rng.normal(0.0, 2.0, n)
    labels = (rng.random(n) < 1 / (1 + np.exp(-margin))).astype(int)
    return labels, np.stack([np.zeros(n), margin], axis=1)


def test_temperature_undoes_overconfidence_and_improves_ece():
    labels, logits = sample(4000, 0)
    overconfident = logits * 3.0  # what a model trained to overfit looks like
    t = fit_temperature(overconfident, labels)
    assert t == pytest.approx(3.0, rel=0.1)
    before = expected_calibration_error(labels, calibrated_positive(overconfident, 1.0, 1))
    after = expected_calibration_error(labels, calibrated_positive(overconfident, t, 1))
    assert after["ece"] < 0.02 < before["ece"]
    assert sum(b["count"] for b in after["reliability"]) == 4000
    # AUC does not move: same ranking
    p1, p2 = calibrated_positive(overconfident, 1.0, 1), calibrated_positive(overconfident, t, 1)
    assert (np.argsort(p1, kind="stable") == np.argsort(p2, kind="stable")).all()


def test_uncalibrated_recovers_the_probabilities_before_the_temperature():
    rng = np.random.default_rng(1)
    logits = rng.normal(0.0, 3.0, (50, 3))
    raw = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    calibrated = np.exp(logits / 2.5) / np.exp(logits / 2.5).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(uncalibrated(calibrated, 2.5), raw, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("target", [0.8, 0.95, 1.0])
def test_sensitivity_rule_is_the_highest_threshold_reaching_the_target(target):
    labels, logits = sample(300, 1)
    scores = calibrated_positive(logits, 1.0, 1)
    t = choose_threshold(labels, scores, OperatingPoint.SENSITIVITY, target)
    pos = scores[labels == 1]
    assert (pos >= t).mean() >= target
    higher = np.nextafter(t, 1.0)
    assert (pos >= higher).mean() < target  # any higher threshold misses the target


def test_specificity_and_youden_rules():
    labels, logits = sample(300, 2)
    scores = calibrated_positive(logits, 1.0, 1)
    t = choose_threshold(labels, scores, OperatingPoint.SPECIFICITY, 0.9)
    neg = scores[labels == 0]
    assert (neg < t).mean() >= 0.9 and (neg < np.nextafter(t, 0.0)).mean() < 0.9 + 1e-9
    y = choose_threshold(labels, scores, OperatingPoint.YOUDEN, 0.0)
    pos = scores[labels == 1]

    def youden(thr: float) -> float:
        return (pos >= thr).mean() + (neg < thr).mean() - 1

    assert youden(y) >= max(youden(c) for c in np.unique(scores)) - 1e-12
    with pytest.raises(ValueError, match="no positive example"):
        choose_threshold(np.zeros(3, int), np.ones(3), OperatingPoint.SENSITIVITY, 0.9)


def test_exported_outputs_decide_at_the_threshold():
    logits = tf.constant([[0.0, -2.0], [0.0, -0.1], [0.0, 0.3], [0.0, 4.0]])
    out = M.class_outputs(logits, M.Decision(temperature=2.0, threshold=0.45))
    p = out["positive_probability"].numpy()
    np.testing.assert_allclose(p, 1 / (1 + np.exp(-logits.numpy()[:, 1] / 2.0)), rtol=1e-6)
    assert out["class_id"].numpy().tolist() == (p >= 0.45).astype(int).tolist()
    assert ((out["decision_score"].numpy() > 0.5) == (p >= 0.45)).all()
    assert (np.diff(out["decision_score"].numpy()) > 0).all()  # monotone in P
    np.testing.assert_allclose(out["threshold"].numpy(), [0.45] * 4)


def test_robust_thresholds_hold_the_target_and_depend_less_on_one_image():
    from modules.calibration import robust_threshold

    rng = np.random.default_rng(0)
    labels = np.r_[np.ones(31, int), np.zeros(67, int)]
    scores = 1 / (1 + np.exp(-np.r_[rng.normal(2, 1, 31), rng.normal(-1, 1, 67)]))
    rule = OperatingPoint.SENSITIVITY
    for method in ("empirical", "bootstrap", "logit_normal"):
        t = robust_threshold(labels, scores, rule, 0.95, method, seed=1)
        assert 0.85 <= (scores[labels == 1] >= t).mean() <= 1.0, method
    assert robust_threshold(labels, scores, rule, 0.95, "bootstrap", seed=1) == robust_threshold(
        labels, scores, rule, 0.95, "bootstrap", seed=1
    )  # seeded: the same threshold twice
    # moving the second-lowest malignant score moves the empirical threshold with it, the
    # parametric one barely
    moved = scores.copy()
    second = np.argsort(np.where(labels == 1, scores, np.inf))[1]
    moved[second] = min(scores[labels == 1].min() + 1e-3, moved[second])
    shift = {
        m: abs(
            robust_threshold(labels, moved, rule, 0.95, m)
            - robust_threshold(labels, scores, rule, 0.95, m)
        )
        for m in ("empirical", "logit_normal")
    }
    assert shift["logit_normal"] < shift["empirical"] / 5, shift
    with pytest.raises(ValueError, match="threshold method"):
        robust_threshold(labels, scores, rule, 0.95, "magic")
