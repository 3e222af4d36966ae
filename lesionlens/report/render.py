"""The report page: one table per setting (protocol x classes) with every metric, the spread
over seeds, the interval of the mean (lesionlens.report.seeds) and the paper's published
value in the same row; the figures of lesionlens.report.plots; a Grad-CAM gallery; time per
stage. Written as Markdown and, through the Markdown package, as HTML."""

from __future__ import annotations

import math
import os
import shutil
from collections import defaultdict
from html import escape as html_escape

import numpy as np

from lesionlens.report import plots
from lesionlens.report.grid import CLASS_NAMES, PAPER, PAPER_SECONDS, Variant
from lesionlens.report.seeds import mean_intervals, rule_intervals, shape_rule_intervals
from pipeline.config import PipelineConfig

# (label, binary metric key, three-class metric key, paper key)
BINARY = [
    ("accuracy", "binary_accuracy", "accuracy"),
    ("AUC", "auc", "auc"),
    ("sensitivity", "recall", "sensitivity"),
    ("specificity", "specificity", "specificity"),
    ("F1", "f1_score", "f1"),
]


def _three_class_metrics(names: tuple[str, ...]) -> list[tuple[str, str, str]]:
    return [("accuracy", "accuracy", "accuracy"), ("macro AUC", "macro_auc", "")] + [
        (f"sensitivity {n}", f"sensitivity/{n}", "") for n in names
    ]


def _entry(result: dict, classes: int, oracle: bool) -> dict | None:
    """{"metrics", "intervals"} of one run, overall: binary (malignant against the rest)
    with two classes, the three-class report with three."""
    res = result["results"]
    if classes == 2:
        if oracle:
            return res.get("oracle")
        return {
            "metrics": res["metrics"].get("overall", {}),
            "intervals": res["intervals"].get("overall", {}),
        }
    multi = res.get("multiclass", {})
    return multi.get("oracle_slices" if oracle else "slices", {}).get("overall")


def _cell(values: list[float], interval) -> str:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return "-"
    text = f"{np.mean(values):.3f}"
    if len(values) > 1:
        text += f" ± {np.std(values, ddof=1):.3f}"
    if interval and not any(math.isnan(b) for b in interval):
        text += f" [{interval[0]:.2f}, {interval[1]:.2f}]"
    return text


def metric_table(rows: plots.Rows, classes: int, oracle: bool) -> list[str]:
    metrics = BINARY if classes == 2 else _three_class_metrics(CLASS_NAMES[classes])
    head = "| variant | seeds | " + " | ".join(m[0] for m in metrics) + " |"
    lines = [head, "|" + " --- |" * (len(metrics) + 2)]
    for row, results in rows.items():
        entries = [e for e in (_entry(r, classes, oracle) for r in results) if e]
        if not entries:
            continue
        variant = results[0]["variant"]
        paper = PAPER.get((classes, variant["roi"], variant["smote"]), {})
        intervals = mean_intervals(
            results,
            list(CLASS_NAMES[classes]),
            oracle,
            PipelineConfig.interval_resamples,
            variant["seed"],
            PipelineConfig.interval_level,
        )
        cells = [
            _cell([e["metrics"].get(key) for e in entries], intervals.get(key))
            + (f" (paper {paper[p] / 100:.4f})" if p in paper else "")
            for _, key, p in metrics
        ]
        lines.append(f"| {row} | {len(entries)} | " + " | ".join(cells) + " |")
    return lines + [""]


def _calibration_lines(rows: plots.Rows) -> list[str]:
    """Per row: the test ECE with the temperature fitted on eval and without it, and the
    temperature, mean ± sd over seeds."""
    lines = []
    for row, results in rows.items():
        found = [r["results"].get("calibration") for r in results]
        found = [f for f in found if f]
        if found:
            cells = [
                _cell([f[key] for f in found], None)
                for key in ("test_ece_calibrated", "test_ece_uncalibrated", "temperature")
            ]
            lines.append(
                f"- {row}: test ECE {cells[0]} (without temperature scaling {cells[1]}), "
                f"temperature {cells[2]}"
            )
    return lines


_BESIDE_THE_MODEL = (  # (section of `multiclass`, entry, label)
    ("argmax", "deployable", "likeliest class without masks"),
    ("argmax", "oracle", "likeliest class ORACLE"),
    ("shortcuts", "empty_mask_is_normal", '"empty mask => normal" (ORACLE, no image) accuracy'),
    ("shortcuts", "no_roi_found_is_normal", '"the segmenter finds nothing => normal" accuracy'),
)


