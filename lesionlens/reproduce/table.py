"""The paper's BUSI table (Table 5: benign / malignant, ROI + SMOTE) beside one run's test
figures, as Markdown: the ORACLE row (every test image with its radiologist's mask, the
paper's setting), the deployable row (no mask: what a new patient's image gets) and the
no-pixel mask-shape rule, each with its 95 % interval. Pure formatting: no TensorFlow."""

from __future__ import annotations

import math
from dataclasses import dataclass

from lesionlens.report.grid import PAPER, PAPER_SECONDS

# (column, metric key in the run's results, the paper's key in grid.PAPER); rates in %.
COLUMNS = (
    ("accuracy %", "binary_accuracy", "accuracy"),
    ("precision %", "precision", None),  # the paper gives none for BUSI
    ("sensitivity %", "recall", "sensitivity"),
    ("specificity %", "specificity", "specificity"),
    ("F1 %", "f1_score", "f1"),
    ("AUC", "auc", "auc"),
)
PAPER_ROW = PAPER[(2, True, True)]


@dataclass(frozen=True)
class Seconds:
    """This run's times: the classifier's training, and one served answer at batch 1 with
    the mask given (ORACLE) and without (deployable: the segmenter runs too); None where
    not measured."""

    train: float | None = None
    oracle_per_image: float | None = None
    deployable_per_image: float | None = None


def _missing(value: float | None) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _cell(metric: str, value: float | None, bounds=None) -> str:
    """`96.9 [93.8, 99.0]` for a rate (%), `0.989 [0.97, 1.00]` for AUC, `-` if missing."""
    if _missing(value):
        return "-"
    auc = metric == "auc"
    scale, digits = (1.0, 3) if auc else (100.0, 1)
    text = f"{value * scale:.{digits}f}"
    if bounds is not None and not any(_missing(b) for b in bounds):
        lo, hi = (b * scale for b in bounds)
        text += f" [{lo:.2f}, {hi:.2f}]" if auc else f" [{lo:.1f}, {hi:.1f}]"
    return text


def _seconds(value: float | None, digits: int) -> str:
    return "-" if _missing(value) else f"{value:.{digits}f} s"


def _run_row(name: str, entry: dict, train: float | None, per_image: float | None) -> list[str]:
    metrics, intervals = entry.get("metrics", {}), entry.get("intervals", {})
    cells = [_cell(key, metrics.get(key), intervals.get(key)) for _, key, _ in COLUMNS]
    return [name, *cells, _seconds(train, 0), _seconds(per_image, 3)]


def _paper_row() -> list[str]:
    cells = []
    for _, key, paper_key in COLUMNS:  # as published; grid.PAPER holds %, AUC too (99.95)
        value = PAPER_ROW.get(paper_key) if paper_key else None
        if value is None:
            cells.append("-")
        else:
            cells.append(f"{value / 100:.4f}" if key == "auc" else f"{value:.2f}")
    return [
        "the paper (EfficientNetV2B0, one P100)",
        *cells,
        _seconds(PAPER_SECONDS["train"], 0),
        _seconds(PAPER_SECONDS["inference_per_image"], 2),
    ]


def rows(res: dict, seconds: Seconds) -> list[list[str]]:
    """The table's rows: the paper's, then what `res` (`pipeline.results.latest_results`)
    has of ORACLE, deployable (at the operating threshold and at P > 0.5) and the rule."""
    out = [_paper_row()]
    if res.get("oracle"):
        out.append(
            _run_row(
                "**ORACLE**: this run, each test image x its radiologist's mask (the paper's "
                "setting)",
                res["oracle"],
                seconds.train,
                seconds.oracle_per_image,
            )
        )
    overall = {
        "metrics": res.get("metrics", {}).get("overall", {}),
        "intervals": res.get("intervals", {}).get("overall", {}),
    }
    if overall["metrics"]:
        drawn = " (the segmenter's ROI)" if res.get("segmentation") else ""
        out.append(
            _run_row(
                f"**deployable**: this run, no mask{drawn}",
                overall,
                seconds.train,
                seconds.deployable_per_image,
            )
        )
    half = res.get("at_probability_0_5")
    if half and half.get("metrics"):
        out.append(_run_row("deployable, called at P(malignant) > 0.5", half, None, None))
    rule = res.get("mask_shape_rule") or {}
    if rule.get("oracle"):
        name = "the mask's shape alone, no pixel: the radiologist's outline (ORACLE)"
        out.append(_run_row(name, rule["oracle"], None, None))
    if rule.get("predicted"):
        name = "the mask's shape alone, no pixel: the segmenter's outline (deployable)"
        out.append(_run_row(name, rule["predicted"], None, None))
    return out


def paper_table(res: dict, seconds: Seconds, machine: str) -> str:
    """The Markdown table and what its rows mean; `machine` says where the times were
    measured (e.g. "2 CPU cores")."""
    head = ["BUSI benign vs malignant, test split", *(c for c, _, _ in COLUMNS)]
    head += [f"training ({machine})", "inference / image"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows(res, seconds)]
    n = res.get("metrics", {}).get("overall", {}).get("example_count")
    lines += [
        "",
        "This run's rates are at the model's exported operating threshold (chosen on eval, "
        "README: Serving: Decisions) unless the row says P > 0.5; [95 % interval: seeded "
        "bootstrap of the test images within each class]"
        + (f"; {n:.0f} test images." if not _missing(n) else "."),
        "ORACLE rows read every test image's radiologist's mask, as the paper's ROI does; a new "
        "patient's image has none (the deployable row). The mask-shape rule (a logistic "
        "regression on five shape numbers of the outline) shows how much the outline alone "
        "gives away.",
        "Training: the classifier's fit (the paper's 121 s on one P100); inference: one "
        "served answer with Grad-CAM at batch 1, median (the paper: 0.09 s per image).",
    ]
    return "\n".join(lines)
