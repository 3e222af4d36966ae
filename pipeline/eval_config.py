"""TFMA EvalConfig from the pipeline config: metrics, slices, value and change thresholds."""

from __future__ import annotations

from tensorflow_model_analysis.proto import config_pb2

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


def _threshold(lower: float | None, max_drop: float | None) -> config_pb2.MetricThreshold:
    t = config_pb2.MetricThreshold()
    if lower is not None:
        t.value_threshold.CopyFrom(config_pb2.GenericValueThreshold(lower_bound={"value": lower}))
    if max_drop is not None:
        t.change_threshold.CopyFrom(
            config_pb2.GenericChangeThreshold(
                direction=config_pb2.MetricDirection.HIGHER_IS_BETTER, absolute={"value": -max_drop}
            )
        )
    return t


def build_eval_config(cfg: PipelineConfig) -> config_pb2.EvalConfig:
    unknown = {*cfg.thresholds, *cfg.max_regression} - set(METRICS.values())
    for per in cfg.slice_thresholds.values():
        unknown |= set(per) - set(METRICS.values())
    if unknown:
        raise ValueError(
            f"unknown metric(s) in thresholds: {sorted(unknown)}; use {sorted(METRICS.values())}"
        )
    # TFMA applies MetricConfig.threshold to every slice (AUC on a one-class `label` slice is
    # 0), so overall bounds are per-slice thresholds on the overall slice only.
    per_feature = {"": cfg.thresholds, **cfg.slice_thresholds}
    metrics = []
    for class_name, name in METRICS.items():
        mc = config_pb2.MetricConfig(class_name=class_name)
        for feature, bounds in sorted(per_feature.items()):
            drop = cfg.max_regression.get(name) if feature == "" else None
            if name in bounds or drop is not None:
                spec = config_pb2.SlicingSpec(feature_keys=[feature] if feature else [])
                mc.per_slice_thresholds.append(
                    config_pb2.PerSliceMetricThreshold(
                        slicing_specs=[spec], threshold=_threshold(bounds.get(name), drop)
                    )
                )
        metrics.append(mc)
    config = config_pb2.EvalConfig(
        model_specs=[
            config_pb2.ModelSpec(
                signature_name="serving_default",
                preprocessing_function_names=["transform_features"],
                label_key="label",
                prediction_key="positive_probability",
            )
        ],
        slicing_specs=[config_pb2.SlicingSpec()]
        + [config_pb2.SlicingSpec(feature_keys=[f]) for f in cfg.slice_features],
        metrics_specs=[config_pb2.MetricsSpec(metrics=metrics)],
    )
    # The saved Keras model carries its compiled loss over 2-class probabilities; TFMA would
    # apply it to `positive_probability`. Only the metrics listed above are wanted.
    config.options.include_default_metrics.value = False
    if cfg.confidence_intervals:
        config.options.compute_confidence_intervals.value = True
        config.options.confidence_intervals.method = config_pb2.ConfidenceIntervalOptions.JACKKNIFE
    return config