def _shortcut_lines(rows: plots.Rows) -> list[str]:
    """Per row: the likeliest class (the served rule favours the malignant call) and the two
    rules that look at no pixel, each where the runs have it (no ORACLE without masks)."""
    lines = []
    for row, results in rows.items():
        found = [r["results"].get("multiclass", {}) for r in results]
        found = [f for f in found if f.get("shortcuts")]
        if not found:
            continue
        intervals = rule_intervals(
            results,
            list(CLASS_NAMES[3]),
            PipelineConfig.interval_resamples,
            results[0]["variant"]["seed"],
            PipelineConfig.interval_level,
        )
        parts = []
        for section, key, label in _BESIDE_THE_MODEL:
            entries = [f[section][key] for f in found if key in f.get(section, {})]
            if entries:
                accuracy = [e["metrics"]["accuracy"] for e in entries]
                parts.append(f"{label} {_cell(accuracy, intervals.get((section, key)))}")
        if parts:
            lines.append(f"- {row}: " + "; ".join(parts))
    return lines


_SHAPE_RULE = (  # (entry of `mask_shape_rule`, label)
    ("oracle", "radiologist's outline (ORACLE)"),
    ("oracle_24px", "the same at the served 24 px (ORACLE)"),
    ("predicted", "segmenter's outline (deployable)"),
)


def _shape_rule_lines(rows: plots.Rows) -> list[str]:
    """Per row: the no-pixel mask-shape rule's test AUC, sensitivity and specificity
    (malignant against the rest) on each outline the runs scored it on, mean over seeds
    with the interval of that mean."""
    lines = []
    for row, results in rows.items():
        found = [r["results"].get("mask_shape_rule") for r in results]
        found = [f for f in found if f]
        if not found:
            continue
        intervals = shape_rule_intervals(
            results,
            PipelineConfig.interval_resamples,
            results[0]["variant"]["seed"],
            PipelineConfig.interval_level,
        )
        parts = []
        for key, label in _SHAPE_RULE:
            entries = [f[key] for f in found if key in f]
            if entries:
                cells = [
                    f"{name} "
                    + _cell(
                        [e["metrics"][metric] for e in entries], intervals.get(key, {}).get(metric)
                    )
                    for name, metric in (
                        ("AUC", "auc"),
                        ("sensitivity", "recall"),
                        ("specificity", "specificity"),
                    )
                ]
                parts.append(f"{label}: " + ", ".join(cells))
        lines.append(f"- {row}: " + "; ".join(parts))
    return lines


def _gallery(rows: plots.Rows, out: str, slug: str) -> list[str]:
    """The first seed's gallery of the first row that has one, copied into the report."""
    for row, results in rows.items():
        result = results[0]
        if not result.get("gallery"):
            continue
        source = os.path.join(out, "runs", Variant(**result["variant"]).name, "gallery")
        lines = [
            f"Grad-CAM gallery, {row}, seed {result['variant']['seed']}, requests without a "
            "mask (outline: the radiologist's mask):",
            "",
        ]
        for item in result["gallery"]:
            target = f"gallery_{slug}_{item['file']}"
            shutil.copyfile(os.path.join(source, item["file"]), os.path.join(out, "report", target))
            lines.append(
                f"- {item['kind']}, `{item['image_id']}`, P(malignant) "
                f"{item['p_malignant']:.3f}: ![{item['kind']}]({target})"
            )
        return lines + [""]
    return []


def _times(results: list[dict]) -> list[str]:
    lines = [
        "| variant | runs | pipeline wall time (s) | classifier training (s) | inference per "
        "image, Grad-CAM included (s) |",
        "| --- | --- | --- | --- | --- |",
    ]
    by_row = defaultdict(list)
    for r in results:
        by_row[f"{r['variant']['protocol']}, {r['variant']['classes']} classes, {_row(r)}"].append(
            r
        )
    for row, rs in by_row.items():
        wall = np.mean([r["wall_s"] for r in rs])
        train = np.mean([r["info"]["train_seconds"] or 0 for r in rs])
        infer = np.mean([r["inference_s_per_image"] for r in rs])
        lines.append(f"| {row} | {len(rs)} | {wall:.0f} | {train:.0f} | {infer:.3f} |")
    lines.append(
        f"| *paper (one P100)* | | | {PAPER_SECONDS['train']:.0f} | "
        f"{PAPER_SECONDS['inference_per_image']:.2f} |"
    )
    reused = [r for r in results if r.get("segmenter_model")]
    if reused:
        lines += [
            "",
            f"{len(reused)} of {sum(r['variant']['roi'] for r in results)} ROI-on runs imported "
            "the segmenter that their SMOTE sibling had trained (the same records, seed and "
            "settings: the same segmenter); their wall time leaves out its training.",
        ]
    return lines + [""]


