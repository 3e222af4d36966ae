"""Model card content from what the run recorded: the model's info (options, decision), the
bootstrap intervals, the segmenter's evaluation and the ingestion manifest.

Why plain dicts in, dict and Markdown out: the card must say only what was measured, so it
is assembled from the run's own files, and tests can check it against fixed inputs.
"""

from __future__ import annotations

from typing import Any

from modules import contract as C
from modules.options import Augment

CARD_JSON = "assets.extra/model_card.json"
CARD_MARKDOWN = "assets.extra/model_card.md"
INTENDED_USE = (
    "Research use only, not for clinical decisions. Classifies a breast ultrasound (or MRI) "
    "image as benign or malignant and shows where the classifier looked (Grad-CAM); meant "
    "for ML engineers and radiologists evaluating the method, not for diagnosis."
)
HEADLINE = ("auc", "binary_accuracy", "recall", "specificity", "f1_score")
NAMES = {
    "auc": "AUC",
    "binary_accuracy": "accuracy",
    "recall": "sensitivity",
    "specificity": "specificity",
    "f1_score": "F1",
    "precision": "precision",
}


def _data(manifest: dict | None) -> dict[str, Any]:
    if not manifest:
        return {"note": "no ingestion manifest found beside the training data"}
    groups = manifest.get("duplicate_groups", [])
    return {
        "dataset": manifest.get("dataset"),
        "modality": manifest.get("modality"),
        "source": manifest.get("source"),
        "protocol": manifest.get("protocol"),
        "seed": manifest.get("seed"),
        "classes": manifest.get("classes"),
        "counts": manifest.get("counts"),
        "excluded_classes": manifest.get("excluded_classes", {}),
        "near_duplicate_groups": len(groups),
        "images_in_near_duplicate_groups": sum(len(g["members"]) for g in groups),
        "label_conflict_groups": len(manifest.get("label_conflicts", [])),
        "conflicts_dropped": manifest.get("conflicts_dropped"),
        "leakage": manifest.get("leakage", {}),
        "skipped_inputs": len(manifest.get("skipped", [])),
    }


def _slices(report: dict, key: str) -> dict[str, Any]:
    return {
        name: {
            "images": s["example_count"],
            "metrics": {m: s["metrics"].get(m) for m in HEADLINE},
            "intervals": {m: s["intervals"].get(m) for m in HEADLINE},
        }
        for name, s in report.get(key, {}).items()
    }


def _recipe_line(recipe: dict | None, kept: int | None) -> str:
    """The training recipe in words (modules/recipe.py); the paper's when none is recorded."""
    r = recipe or {}
    parts = [f"{r.get('optimizer', 'nadam')}, {r.get('schedule', 'constant')} learning rate"]
    if r.get("weight_decay"):
        parts.append(f"weight decay {r['weight_decay']:g}")
    if r.get("head_epochs"):
        parts.append(f"{r['head_epochs']} head-only epochs first")
    if r.get("freeze_bn"):
        parts.append("BatchNorm statistics frozen")
    level = Augment.of(r.get("augment", False))
    parts.append(
        "no augmentation" if level == Augment.NONE else f"train-only augmentation ({level.value})"
    )
    if r.get("class_weight"):
        parts.append("class-weighted loss")
    if r.get("kept_epoch") == "best_eval_auc":
        parts.append(f"weights of the best eval-AUC epoch kept (epoch {kept})")
    else:
        parts.append("last epoch kept")
    return "; ".join(parts)


_MIRROR_TTA = (
    ", answered on the mean of the logits of the image and of its left-right mirror (a "
    "flipped image gets the same answer and the mirrored Grad-CAM)"
)

_BACKBONE_NAMES = {
    "efficientnetv2b0": "EfficientNetV2B0",
    "efficientnet-lite0": "EfficientNet-Lite0",
}


