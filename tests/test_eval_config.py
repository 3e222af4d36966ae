"""TFMA config: overall bounds only on the overall slice, slice bounds on their feature."""

import pytest

from modules import contract as C
from pipeline.config import PipelineConfig, profile
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
    spec = config.model_specs[0]
    assert dict(spec.label_keys) == {"decision_score": "label", "positive_probability": "label"}
    by_output = {
        ms.output_names[0]: [m.class_name for m in ms.metrics] for ms in config.metrics_specs
    }
    assert by_output["positive_probability"] == ["Calibration", "CalibrationPlot"]
    assert by_output["decision_score"] == list(C.METRICS)  # gated at the served threshold


def test_unknown_metric_is_rejected():
    with pytest.raises(ValueError, match="accuracy"):
        build_eval_config(profile("demo", thresholds={"accuracy": 0.5}))


def test_three_classes_add_per_class_outputs_and_keep_the_binary_gates():
    """The binary metrics and every threshold stay on `decision_score` (malignant against
    the rest, labelled by `is_positive`); the served one-hot call and the probabilities get
    per-class metrics against `label`."""
    cfg = profile("busi-paper", classes=("normal", "benign", "malignant"))
    assert cfg.classes == ("benign", "malignant", "normal")  # by label id
    config = build_eval_config(cfg)
    spec = config.model_specs[0]
    assert dict(spec.label_keys) == {
        "decision_score": "is_positive",
        "positive_probability": "is_positive",
        "class_one_hot": "label",
        "probabilities": "label",
    }
    by_output = {}
    for ms in config.metrics_specs:
        names = [m.class_name for m in ms.metrics]
        by_output.setdefault(ms.output_names[0], []).append(
            (names, list(ms.binarize.class_ids.values))
        )
    assert by_output["probabilities"] == [(["AUC"], [0, 1, 2])]
    assert (["Recall", "Specificity"], [0, 1, 2]) in by_output["class_one_hot"]
    assert (["MultiClassConfusionMatrixPlot"], []) in by_output["class_one_hot"]
    gated = [m for m in config.metrics_specs[0].metrics if m.per_slice_thresholds]
    assert config.metrics_specs[0].output_names == ["decision_score"] and gated


def test_classes_must_have_label_ids_from_zero():
    with pytest.raises(ValueError, match="label ids"):
        profile("demo", classes=("benign", "normal"))


def test_the_evaluator_gates_a_joint_model_without_masks():
    """A joint model pools under a given mask: serving_default with the records' masks would
    be the ORACLE, so the Evaluator reads predict_no_mask, as with ROI on."""
    joint = PipelineConfig(architecture="joint", roi=False, image_size=64)
    assert build_eval_config(joint).model_specs[0].signature_name == C.PREDICT_NO_MASK
    plain = PipelineConfig(roi=False, image_size=64)
    assert build_eval_config(plain).model_specs[0].signature_name == C.SERVING_DEFAULT