def _row(result: dict) -> str:
    return Variant(**result["variant"]).row


def render(results: list[dict], out: str, title: str, wall_s: float) -> tuple[str, str]:
    """Writes OUT/report/report.md, report.html and the figures; returns both paths."""
    folder = os.path.join(out, "report")
    os.makedirs(folder, exist_ok=True)
    settings: dict[tuple[str, int], plots.Rows] = defaultdict(lambda: defaultdict(list))
    for r in sorted(
        results,
        key=lambda r: (r["variant"]["seed"], not r["variant"]["roi"], not r["variant"]["smote"]),
    ):
        v = r["variant"]
        settings[(v["protocol"], v["classes"])][_row(r)].append(r)
    seeds = sorted({r["variant"]["seed"] for r in results})
    lines = [
        f"# {title}",
        "",
        f"{len(results)} pipeline runs, seeds {', '.join(map(str, seeds))}: "
        f"{sum(r['wall_s'] for r in results) / 60:.0f} min of pipeline time (this call "
        f"{wall_s / 60:.0f} min; runs finished before are read back). Cells: mean ± "
        "standard deviation over seeds [95 % interval of that mean: the test images "
        "resampled within each class, seeded, and every seed's model scored on the same "
        "resamples; with one seed, its own bootstrap interval]. Binary metrics are at each "
        "model's exported operating threshold. \"(paper x)\" in a cell: the paper's "
        "published BUSI figure for that row (Tables 5-7; ImageNet weights, 299 px, the "
        "radiologist's mask of every test image).",
        "",
    ]
    for (protocol, classes), rows in sorted(settings.items()):
        slug = f"{protocol}_{classes}c"
        lines += [f"## {protocol} protocol, {classes} classes", ""]
        lines += ["**Without masks (deployable: the segmenter's ROI when ROI is on)**", ""]
        lines += metric_table(rows, classes, oracle=False)
        if calibration := _calibration_lines(rows):
            lines += ["Calibration (deployable, expected calibration error, 10 bins):", ""]
            lines += [*calibration, ""]
        lines += ["**With the radiologist's mask of each test image (ORACLE)**", ""]
        lines += metric_table(rows, classes, oracle=True)
        if shape := _shape_rule_lines(rows):
            lines += [
                "The mask's shape alone, no pixel of the image (a logistic regression on five "
                "shape numbers of the mask, fitted on the train split's masks, threshold "
                "chosen on eval as the model's; malignant against the rest): where it comes "
                "close to the ORACLE, the mask hands the model its answer.",
                "",
                *shape,
                "",
            ]
        if classes == 3:
            lines += (
                [
                    "The likeliest class and the empty-mask shortcuts, beside the model (the "
                    "bootstrap resamples within each class, so a rule that is right on whole "
                    "classes (the empty-mask rule, where only normal images have an empty mask) "
                    "has an interval of zero width; with several seeds, the interval is that of "
                    "the mean, as in the tables):",
                    "",
                ]
                + _shortcut_lines(rows)
                + [""]
            )
        names = list(CLASS_NAMES[classes])
        for label, name in (
            ("ROC curves", plots.roc_curves(rows, folder, slug)),
            ("Reliability diagrams", plots.reliability(rows, folder, slug)),
            ("Confusion matrices", plots.confusion_matrices(rows, folder, slug, names)),
            ("Training curves", plots.training_curves(rows, folder, slug)),
        ):
            lines += [f"![{label}]({name})", ""]
        lines += _gallery(rows, out, slug)
    lines += ["## Time per stage", ""] + _times(results)
    text = "\n".join(lines)
    md = os.path.join(folder, "report.md")
    with open(md, "w") as f:
        f.write(text)
    import markdown

    body = markdown.markdown(text, extensions=["tables"])
    html = os.path.join(folder, "report.html")
    with open(html, "w") as f:
        f.write(
            "<!doctype html><html><head><meta charset='utf-8'><title>"
            f"{html_escape(title)}</title><style>"
            "body{font-family:sans-serif;max-width:1100px;margin:auto}"
            "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;"
            f"padding:3px 6px}}img{{max-width:100%}}</style></head><body>{body}</body></html>"
        )
    return md, html
