"""The paper's ablation grid (Tables 5-7: ROI on / off x SMOTE on / off x two or three
classes) under each split protocol, K seeds each: what runs, in which order, and where its
results go. Every variant is one whole pipeline run in a child process (memory of in-process
TFX runs accumulates), so the report can be stopped and resumed: finished variants are
read back, not rerun."""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator

from pipeline.config import PROFILES

# The paper's published BUSI figures (%) for the rows of its ablation: Table 5 (benign /
# malignant, ROI + SMOTE), Table 6 (without ROI / without SMOTE: accuracy only) and Table 7
# (three classes, ROI + SMOTE: accuracy only). See the design brief.
PAPER: dict[tuple[int, bool, bool], dict[str, float]] = {
    (2, True, True): {
        "accuracy": 98.97,
        "auc": 99.95,
        "sensitivity": 99.24,
        "specificity": 98.48,
        "f1": 98.82,
    },
    (2, False, True): {"accuracy": 86.6},
    (2, True, False): {"accuracy": 97.94},
    (3, True, True): {"accuracy": 99.15},
}
PAPER_SECONDS = {"train": 121.0, "inference_per_image": 0.09}  # BUSI, one P100

# `report-cpu`: the busi-cpu classifier (ImageNet EfficientNet-Lite0, offline, 160 px, its
# training recipe) and a Lite0-encoder segmenter at 96 px, the paper's ablation otherwise
# (ROI from the radiologist's masks, pixel SMOTE per variant). `paper`: the paper's own
# recipe, PipelineConfig's defaults (EfficientNetV2B0, 299 px, Nadam 1e-4, 22 epochs; its
# ImageNet weights are a Keras download), not the busi-paper profile, which now runs the
# pretrained offline Lite0. Before 2026-12-06 `report-cpu` trained from random init
# (docs/RESULTS.md, lab log).
# the busi-cpu classifier: backbone, weights, size, epochs and recipe (not its data, ROI or
# SMOTE, which the grid varies)
_BUSI_CPU_CLASSIFIER = {
    k: v for k, v in PROFILES["busi-cpu"].items() if k not in ("data_root", "roi", "smote")
}
REPORT_PROFILES: dict[str, dict] = {
    "report-cpu": dict(
        **_BUSI_CPU_CLASSIFIER,
        segmenter_encoder="efficientnet-lite0",
        segmenter_epochs=30,
        train_roi="mask",
        min_dice=0.0,
        thresholds={},
        slice_thresholds={},
        max_regression={},
    ),
    "paper": dict(
        train_roi="mask", min_dice=0.0, thresholds={}, slice_thresholds={}, max_regression={}
    ),
}
CLASS_NAMES = {2: ("benign", "malignant"), 3: ("benign", "malignant", "normal")}


@dataclasses.dataclass(frozen=True)
class Variant:
    protocol: str  # "grouped" | "paper"
    classes: int  # 2 | 3
    roi: bool
    smote: bool
    seed: int

    @property
    def setting(self) -> str:
        """The table a variant's row belongs to."""
        return f"{self.protocol}, {self.classes} classes"

    @property
    def row(self) -> str:
        return f"ROI {'on' if self.roi else 'off'}, SMOTE {'on' if self.smote else 'off'}"

    @property
    def name(self) -> str:
        return (
            f"{self.protocol}-{self.classes}c-roi{int(self.roi)}-smote{int(self.smote)}-"
            f"seed{self.seed}"
        )

    def overrides(self) -> dict:
        return {
            "classes": CLASS_NAMES[self.classes],
            "roi": self.roi,
            "smote": "pixel" if self.smote else "none",
            "seed": self.seed,
        }


def plan(
    protocols: list[str], classes: list[int], rois: list[bool], smotes: list[bool], seeds: int
) -> list[Variant]:
    """Seeds outermost: a stopped report has every row at K - 1 seeds, not some at K."""
    return [
        Variant(p, c, r, s, 42 + k)
        for k, p, c, r, s in itertools.product(range(seeds), protocols, classes, rois, smotes)
    ]


def records_dir(out: str, protocol: str, classes: int) -> str:
    return os.path.join(out, "records", f"{protocol}-{classes}c")


def ingest_all(src: str, out: str, variants: list[Variant], log) -> None:
    """One ingestion per protocol and class set (seed 42: every variant sees the same split)."""
    from lesionlens.ingest import job

    for protocol, classes in sorted({(v.protocol, v.classes) for v in variants}):
        target = records_dir(out, protocol, classes)
        if os.path.exists(os.path.join(target, "manifest.json")):
            continue
        log(f"ingesting {src} ({protocol} protocol, {classes} classes) -> {target}")
        job.run(
            job.IngestConfig(src=src, out=target, classes=CLASS_NAMES[classes], protocol=protocol)
        )


def result_path(out: str, variant: Variant) -> str:
    return os.path.join(out, "runs", variant.name, "result.json")


def finished(out: str, variants: list[Variant]) -> list[Variant]:
    """The variants whose run has a result: what a report can show while the grid runs."""
    return [v for v in variants if os.path.exists(result_path(out, v))]


def run_all(out: str, profile: str, variants: list[Variant], log) -> Iterator[dict]:
    """Runs what has no result yet, each in a child process; yields every result."""
    for i, variant in enumerate(variants, 1):
        path = result_path(out, variant)
        if not os.path.exists(path):
            log(f"[{i}/{len(variants)}] {variant.name} ...")
            t0 = time.time()
            argv = [sys.executable, "-m", "lesionlens.report.run_variant", out, profile]
            argv.append(json.dumps(dataclasses.asdict(variant)))
            subprocess.run(argv, check=True)
            log(f"[{i}/{len(variants)}] {variant.name} done in {time.time() - t0:.0f} s")
        with open(path) as f:
            yield json.load(f)


def profile_config(name: str, variant: Variant, out: str):
    """The PipelineConfig of one variant."""
    from pipeline.config import PipelineConfig

    return PipelineConfig(
        **{
            **REPORT_PROFILES[name],
            **variant.overrides(),
            "data_root": records_dir(out, variant.protocol, variant.classes),
            "output_root": os.path.join(out, "runs", variant.name),
        }
    )