def _limitations(info: dict, data: dict, segmentation: dict | None) -> list[str]:
    out = [
        "No external validation: tested only on a held-out split of the training dataset.",
    ]
    if info.get("weights") in ("none", "", None):
        out.append("Trained from random initialisation (no ImageNet weights).")
    leak = data.get("leakage", {}).get("test_with_duplicate_in_train")
    if leak:
        out.append(
            f"{leak} test images have a near-duplicate in the training split "
            f"({data.get('protocol')} protocol): the test figures are optimistic."
        )
    if info.get("roi"):
        if info.get("train_roi") == "mask":
            out.append(
                "Trained on the radiologist's lesion masks; served without a mask it uses its "
                "segmenter's ROI, a mode it was not trained on."
            )
        if segmenter_note := segmentation and segmentation["slices"]["overall"]["metrics"]:
            out.append(
                "A request without a mask depends on the lesion segmenter (test Dice "
                f"{segmenter_note['dice']:.3f}); where it finds nothing the whole image is "
                "used (`roi_source` = none)."
            )
        out.append(
            "Figures labelled ORACLE need the radiologist's mask of each test image, which does "
            "not exist for a new patient; the deployable figures do not."
        )
    if info.get("architecture") == "joint":
        out.append(
            "One network draws the lesion map and classifies under it: a request without a "
            "mask depends on that map (`lesion_probability`); where it finds nothing usable "
            "`roi_source` is none and the head pools almost nothing."
        )
    out.append(
        f"The heat map ({info.get('explanation', 'Grad-CAM')}) marks a region at the "
        "resolution of the last feature map, not a lesion outline."
    )
    return out


def build_card(
    info: dict,
    intervals: dict | None,
    segmentation: dict | None,
    manifest: dict | None,
    versions: dict[str, str],
    model_version: str,
) -> dict[str, Any]:
    """The card as a JSON-able dict; every figure comes from the arguments."""
    data = _data(manifest)
    decision = info.get("decision", {})
    backbone = info.get("backbone", "efficientnetv2b0")
    joint = info.get("architecture") == "joint"
    kind = "joint lesion map + HiResCAM" if joint else "Grad-CAM"
    card: dict[str, Any] = {
        "model": {
            "name": f"LesionLens {_BACKBONE_NAMES.get(backbone, backbone)} + {kind}",
            "backbone": backbone,
            "architecture": info.get("architecture", "two-stage"),
            "explanation": info.get("explanation"),
            "mask_loss_weight": info.get("mask_loss_weight") if joint else None,
            "version": model_version,
            "classes": info.get("classes"),
            "image_size": info.get("image_size"),
            "mirror_tta": bool(info.get("mirror_tta")),
            "weights": info.get("weights_source") or info.get("weights"),
            "recipe": info.get("recipe"),
            "kept_epoch": info.get("kept_epoch_index"),
            "roi": info.get("roi"),
            "train_roi": info.get("train_roi") if info.get("roi") else None,
            "roi_mode": info.get("roi_mode", "mask") if info.get("roi") else None,
            "roi_margin": info.get("roi_margin") if info.get("roi_mode") == "crop" else None,
            "segmenter_size": info.get("segmenter_size") or None,
            "epochs": info.get("epochs"),
            "seed": info.get("seed"),
            "train_seconds": info.get("train_seconds"),
        },
        "intended_use": INTENDED_USE,
        "data": data,
        "decision": {
            "operating_point": info.get("operating_point"),
            "operating_target": info.get("operating_target"),
            "threshold": decision.get("threshold"),
            "temperature": decision.get("temperature"),
            "eval_sensitivity": decision.get("eval_sensitivity"),
            "eval_specificity": decision.get("eval_specificity"),
        },
        "versions": versions,
    }
    if intervals:
        card["test_metrics"] = {
            "split": intervals.get("split"),
            "method": intervals.get("method"),
            "level": intervals.get("level"),
            "deployable": _slices(intervals, "slices"),
            "oracle": _slices(intervals, "oracle_slices"),
            "at_probability_0_5": _slices(intervals, "at_probability_0_5"),
        }
        if "multiclass" in intervals:
            card["test_metrics"]["three_class"] = intervals["multiclass"]
        if "mask_shape_rule" in intervals:
            card["test_metrics"]["mask_shape_rule"] = _shape_rule(intervals["mask_shape_rule"])
        calibration = intervals.get("calibration", {})
        card["decision"]["test_ece_uncalibrated"] = calibration.get("uncalibrated", {}).get("ece")
        card["decision"]["test_ece_calibrated"] = calibration.get("calibrated", {}).get("ece")
    if segmentation:
        overall = segmentation["slices"]["overall"]
        card["segmenter"] = {
            "split": segmentation["split"],
            "images": overall["example_count"],
            "dice": overall["metrics"]["dice"],
            "dice_interval": overall["intervals"]["dice"],
            "iou": overall["metrics"]["iou"],
            "served_roi_dice": overall["metrics"]["roi_dice"],
            "baselines_dice": segmentation["baselines_dice"],
        }
    card["limitations"] = _limitations(info, data, segmentation)
    return card


