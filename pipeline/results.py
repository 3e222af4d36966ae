"""Reads what the last run produced from MLMD: pushed model path and test-split metrics."""

from __future__ import annotations

import math
import os

import tensorflow_model_analysis as tfma
from ml_metadata import metadata_store
from tfx.orchestration import metadata

from pipeline.config import PipelineConfig


def _latest(store: metadata_store.MetadataStore, type_name: str):
    arts = store.get_artifacts_by_type(type_name)
    return max(arts, key=lambda a: a.id) if arts else None


def latest_results(cfg: PipelineConfig) -> dict:
    """Keys: pushed, pushed_destination (or None), blessed, metrics ({slice: {metric: value}}),
    intervals ({slice: {metric: (lower, upper)}}, 95 %, when the config computes them)."""
    conn = metadata.sqlite_metadata_connection_config(cfg.metadata_path)
    store = metadata_store.MetadataStore(conn)
    out: dict = {
        "pushed": False,
        "pushed_destination": None,
        "blessed": False,
        "metrics": {},
        "intervals": {},
    }
    pushed = _latest(store, "PushedModel")
    if pushed is not None:
        props = pushed.custom_properties
        out["pushed"] = bool(props["pushed"].int_value) if "pushed" in props else False
        if out["pushed"]:
            out["pushed_destination"] = props["pushed_destination"].string_value
    blessing = _latest(store, "ModelBlessing")
    if blessing is not None and "blessed" in blessing.custom_properties:
        out["blessed"] = bool(blessing.custom_properties["blessed"].int_value)
    evaluation = _latest(store, "ModelEvaluation")
    if evaluation is not None and os.path.exists(evaluation.uri):
        for slice_key, metrics, intervals in _slices(evaluation.uri):
            out["metrics"][slice_key] = metrics
            if intervals:
                out["intervals"][slice_key] = intervals
    return out


def _slices(uri: str):
    result = tfma.load_eval_result(uri)
    for slice_key, by_output in result.slicing_metrics:
        name = "overall" if not slice_key else ",".join(f"{k}={v}" for k, v in slice_key)
        values = by_output.get("", {}).get("", {})
        flat, intervals = {}, {}
        for metric, v in values.items():
            if "doubleValue" in v:
                flat[metric] = float(v["doubleValue"])  # NaN arrives as the string "NaN"
            elif "boundedValue" in v:
                b = v["boundedValue"]
                flat[metric] = float(b["value"])
                if "lowerBound" in b and "upperBound" in b:
                    intervals[metric] = (float(b["lowerBound"]), float(b["upperBound"]))
        yield name, flat, intervals


def _value(metric: str, value: float) -> str:
    return f"{value:.0f}" if metric == "example_count" else f"{value:.4f}"


def _interval(bounds: tuple[float, float] | None) -> str:
    """Jackknife t-intervals are symmetric and can pass 0 or 1; every rate shown lives in
    [0, 1], so the printed bounds are clipped there."""
    if bounds is None or math.isnan(sum(bounds)):
        return "-"
    return f"{max(bounds[0], 0.0):.2f}-{min(bounds[1], 1.0):.2f}"


def format_metrics(
    metrics: dict[str, dict[str, float]],
    intervals: dict[str, dict[str, tuple[float, float]]] | None = None,
) -> str:
    """One row per slice; with intervals, a `95% CI` row under each slice that has them."""
    cols = [
        "example_count",
        "binary_accuracy",
        "auc",
        "precision",
        "recall",
        "specificity",
        "f1_score",
    ]
    lines = [f"{'slice':<28}" + "".join(f"{c[:11]:>12}" for c in cols)]
    for name in sorted(metrics, key=lambda n: (n != "overall", n)):
        m = metrics[name]
        cells = [_value(c, m[c]) if c in m else "-" for c in cols]
        lines.append(f"{name[:28]:<28}" + "".join(f"{x:>12}" for x in cells))
        ci = (intervals or {}).get(name)
        if ci:
            cells = ["" if c == "example_count" else _interval(ci.get(c)) for c in cols]
            lines.append(f"{'  95% CI':<28}" + "".join(f"{x:>12}" for x in cells))
    return "\n".join(lines)
