"""Reads what the last run produced from MLMD: pushed model path and test-split metrics."""

from __future__ import annotations

import json
import math
import os

import tensorflow_model_analysis as tfma
from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2

from modules import contract as C
from modules.intervals.component import INTERVALS_FILE, MetricIntervals
from modules.segmenter.evaluation import RESULT_FILE, SegmentationMetrics


def _latest(store: metadata_store.MetadataStore, type_name: str):
    arts = store.get_artifacts_by_type(type_name)
    return max(arts, key=lambda a: a.id) if arts else None


def latest_results(metadata_connection_config: metadata_store_pb2.ConnectionConfig) -> dict:
    """Keys: pushed, pushed_destination (or None), blessed, metrics ({slice: {metric: value}},
    TFMA's, at the exported operating threshold), intervals ({slice: {metric: (lower,
    upper)}}, from BootstrapIntervals for the model the Evaluator judged, when the config
    computes them) and, with them, at_probability_0_5 (overall metrics and intervals at
    P > 0.5), oracle (overall metrics and intervals when every test request carries the
    radiologist's mask) and calibration (temperature, test ECE without / with it); with three
    classes, multiclass (BootstrapIntervals' per-class report; `metrics` are then malignant
    against the rest); per_image (the test split's labels and answers); mask_shape_rule (the
    no-pixel rule on the mask's outline beside the ORACLE, modules/intervals/mask_shape.py);
    and, with ROI on, segmentation (the segmenter's test Dice / IoU report)."""
    store = metadata_store.MetadataStore(metadata_connection_config)
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
    model_uri = None
    if blessing is not None:
        props = blessing.custom_properties
        out["blessed"] = bool(props["blessed"].int_value) if "blessed" in props else False
        model_uri = props["current_model"].string_value if "current_model" in props else None
    evaluation = _latest(store, "ModelEvaluation")
    if evaluation is not None and os.path.exists(evaluation.uri):
        out["metrics"] = dict(_slices(evaluation.uri))
    report = _intervals_report(store, model_uri)
    out["intervals"] = _bounds(report.get("slices", {}))
    if report:
        half = report["at_probability_0_5"].get("overall", {})
        out["at_probability_0_5"] = {
            "metrics": half.get("metrics", {}),
            "intervals": _bounds({"overall": half}).get("overall", {}) if half else {},
        }
        oracle = report.get("oracle_slices", {}).get("overall")
        if oracle:
            out["oracle"] = {
                "metrics": oracle["metrics"],
                "intervals": _bounds({"overall": oracle})["overall"],
            }
        for key in ("multiclass", "per_image", "mask_shape_rule"):
            if key in report:
                out[key] = report[key]
        calibration = report["calibration"]
        out["calibration"] = {
            "temperature": calibration["temperature"],
            "test_ece_uncalibrated": calibration["uncalibrated"]["ece"],
            "test_ece_calibrated": calibration["calibrated"]["ece"],
        }
    segmentation = _latest(store, SegmentationMetrics.TYPE_NAME)
    path = segmentation and os.path.join(segmentation.uri, RESULT_FILE)
    if path and os.path.exists(path):
        with open(path) as f:
            out["segmentation"] = json.load(f)
    return out


def _bounds(slices: dict) -> dict:
    return {name: {m: tuple(b) for m, b in s["intervals"].items()} for name, s in slices.items()}


def _intervals_report(store: metadata_store.MetadataStore, model_uri: str | None) -> dict:
    """BootstrapIntervals' report for the evaluated model (a rerun on a cached model reuses
    it): intervals per slice at the operating threshold and at 0.5, test calibration."""
    arts = sorted(store.get_artifacts_by_type(MetricIntervals.TYPE_NAME), key=lambda a: -a.id)
    for art in arts:
        if model_uri and art.custom_properties["model_uri"].string_value != model_uri:
            continue
        path = os.path.join(art.uri, INTERVALS_FILE)
        if os.path.exists(path):
            with open(path) as f:
                return json.load(f)
    return {}


