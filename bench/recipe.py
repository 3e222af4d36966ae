"""Recipe bench: trains the Trainer's own model builder and input pipeline
(`modules.trainer.train_classifier`) on an existing run's SMOTE / Transform outputs, for
several recipe settings and seeds, so a recipe is compared in minutes per setting instead of
one whole pipeline run each.

    python -m bench.recipe OUTPUT_ROOT --profile busi-cpu --seeds 42,43,44 \\
        --setting baseline: --setting paper-recipe:optimizer=nadam,schedule=constant,...

A setting is `name:field=value,...` over `PipelineConfig` fields, applied to the profile, so
the winner becomes a profile change, not new code. Per run it prints eval and test AUC,
test sensitivity and specificity at the threshold chosen on eval (the exported rule), the
kept epoch and the training time; per setting the mean and sd over seeds. `--mirror` adds
the same trained model answered on the mean of the logits of each image and its left-right
mirror (`mirror_tta`; its threshold fitted on eval likewise): eval and test AUC, test
sensitivity and specificity. The images are
what the run's Trainer trained on (whole images with ROI off; with ROI on, the ROI of that
run's `train_roi`), so with ROI off every figure is deployable (no mask needed).
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import logging
import os
import sys
import time

import numpy as np
from sklearn.metrics import roc_auc_score

from modules.keras2 import use_keras2

use_keras2()  # before anything imports TensorFlow

from modules import calibration
from modules import contract as C
from modules.options import OperatingPoint
from modules.trainer import (
    dataset_logits,
    fit_decision,
    input_dataset,
    train_classifier,
)
from pipeline.config import profile
from pipeline.pipeline import trainer_options


def run_examples(output_root: str, pipeline_name: str = "lesionlens") -> str:
    """The newest examples folder the run's classifier Trainer read (SMOTE's output)."""
    pattern = os.path.join(output_root, "tfx", pipeline_name, "Smote", "resampled_examples", "*")
    found = [d for d in glob.glob(pattern) if os.path.isdir(os.path.join(d, "Split-train"))]
    if not found:
        raise SystemExit(f"no SMOTE output under {output_root}: run the pipeline there first")
    return max(found, key=lambda d: int(os.path.basename(d)))


def _value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def parse_setting(text: str) -> tuple[str, dict]:
    name, _, fields = text.partition(":")
    changes = {}
    for item in filter(None, fields.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"setting {text!r}: expected field=value, got {item!r}")
        changes[key.strip()] = _value(value.strip())
    return name or "profile", changes


def score_run(opts, examples: str, mirror: bool = False) -> dict:
    split = lambda s: [os.path.join(examples, f"Split-{s}", "*.gz")]  # noqa: E731
    t0 = time.time()
    fit, eval_ds = train_classifier(opts, split(C.TRAIN), split(C.EVAL))
    decision, report = fit_decision(fit.model, eval_ds, opts)

    def scores(ds, decision=decision):  # as served: mirror-averaged with decision.mirror_tta
        logits, labels = dataset_logits(fit.model, ds, decision.mirror_tta)
        positive = calibration.calibrated_positive(logits, decision.temperature, C.POSITIVE_LABEL)
        return positive, labels == C.POSITIVE_LABEL

    test_ds = input_dataset(split(C.TEST), opts.image_size, opts.batch_size)
    positive, truth = scores(test_ds)
    called = positive >= decision.threshold
    eval_positive, eval_truth = scores(eval_ds)
    mirrored = mirror_figures(fit.model, opts, eval_ds, scores, test_ds) if mirror else {}
    methods = {}
    for method in calibration.THRESHOLD_METHODS:
        t = calibration.robust_threshold(
            eval_truth.astype(int),
            eval_positive,
            OperatingPoint(opts.operating_point),
            opts.operating_target,
            method,
            seed=opts.seed,
        )
        hit = positive >= t
        methods[method] = {
            "threshold": float(t),
            "test_sensitivity": float(hit[truth].mean()),
            "test_specificity": float((~hit)[~truth].mean()),
        }
    return {
        "threshold_methods": methods,
        "eval_auc": fit.best_eval_auc,
        "test_auc": float(roc_auc_score(truth, positive)),
        "test_sensitivity": float(called[truth].mean()),
        "test_specificity": float((~called)[~truth].mean()),
        "threshold": float(decision.threshold),
        "eval_sensitivity": report["eval_sensitivity"],
        "kept_epoch": fit.kept_epoch,
        "train_seconds": round(fit.train_seconds, 1),
        "seconds": round(time.time() - t0, 1),
        **mirrored,
    }


def mirror_figures(model, opts, eval_ds, scores, test_ds) -> dict:
    """The same trained model with mirror test-time averaging: decision refitted on eval."""
    decision, _ = fit_decision(model, eval_ds, dataclasses.replace(opts, mirror_tta=True))
    eval_positive, eval_truth = scores(eval_ds, decision)
    positive, truth = scores(test_ds, decision)
    called = positive >= decision.threshold
    return {
        "mirror_eval_auc": float(roc_auc_score(eval_truth, eval_positive)),
        "mirror_test_auc": float(roc_auc_score(truth, positive)),
        "mirror_test_sens": float(called[truth].mean()),
        "mirror_test_spec": float((~called)[~truth].mean()),
    }


COLUMNS = ("eval_auc", "test_auc", "test_sensitivity", "test_specificity", "train_seconds")
MIRROR_COLUMNS = ("mirror_eval_auc", "mirror_test_auc", "mirror_test_sens", "mirror_test_spec")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("output_root", help="a finished pipeline run's --output-root")
    p.add_argument("--profile", default="busi-cpu")
    p.add_argument("--seeds", default="42,43,44")
    p.add_argument("--setting", action="append", default=[], metavar="NAME:FIELD=VALUE,...")
    p.add_argument("--json", help="write every run's figures here (JSON lines)")
    p.add_argument(
        "--mirror",
        action="store_true",
        help="also score each trained model with mirror test-time averaging (mirror_* columns)",
    )
    args = p.parse_args(argv)
    columns = COLUMNS + MIRROR_COLUMNS if args.mirror else COLUMNS
    logging.basicConfig(level=logging.INFO, format="[%(module)s] %(message)s")
    examples = run_examples(args.output_root)
    settings = [parse_setting(s) for s in args.setting] or [("profile", {})]
    seeds = [int(s) for s in args.seeds.split(",")]
    print(f"[recipe] examples {examples}; {len(settings)} settings x {len(seeds)} seeds")
    header = f"{'setting':<24} {'seed':>4} " + " ".join(f"{c:>16}" for c in columns)
    print(header, flush=True)
    results: dict[str, list[dict]] = {}
    for name, changes in settings:
        for seed in seeds:
            cfg = profile(args.profile, **changes, seed=seed)
            row = score_run(trainer_options(cfg, code=""), examples, args.mirror)
            row.update(setting=name, seed=seed, changes=changes)
            results.setdefault(name, []).append(row)
            cells = " ".join(f"{row[c]:>16.3f}" for c in columns)
            print(f"{name:<24} {seed:>4} {cells}", flush=True)
            if args.json:
                with open(args.json, "a") as f:
                    f.write(json.dumps(row) + "\n")
    print("\n[recipe] operating point: test sensitivity / specificity by threshold method")
    for name, rows in results.items():
        cells = []
        for method in calibration.THRESHOLD_METHODS:
            sens = np.mean([r["threshold_methods"][method]["test_sensitivity"] for r in rows])
            spec = np.mean([r["threshold_methods"][method]["test_specificity"] for r in rows])
            cells.append(f"{method} {sens:.3f} / {spec:.3f}")
        print(f"{name:<24} " + "   ".join(cells))
    print("\n[recipe] mean ± sd over seeds")
    for name, rows in results.items():
        cells = []
        for c in columns:
            values = np.array([r[c] for r in rows], dtype=float)
            cells.append(
                f"{values.mean():.3f} ± {values.std(ddof=1) if len(values) > 1 else 0:.3f}"
            )
        print(f"{name:<24} " + " ".join(f"{c:>16}" for c in cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
