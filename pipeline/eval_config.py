"""TFMA EvalConfig from the pipeline config: metrics, slices, value and change thresholds."""

from __future__ import annotations

import tensorflow_model_analysis as tfma

from pipeline.config import PipelineConfig

# TFMA metric class -> the metric name thresholds are keyed by.
METRICS = {
    "ExampleCount": "example_count",
    "BinaryAccuracy": "binary_accuracy",
    "AUC": "auc",
    "Precision": "precision",
    "Recall": "recall",
    "Specificity": "specificity",
    "F1Score": "f1_score",
}


def _threshold(lower: float | None, max_drop: float | None) -> tfma.MetricThreshold:
    t = tfma.MetricThreshold()
    if lower is not None:
        t.value_threshold.CopyFrom(tfma.GenericValueThreshold(lower_bound={"value": lower}))
    if max_drop is not None:
        t.change_threshold.CopyFrom(
            tfma.GenericChangeThreshold(
                direction=tfma.MetricDirection.HIGHER_IS_BETTER, absolute={"value": -max_drop}
            )
        )
    return t


def build_eval_config(cfg: PipelineConfig) -> tfma.EvalConfig:
    unknown = {*cfg.thresholds, *cfg.max_regression} - set(METRICS.values())
    for per in cfg.slice_thresholds.values():
        unknown |= set(per) - set(METRICS.values())
    if unknown:
        raise ValueError(f"unknown metric(s) in thresholds: {sorted(unknown)}; use {sorted(METRICS.values())}")
    metrics = []
    for class_name, name in METRICS.items():
        mc = tfma.MetricConfig(class_name=class_name)
        if name in cfg.thresholds or name in cfg.max_regression:
            mc.threshold.CopyFrom(_threshold(cfg.thresholds.get(name), cfg.max_regression.get(name)))
        for feature, per in sorted(cfg.slice_thresholds.items()):
            if name in per:
                mc.per_slice_thresholds.append(
                    tfma.PerSliceMetricThreshold(
                        slicing_specs=[tfma.SlicingSpec(feature_keys=[feature])],
                        threshold=_threshold(per[name], None),
                    )
                )
        metrics.append(mc)
    config = tfma.EvalConfig(
        model_specs=[
            tfma.ModelSpec(
                signature_name="serving_default",
                preprocessing_function_names=["transform_features"],
                label_key="label",
                prediction_key="positive_probability",
            )
        ],
        slicing_specs=[tfma.SlicingSpec()]
        + [tfma.SlicingSpec(feature_keys=[f]) for f in cfg.slice_features],
        metrics_specs=[tfma.MetricsSpec(metrics=metrics)],
    )
    # The saved Keras model carries its compiled loss over 2-class probabilities; TFMA would
    # apply it to `positive_probability`. Only the metrics listed above are wanted.
    config.options.include_default_metrics.value = False
    return config