def _slices(uri: str):
    result = tfma.load_eval_result(uri)
    for slice_key, by_output in result.slicing_metrics:
        name = "overall" if not slice_key else ",".join(f"{k}={v}" for k, v in slice_key)
        # the binary metrics (on `decision_score`) and TFMA's calibration (mean prediction
        # over mean label, on `positive_probability`); runs before both were TFMA outputs
        # have the binary metrics alone, unnamed
        values = {
            **by_output.get("", {}).get("", {}),
            **by_output.get(C.DECISION_SCORE, {}).get("", {}),
            **by_output.get(C.POSITIVE_PROBABILITY, {}).get("", {}),
        }
        flat = {}
        for metric, v in values.items():
            if "doubleValue" in v:
                flat[metric] = float(v["doubleValue"])  # NaN arrives as the string "NaN"
            elif "boundedValue" in v:
                flat[metric] = float(v["boundedValue"]["value"])
        yield name, flat


def _value(metric: str, value: float) -> str:
    return f"{value:.0f}" if metric == "example_count" else f"{value:.4f}"


def _interval(bounds: tuple[float, float] | None) -> str:
    if bounds is None or math.isnan(sum(bounds)):
        return "-"
    return f"{bounds[0]:.2f}-{bounds[1]:.2f}"


def format_metrics(
    metrics: dict[str, dict[str, float]],
    intervals: dict[str, dict[str, tuple[float, float]]] | None = None,
) -> str:
    """One row per slice; with intervals, a `95% CI` row under each slice that has them."""
    cols = C.METRIC_NAMES
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


def format_decision(res: dict) -> str:
    """The operating point against P > 0.5 on test, deployable against oracle, the
    segmenter, and calibration: one line each, where the run has them."""
    lines = []
    at = res.get("at_probability_0_5")
    if at and "overall" in res["metrics"]:
        op, ci = res["metrics"]["overall"], res["intervals"].get("overall", {})

        def cell(metrics: dict, bounds: dict, name: str) -> str:
            return f"{metrics.get(name, float('nan')):.3f} [{_interval(bounds.get(name))}]"

        lines.append(
            "operating threshold: sensitivity "
            + cell(op, ci, "recall")
            + ", specificity "
            + cell(op, ci, "specificity")
            + "; at P > 0.5: sensitivity "
            + cell(at["metrics"], at["intervals"], "recall")
            + ", specificity "
            + cell(at["metrics"], at["intervals"], "specificity")
        )
    oracle = res.get("oracle")
    if oracle and "overall" in res["metrics"]:
        mine, ci = res["metrics"]["overall"], res["intervals"].get("overall", {})
        lines.append(
            "without masks (deployable, what the Evaluator gated): AUC "
            f"{mine.get('auc', float('nan')):.3f} [{_interval(ci.get('auc'))}]; with the "
            f"radiologist's mask (ORACLE): AUC {oracle['metrics']['auc']:.3f} "
            f"[{_interval(oracle['intervals'].get('auc'))}], accuracy "
            f"{oracle['metrics']['binary_accuracy']:.3f}"
        )
    if res.get("mask_shape_rule"):
        lines.append(format_mask_shape_rule(res["mask_shape_rule"]))
    seg = res.get("segmentation")
    if seg:
        overall = seg["slices"]["overall"]
        m, ci = overall["metrics"], overall["intervals"]
        lines.append(
            f"segmenter on {seg['split']} ({overall['example_count']} images): Dice "
            f"{m['dice']:.3f} [{_interval(ci['dice'])}], IoU {m['iou']:.3f}; served ROI Dice "
            f"{m['roi_dice']:.3f}; baselines: centre disk "
            f"{seg['baselines_dice']['centre_disk']:.3f}, whole image "
            f"{seg['baselines_dice']['all_foreground']:.3f}"
        )
    if res.get("multiclass"):
        lines.append(format_multiclass(res["multiclass"]))
    cal = res.get("calibration")
    if cal:
        lines.append(
            f"calibration: temperature {cal['temperature']:.3f}, test ECE "
            f"{cal['test_ece_uncalibrated']:.3f} -> {cal['test_ece_calibrated']:.3f}"
        )
    return "\n".join(lines)