def _cell(metrics: dict, intervals: dict, name: str) -> str:
    value, bounds = metrics.get(name), intervals.get(name)
    if value is None or value != value:  # None or NaN
        return "-"
    if not bounds or bounds[0] != bounds[0]:
        return f"{value:.3f}"
    return f"{value:.3f} [{bounds[0]:.2f}, {bounds[1]:.2f}]"


def _table(title: str, slices: dict) -> list[str]:
    head = "| slice | images | " + " | ".join(NAMES[m] for m in HEADLINE) + " |"
    lines = [f"**{title}**", "", head, "|" + " --- |" * (len(HEADLINE) + 2)]
    for name, s in sorted(slices.items(), key=lambda kv: (kv[0] != "overall", kv[0])):
        cells = " | ".join(_cell(s["metrics"], s["intervals"], m) for m in HEADLINE)
        lines.append(f"| {name} | {s['images']} | {cells} |")
    return [*lines, ""]


_SHAPE_ROWS = (  # mask_shape_rule entry -> the card's row
    ("oracle", "radiologist's outline (ORACLE)"),
    ("oracle_24px", "radiologist's outline, 24 px (ORACLE)"),
    ("predicted", "segmenter's outline, 24 px (deployable)"),
)


def _shape_rule(rule: dict) -> dict[str, Any]:
    """The no-pixel mask-shape rule (modules/intervals/mask_shape.py): its definition and,
    per kind of outline, the headline metrics with their intervals."""
    out = {k: rule.get(k) for k in ("rule", "operating_point", "operating_target")}
    for key, _ in _SHAPE_ROWS:
        if key in rule:
            e = rule[key]
            out[key] = {
                "masks": e.get("masks"),
                "images": e["example_count"],
                "threshold": e.get("threshold"),
                "metrics": {m: e["metrics"].get(m) for m in HEADLINE},
                "intervals": {m: e["intervals"].get(m) for m in HEADLINE},
            }
    return out


def _mask_shape_rule(rule: dict) -> list[str]:
    """The rule's table beside the ORACLE's: what the mask hands the model without a pixel."""
    head = "| outline | images | " + " | ".join(NAMES[m] for m in HEADLINE) + " |"
    lines = [
        "**No pixel, the mask's shape alone** (malignant against the rest): "
        f"{rule['rule']}; fitted on the train split's masks, threshold chosen on eval for "
        f"{rule['operating_point']} >= {rule['operating_target']}. Where it comes close to "
        "the ORACLE, the mask hands the model its answer.",
        "",
        head,
        "|" + " --- |" * (len(HEADLINE) + 2),
    ]
    for key, label in _SHAPE_ROWS:
        if key in rule:
            e = rule[key]
            cells = " | ".join(_cell(e["metrics"], e["intervals"], m) for m in HEADLINE)
            lines.append(f"| {label} | {e['images']} | {cells} |")
    return [*lines, ""]


def _three_class(report: dict) -> list[str]:
    """Per class one-vs-rest figures of the served call, and the empty-mask shortcut."""
    overall = report["slices"]["overall"]
    m, ci = overall["metrics"], overall["intervals"]
    lines = [
        f"**Three classes, requests without a mask** ({overall['example_count']} images): "
        f"accuracy {_cell(m, ci, 'accuracy')}, macro AUC {_cell(m, ci, 'macro_auc')}.",
        "",
        "| class | sensitivity | specificity | AUC (one vs rest) |",
        "| --- | --- | --- | --- |",
    ]
    for name in report["classes"]:
        cells = [_cell(m, ci, f"{metric}/{name}") for metric in ("sensitivity", "specificity")]
        lines.append(f"| {name} | {' | '.join(cells)} | {_cell(m, ci, 'auc/' + name)} |")
    lines.append("")
    shortcut = report.get("shortcuts", {}).get("empty_mask_is_normal")
    if shortcut:
        sm, sci = shortcut["metrics"], shortcut["intervals"]
        lines += [
            "Shortcut, no model: calling `normal` wherever the radiologist's mask is empty "
            f"(ORACLE) scores accuracy {_cell(sm, sci, 'accuracy')} (normal sensitivity "
            f"{_cell(sm, sci, 'sensitivity/normal')}): with the paper's ROI the class can be "
            "read from the mask alone.",
            "",
        ]
    return lines


