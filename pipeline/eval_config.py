"""TFMA EvalConfig from the pipeline config: metrics, slices, value and change thresholds."""

from __future__ import annotations

from tensorflow_model_analysis.proto import config_pb2

from modules import contract as C
from pipeline.config import PipelineConfig


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
    unknown = {*cfg.thresholds, *cfg.max_regression} - set(C.METRIC_NAMES)
    for per in cfg.slice_thresholds.values():
        unknown |= set(per) - set(C.METRIC_NAMES)
    if unknown:
        raise ValueError(
            f"unknown metric(s) in thresholds: {sorted(unknown)}; use {sorted(C.METRIC_NAMES)}"
        )
    # TFMA applies MetricConfig.threshold to every slice (AUC on a one-class `label` slice is
    # 0), so overall bounds are per-slice thresholds on the overall slice only.
    per_feature = {"": cfg.thresholds, **cfg.slice_thresholds}
    metrics = []
    for class_name, name in C.METRICS.items():
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
                # ROI on: every request's mask is ignored, so the gated metrics are those
                # of the served model for a client without masks (the segmenter's ROI).
                signature_name=C.PREDICT_NO_MASK if cfg.roi else C.SERVING_DEFAULT,
                preprocessing_function_names=[C.TRANSFORM_FEATURES],
                label_key=C.LABEL,
                prediction_key=C.DECISION_SCORE,  # > 0.5 <=> the served positive call
            )
        ],
        slicing_specs=[config_pb2.SlicingSpec()]
        + [config_pb2.SlicingSpec(feature_keys=[f]) for f in cfg.slice_features],
        metrics_specs=[config_pb2.MetricsSpec(metrics=metrics)],
    )
    # The saved Keras model carries its compiled loss over 2-class probabilities; TFMA would
    # apply it to `positive_probability`. Only the metrics listed above are wanted.
    config.options.include_default_metrics.value = False
    # Intervals come from the BootstrapIntervals component (seeded); TFMA's are not.
    config.options.compute_confidence_intervals.value = False
    return config