def format_mask_shape_rule(rule: dict) -> str:
    """The no-pixel rule beside the ORACLE: on the radiologist's outline, at the served
    24 px, and on the segmenter's outline, where the run has them (malignant against the
    rest, at the threshold it chose on eval)."""

    def cell(entry: dict, name: str) -> str:
        bounds = entry["intervals"].get(name)
        return f"{entry['metrics'][name]:.3f} [{_interval(tuple(bounds) if bounds else None)}]"

    def rates(entry: dict) -> str:
        return f"sensitivity {cell(entry, 'recall')}, specificity {cell(entry, 'specificity')}"

    oracle = rule["oracle"]
    line = (
        "the mask's shape alone, no pixel (logistic regression on "
        f"{len(rule['features'])} shape numbers, fitted on train, threshold on eval): "
        f"radiologist's outline (ORACLE) AUC {cell(oracle, 'auc')}, {rates(oracle)}"
    )
    if "oracle_24px" in rule:
        line += f"; at 24 px {cell(rule['oracle_24px'], 'auc')}"
    if "predicted" in rule:
        drawn = rule["predicted"]
        line += f"; segmenter's outline (deployable) AUC {cell(drawn, 'auc')}, {rates(drawn)}"
    return line


def format_multiclass(report: dict) -> str:
    """The three-class result: accuracy and macro AUC without masks, per class, the
    confusion matrix, the ORACLE with masks, and the empty-mask shortcut beside them."""

    def cell(entry: dict, name: str) -> str:
        bounds = entry["intervals"].get(name)
        return f"{entry['metrics'][name]:.3f} [{_interval(tuple(bounds) if bounds else None)}]"

    overall = report["slices"]["overall"]
    lines = [
        f"three classes, without masks (deployable): accuracy {cell(overall, 'accuracy')}, "
        f"macro AUC {cell(overall, 'macro_auc')}"
    ]
    for name in report["classes"]:
        lines.append(
            f"  {name:<10} sensitivity {cell(overall, 'sensitivity/' + name)}, specificity "
            f"{cell(overall, 'specificity/' + name)}, AUC {cell(overall, 'auc/' + name)}"
        )
    lines.append(
        "  confusion (rows true, columns called; "
        + ", ".join(report["classes"])
        + "): "
        + " / ".join(" ".join(str(n) for n in row) for row in overall["confusion_matrix"])
    )
    argmax = report.get("argmax", {}).get("deployable")
    if argmax:
        lines.append(
            f"  calling the likeliest class instead (no operating point): accuracy "
            f"{cell(argmax, 'accuracy')}"
        )
    oracle = report.get("oracle_slices", {}).get("overall")
    if oracle:
        lines.append(
            f"  with the radiologist's masks (ORACLE): accuracy {cell(oracle, 'accuracy')}, "
            f"macro AUC {cell(oracle, 'macro_auc')}"
        )
    shortcuts = report.get("shortcuts", {})
    if "empty_mask_is_normal" in shortcuts:
        line = (
            "  shortcut, no model: \"empty mask => normal\" (ORACLE: reads the test mask) "
            f"accuracy {cell(shortcuts['empty_mask_is_normal'], 'accuracy')}"
        )
        if "no_roi_found_is_normal" in shortcuts:
            line += (
                "; \"segmenter finds nothing => normal\" accuracy "
                f"{cell(shortcuts['no_roi_found_is_normal'], 'accuracy')}"
            )
        lines.append(line)
    return "\n".join(lines)
