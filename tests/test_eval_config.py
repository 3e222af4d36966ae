"""TFMA config: overall bounds only on the overall slice, slice bounds on their feature."""

import pytest

from pipeline.config import profile
from pipeline.eval_config import build_eval_config


def thresholds_by_metric(cfg) -> dict:
    out = {}
    for mc in build_eval_config(cfg).metrics_specs[0].metrics:
        assert not mc.HasField("threshold")  # would apply to every slice, `label=0` included
        for pst in mc.per_slice_thresholds:
            key = tuple(pst.slicing_specs[0].feature_keys)
            t = pst.threshold
            out[(mc.class_name, key)] = (
                t.value_threshold.lower_bound.value if t.HasField("value_threshold") else None,
                t.change_threshold.absolute.value if t.HasField("change_threshold") else None,
            )
    return out


def test_overall_and_per_slice_thresholds():
    cfg = profile(
        "busi-paper",
        thresholds={"auc": 0.7, "recall": 0.8},
        slice_thresholds={"modality": {"binary_accuracy": 0.6}},
        max_regression={"auc": 0.02},
    )
    assert thresholds_by_metric(cfg) == {
        ("AUC", ()): (0.7, -0.02),
        ("Recall", ()): (0.8, None),
        ("BinaryAccuracy", ("modality",)): (0.6, None),
    }
    config = build_eval_config(cfg)
    slices = [tuple(s.feature_keys) for s in config.slicing_specs]
    assert slices == [(), ("modality",), ("dataset",), ("label",), ("has_mask",)]
    assert config.model_specs[0].prediction_key == "decision_score"


def test_unknown_metric_is_rejected():
    with pytest.raises(ValueError, match="accuracy"):
        build_eval_config(profile("demo", thresholds={"accuracy": 0.5}))
