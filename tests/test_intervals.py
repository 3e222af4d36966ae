"""Bootstrap intervals: fixed for fixed inputs, defined on tiny two-class slices, and the
metrics they resample equal scikit-learn's definitions."""

import numpy as np
import pytest
from sklearn import metrics as skm

from modules import contract as C
from modules.intervals.bootstrap import (
    point_estimates,
    rate_metrics,
    slice_intervals,
    stratified_bootstrap,
)
from modules.intervals.multiclass import class_metrics, confusion_matrix, multiclass_intervals


def sample(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % 3 == 0).astype(np.int64)  # one third positive
    scores = np.clip(rng.normal(0.35 + 0.3 * labels, 0.2), 0, 1)
    return labels, scores


def test_rate_metrics_match_scikit_learn():
    labels, scores = sample(90, 0)
    got = point_estimates(labels, scores)
    pred = scores > 0.5
    assert got["binary_accuracy"] == pytest.approx(skm.accuracy_score(labels, pred))
    assert got["precision"] == pytest.approx(skm.precision_score(labels, pred))
    assert got["recall"] == pytest.approx(skm.recall_score(labels, pred))
    assert got["specificity"] == pytest.approx(skm.recall_score(1 - labels, ~pred))
    assert got["f1_score"] == pytest.approx(skm.f1_score(labels, pred))
    assert got["auc"] == pytest.approx(skm.roc_auc_score(labels, scores))
    assert set(got) == set(C.RATE_METRICS)  # the contract's metrics, no more, no fewer
    tied = rate_metrics(np.array([[0, 1, 0, 1]]), np.array([[0.5, 0.5, 0.2, 0.9]]))
    assert tied["auc"][0] == pytest.approx(skm.roc_auc_score([0, 1, 0, 1], [0.5, 0.5, 0.2, 0.9]))


def test_same_inputs_same_bounds_and_seed_matters():
    labels, scores = sample(60, 1)
    a = stratified_bootstrap(labels, scores, 500, seed=42, level=0.95)
    b = stratified_bootstrap(labels, scores, 500, seed=42, level=0.95)
    c = stratified_bootstrap(labels, scores, 500, seed=43, level=0.95)
    assert a == b
    assert a != c
    point = point_estimates(labels, scores)
    for name, (lower, upper) in a.items():
        assert lower <= point[name] <= upper, (name, lower, point[name], upper)


def test_four_examples_two_per_class_every_interval_defined():
    """The demo's test split: two benign, two malignant. An unstratified resample would draw
    one class only in 1 of 8 draws and leave AUC / specificity undefined there."""
    labels = np.array([0, 1, 0, 1])
    scores = np.array([0.2, 0.7, 0.6, 0.4])
    got = stratified_bootstrap(labels, scores, 1000, seed=0, level=0.95)
    for name in ("binary_accuracy", "auc", "recall", "specificity"):
        lower, upper = got[name]
        assert np.isfinite(lower) and np.isfinite(upper), name
        assert 0.0 <= lower <= upper <= 1.0


def test_slices_are_independent_of_each_other_and_wider_when_smaller():
    labels, scores = sample(300, 2)
    features = {"modality": ["ultrasound"] * 300, "dataset": ["a"] * 30 + ["b"] * 270}
    both = slice_intervals(labels, scores, features, ["modality", "dataset"], 400, 7, 0.95)
    alone = slice_intervals(labels, scores, features, ["dataset"], 400, 7, 0.95)
    assert both["overall"] == alone["overall"] and both["dataset=a"] == alone["dataset=a"]
    assert both["modality=ultrasound"] == both["overall"]  # same examples, same interval
    assert both["dataset=a"]["example_count"] == 30
    one_class = slice_intervals(labels, scores, {"label": labels.tolist()}, ["label"], 100, 7, 0.95)
    assert np.isnan(one_class["label=0"]["intervals"]["auc"][0])  # AUC needs both classes

    def width(s, m):
        lower, upper = both[s]["intervals"][m]
        return upper - lower

    assert width("dataset=a", "auc") > width("dataset=b", "auc")
    assert width("dataset=a", "binary_accuracy") > width("overall", "binary_accuracy")


def test_three_class_metrics_match_scikit_learn():
    rng = np.random.default_rng(7)
    labels = np.arange(60) % 3
    probs = rng.dirichlet([1, 1, 1], size=60) + 0.6 * np.eye(3)[labels]
    probs /= probs.sum(axis=1, keepdims=True)
    called = probs.argmax(axis=1)
    called[:5] = 1  # a threshold rule can overrule the argmax
    names = ["benign", "malignant", "normal"]
    got = {
        k: float(v[0])
        for k, v in class_metrics(labels[None], called[None], probs[None], names).items()
    }
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(labels, called))
    for k, name in enumerate(names):
        truth, hit = labels == k, called == k
        assert got[f"sensitivity/{name}"] == pytest.approx(skm.recall_score(truth, hit))
        assert got[f"specificity/{name}"] == pytest.approx(skm.recall_score(~truth, ~hit))
        assert got[f"auc/{name}"] == pytest.approx(skm.roc_auc_score(truth, probs[:, k]))
    assert got["macro_auc"] == pytest.approx(
        skm.roc_auc_score(labels, probs, multi_class="ovr", average="macro")
    )
    assert confusion_matrix(labels, called, 3) == skm.confusion_matrix(labels, called).tolist()


def test_three_class_intervals_are_reproducible_and_cover_the_estimate():
    rng = np.random.default_rng(3)
    labels = np.arange(45) % 3
    probs = rng.dirichlet([2, 2, 2], size=45) + 0.4 * np.eye(3)[labels]
    probs /= probs.sum(axis=1, keepdims=True)
    called = probs.argmax(axis=1)
    features = {"dataset": ["busi"] * 30 + ["other"] * 15}
    args = (labels, called, probs, ["benign", "malignant", "normal"], features, ["dataset"])
    a = multiclass_intervals(*args, 300, 42, 0.95)
    assert a == multiclass_intervals(*args, 300, 42, 0.95)
    assert a != multiclass_intervals(*args, 300, 43, 0.95)
    assert set(a) == {"overall", "dataset=busi", "dataset=other"}
    for entry in a.values():
        for name, (lo, hi) in entry["intervals"].items():
            assert lo <= entry["metrics"][name] + 1e-9 and entry["metrics"][name] <= hi + 1e-9
