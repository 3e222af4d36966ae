"""TFMA EvalConfig from the pipeline config: metrics, slices, value and change thresholds."""

from __future__ import annotations

from tensorflow_model_analysis.proto import config_pb2

from modules import contract as C
from modules.options import Architecture
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
    # ROI on: every request's mask is ignored, so the gated metrics are those of the served
    # model for a client without masks (the segmenter's ROI). Each TFMA output name is the
    # signature output it reads. `decision_score` > 0.5 <=> the served positive call;
    # `positive_probability` (calibrated P(malignant)) gets TFMA's calibration metric and
    # plot; with three classes, malignant against the rest is `is_positive` (Transform).
    positive = C.LABEL if len(cfg.classes) == 2 else C.IS_POSITIVE
    per_output = {
        C.DECISION_SCORE: (positive, [config_pb2.MetricsSpec(metrics=metrics)]),
        C.POSITIVE_PROBABILITY: (
            positive,
            [config_pb2.MetricsSpec(metrics=[_metric("Calibration"), _metric("CalibrationPlot")])],
        ),
    }
    if len(cfg.classes) > 2:
        per_output.update(_multiclass_specs(len(cfg.classes)))
    joint = cfg.architecture is Architecture.JOINT
    spec = config_pb2.ModelSpec(
        # without masks whenever a mask changes the answer (ROI on, or the joint network's
        # attention): the Evaluator gates on the deployable figures, never the ORACLE
        signature_name=C.PREDICT_NO_MASK if cfg.roi or joint else C.SERVING_DEFAULT,
        preprocessing_function_names=[C.TRANSFORM_FEATURES],
        label_keys={output: label for output, (label, _) in per_output.items()},
    )
    metrics_specs = []
    for output, (_, specs) in per_output.items():
        for ms in specs:
            ms.output_names.append(output)
            metrics_specs.append(ms)
    config = config_pb2.EvalConfig(
        model_specs=[spec],
        slicing_specs=[config_pb2.SlicingSpec()]
        + [config_pb2.SlicingSpec(feature_keys=[f]) for f in cfg.slice_features],
        metrics_specs=metrics_specs,
    )
    # The saved Keras model carries its compiled loss over the class probabilities; TFMA
    # would apply it to the prediction. Only the metrics listed above are wanted.
    config.options.include_default_metrics.value = False
    # Intervals come from the BootstrapIntervals component (seeded); TFMA's are not.
    config.options.compute_confidence_intervals.value = False
    return config


def _metric(name: str) -> config_pb2.MetricConfig:
    return config_pb2.MetricConfig(class_name=name)


def _multiclass_specs(classes: int) -> dict[str, tuple[str, list[config_pb2.MetricsSpec]]]:
    """The outputs a three-class model adds, each against `label`: `class_one_hot` (the
    served call as a one-hot row: per class one-vs-rest recall = sensitivity and
    specificity, their micro average, whose recall is the accuracy, and the confusion
    matrix) and `probabilities` (per class one-vs-rest AUC and the macro AUC)."""
    per_class = config_pb2.BinarizationOptions(class_ids={"values": list(range(classes))})
    weights = {k: 1.0 for k in range(classes)}  # averages over every class, equally
    return {
        C.CLASS_ONE_HOT: (
            C.LABEL,
            [
                config_pb2.MetricsSpec(
                    metrics=[_metric("Recall"), _metric("Specificity")],
                    binarize=per_class,
                    aggregate=config_pb2.AggregationOptions(
                        micro_average=True, class_weights=weights
                    ),
                ),
                config_pb2.MetricsSpec(metrics=[_metric("MultiClassConfusionMatrixPlot")]),
            ],
        ),
        C.PROBABILITIES: (
            C.LABEL,
            [
                config_pb2.MetricsSpec(
                    metrics=[_metric("AUC")],
                    binarize=per_class,
                    aggregate=config_pb2.AggregationOptions(
                        macro_average=True, class_weights=weights
                    ),
                )
            ],
        ),
    }
