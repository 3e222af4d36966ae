"""Probabilities that mean what they say and a decision threshold chosen for a stated goal,
both fitted on the eval split after training and baked into the exported graph.

Why: SMOTE trains on a 50/50 world the clinic does not have, and from random init the 0.5
point swings with the split (docs/RESULTS.md: sensitivity 68 % or 87 % at nearly the same
AUC). Temperature scaling (Guo et al. 2017) divides the logits by one scalar T fitted to
minimise the eval split's log loss: it changes no ranking (AUC) but makes the probabilities
honest. The operating threshold is then chosen on those calibrated eval probabilities for
the configured goal, e.g. the highest threshold that keeps sensitivity >= 0.95.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax

from modules.options import OperatingPoint, ThresholdMethod, values


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """T > 0 minimising the mean negative log-likelihood of softmax(logits / T)."""

    def nll(log_t: float) -> float:
        logp = log_softmax(logits / math.exp(log_t), axis=1)
        return float(-logp[np.arange(len(labels)), labels].mean())

    best = minimize_scalar(nll, bounds=(-4.0, 4.0), method="bounded")
    return float(math.exp(best.x))


def uncalibrated(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """The probabilities before temperature scaling, from the calibrated ones [n, C]:
    T x log softmax(logits / T) is the logits up to a per-row constant."""
    logp = np.log(np.clip(np.asarray(probabilities, dtype=np.float64), 1e-12, 1.0))
    return softmax(temperature * logp, axis=1)


def calibrated_positive(logits: np.ndarray, temperature: float, positive: int) -> np.ndarray:
    return softmax(logits / temperature, axis=1)[:, positive]


def choose_threshold(
    labels: np.ndarray, scores: np.ndarray, rule: OperatingPoint, target: float
) -> float:
    """The threshold t (a case is called positive when score >= t) for the goal on this data.

    labels: 1 = positive. For SENSITIVITY the t is the k-th highest positive score with
    k = ceil(target x positives); for SPECIFICITY just above the k-th lowest negative score
    with k = ceil(target x negatives); for YOUDEN the observed score with the best sum of
    sensitivity and specificity (ties: the higher threshold).
    """
    pos = np.sort(scores[labels == 1])[::-1]
    neg = np.sort(scores[labels != 1])
    if rule is OperatingPoint.SENSITIVITY:
        if pos.size == 0:
            raise ValueError("no positive example in the eval split: cannot fix sensitivity")
        return float(pos[max(1, math.ceil(target * pos.size)) - 1])
    if rule is OperatingPoint.SPECIFICITY:
        if neg.size == 0:
            raise ValueError("no negative example in the eval split: cannot fix specificity")
        return float(np.nextafter(neg[max(1, math.ceil(target * neg.size)) - 1], np.inf))
    if pos.size == 0 or neg.size == 0:
        raise ValueError("the eval split needs both classes for Youden's index")
    candidates = np.unique(scores)[::-1]
    sens = (pos[None, :] >= candidates[:, None]).mean(axis=1)
    spec = (neg[None, :] < candidates[:, None]).mean(axis=1)
    return float(candidates[int(np.argmax(sens + spec))])


THRESHOLD_METHODS = tuple(values(ThresholdMethod))


def robust_threshold(
    labels: np.ndarray,
    scores: np.ndarray,
    rule: OperatingPoint,
    target: float,
    method: str,
    seed: int = 0,
    resamples: int = 1000,
) -> float:
    """`choose_threshold` with less dependence on one or two eval images.

    With ~31 malignant eval images, sensitivity >= 0.95 rests on the second-lowest malignant
    score, which swings from run to run (test sensitivity 0.60-0.97, design brief).
    `bootstrap`: the median of the rule's threshold over class-stratified resamples of the
    eval split (seeded); `logit_normal` (sensitivity / specificity only): the target quantile
    of a normal fitted to the logits of that class's scores; `empirical`: the rule as is.
    """
    if method not in THRESHOLD_METHODS:
        raise ValueError(f"threshold method must be one of {THRESHOLD_METHODS}, got {method!r}")
    if method == "empirical" or rule is OperatingPoint.YOUDEN and method == "logit_normal":
        return choose_threshold(labels, scores, rule, target)
    if method == "logit_normal":
        from scipy.stats import norm

        scores = np.clip(np.asarray(scores, dtype=np.float64), 1e-7, 1 - 1e-7)
        logit = np.log(scores / (1 - scores))
        if rule is OperatingPoint.SENSITIVITY:
            cls, q = logit[labels == 1], 1.0 - target
        else:
            cls, q = logit[labels != 1], target
        if cls.size < 2:
            return choose_threshold(labels, scores, rule, target)
        x = norm.ppf(q, loc=cls.mean(), scale=cls.std(ddof=1))
        return float(1.0 / (1.0 + np.exp(-x)))
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(labels == 1), np.flatnonzero(labels != 1)]
    picks = []
    for _ in range(resamples):
        idx = np.concatenate([rng.choice(g, g.size) for g in groups if g.size])
        picks.append(choose_threshold(labels[idx], scores[idx], rule, target))
    return float(np.median(picks))


def expected_calibration_error(labels: np.ndarray, scores: np.ndarray, bins: int = 10) -> dict:
    """ECE of P(positive) over equal-width bins, and the reliability table behind it
    (per bin: count, mean predicted probability, observed positive rate)."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(scores, edges[1:-1]), 0, bins - 1)
    table, ece = [], 0.0
    for b in range(bins):
        members = which == b
        if not members.any():
            continue
        predicted = float(scores[members].mean())
        observed = float((labels[members] == 1).mean())
        ece += members.mean() * abs(predicted - observed)
        table.append(
            {"bin": b, "count": int(members.sum()), "predicted": predicted, "observed": observed}
        )
    return {"ece": float(ece), "reliability": table}