def render_markdown(card: dict) -> str:
    """The card as one Markdown page."""
    m, d, dec = card["model"], card["data"], card["decision"]
    positive = C.class_names(m["classes"] or ["benign", "malignant"])[C.POSITIVE_LABEL]
    trained_on = "segmenter" if m["train_roi"] == "predicted" else "radiologist"
    shown = (
        f"the crop around the ROI (box + {m['roi_margin']:.0%} margin)"
        if m.get("roi_mode") == "crop"
        else "the image x the ROI"
    )
    roi = (
        f"; classifier sees {shown}, trained on the {trained_on}'s ROI; lesion segmenter at "
        f"{m['segmenter_size']} px in the same graph"
        if m["roi"]
        else ""
    )
    lines = [
        f"# Model card: {m['name']}, version {m['version']}",
        "",
        f"**Intended use.** {card['intended_use']}",
        "",
        "## Model",
        "",
        f"- Classes: {', '.join(m['classes'] or [])}; input {m['image_size']} px"
        f"{_MIRROR_TTA if m.get('mirror_tta') else ''}; weights: "
        f"{m['weights']}; {m['epochs']} epochs, seed {m['seed']}, trained in "
        f"{m['train_seconds']} s.",
        f"- Recipe: {_recipe_line(m.get('recipe'), m.get('kept_epoch'))}.",
        f"- ROI: {'on' if m['roi'] else 'off'}{roi}.",
        f"- Architecture: {m.get('architecture', 'two-stage')}"
        + (
            f" (shared encoder, lesion decoder, head pooling under the lesion map; mask loss "
            f"weight {m.get('mask_loss_weight')})"
            if m.get("architecture") == "joint"
            else ""
        )
        + f"; explanation: {m.get('explanation') or 'Grad-CAM'}.",
        f"- Decision: threshold {dec['threshold']:.4f} on calibrated P({positive}) "
        f"(temperature {dec['temperature']:.3f}), chosen on the eval split for "
        f"{dec['operating_point']} >= {dec['operating_target']} (eval sensitivity "
        f"{dec['eval_sensitivity']:.3f}, specificity {dec['eval_specificity']:.3f}).",
        "",
        "## Data",
        "",
    ]
    if "note" in d:
        lines += [f"- {d['note']}", ""]
    else:
        counts = "; ".join(
            f"{split}: " + ", ".join(f"{k} {v}" for k, v in per.items())
            for split, per in (d["counts"] or {}).items()
        )
        lines += [
            f"- {d['dataset']} ({d['modality']}), protocol `{d['protocol']}`, seed {d['seed']}.",
            f"- Images per split: {counts}.",
            f"- Excluded classes: {d['excluded_classes'] or 'none'}; skipped inputs: "
            f"{d['skipped_inputs']}.",
            f"- Near-duplicate groups: {d['near_duplicate_groups']} "
            f"({d['images_in_near_duplicate_groups']} images); groups with conflicting labels: "
            f"{d['label_conflict_groups']} (dropped: {d['conflicts_dropped']}).",
            f"- Leakage: {d['leakage'].get('groups_spanning_splits')} groups span splits; "
            f"{d['leakage'].get('test_with_duplicate_in_train')} test images have a "
            "near-duplicate in train.",
            "",
        ]
    if "test_metrics" in card:
        t = card["test_metrics"]
        lines += [
            f"## Test metrics ({t['split']} split, {t['level']:.0%} intervals: {t['method']})",
            "",
        ]
        lines += _table(
            "Deployable: requests without a mask, at the operating threshold", t["deployable"]
        )
        if m["roi"] and t["oracle"]:
            lines += _table("ORACLE: each request with the radiologist's mask", t["oracle"])
        if "mask_shape_rule" in t:
            lines += _mask_shape_rule(t["mask_shape_rule"])
        if "three_class" in t:
            lines += _three_class(t["three_class"])
        if dec.get("test_ece_calibrated") is not None:
            lines += [
                "Calibration on test: expected calibration error "
                f"{dec['test_ece_uncalibrated']:.3f} without the temperature, "
                f"{dec['test_ece_calibrated']:.3f} with it.",
                "",
            ]
    if "segmenter" in card:
        s = card["segmenter"]
        lo, hi = s["dice_interval"]
        lines += [
            "## Lesion segmenter",
            "",
            f"Dice {s['dice']:.3f} [{lo:.2f}, {hi:.2f}], IoU {s['iou']:.3f} on {s['images']} "
            f"{s['split']} images (served ROI Dice {s['served_roi_dice']:.3f}; baselines that "
            f"ignore the image: centre disk {s['baselines_dice']['centre_disk']:.3f}, whole "
            f"image {s['baselines_dice']['all_foreground']:.3f}).",
            "",
        ]
    lines += ["## Limitations", ""] + [f"- {x}" for x in card["limitations"]] + [""]
    lines += ["## Versions", ""] + [f"- {k}: {v}" for k, v in card["versions"].items()] + [""]
    return "\n".join(lines)
