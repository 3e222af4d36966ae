"""How much of the ORACLE is the outline: the mask-shape rule (modules/intervals/mask_shape.py)
on an ingested records folder, without training anything.

    python -m bench.mask_shape_rule RECORDS [--model SERVING_MODEL_DIR] [--profile busi-cpu]
        [--segmenter-size N] [--json FILE]

Fits the rule on the train split's masks, chooses its threshold on eval with the profile's
operating point, and prints its test AUC, accuracy, sensitivity and specificity with the
seeded class-stratified 95 % intervals the pipeline's BootstrapIntervals prints, the
regression's weights, and each feature alone (its direction taken from train). It also
scores the rule at the served 24 px `roi_mask` (refitted on the train masks reduced as the
served graph reduces a given mask, through `--segmenter-size`, default the profile's) on the
radiologist's test masks, and with `--model` (a run's exported model with a segmenter: ROI
on; its own operating point and segmenter size) on the outlines its segmenter draws (the
model's `predict_no_mask` signature), as the pipeline's BootstrapIntervals does.
"""

from __future__ import annotations

import argparse
import json
import os
import time

from modules.keras2 import use_keras2

use_keras2()  # before anything imports TensorFlow

from modules import contract as C
from modules.intervals import mask_shape
from modules.intervals.bootstrap import rank_auc
from modules.intervals.component import (
    mask_shape_report,
    record_masks,
    score_split,
)
from modules.split_records import read_split
from pipeline.config import profile


def _cell(entry: dict, metric: str) -> str:
    lo, hi = entry["intervals"][metric]
    return f"{entry['metrics'][metric]:.3f} [{lo:.3f}, {hi:.3f}]"


def single_features(splits: dict[str, list[bytes]]) -> dict[str, float]:
    """Test AUC of each feature alone, oriented by the sign of its train class difference."""
    (train, ytr), (test, yte) = (record_masks(splits[s]) for s in (C.TRAIN, C.TEST))
    ftr, fte = mask_shape.features_of(train), mask_shape.features_of(test)
    out = {}
    for k, name in enumerate(mask_shape.FEATURES):
        pos = ytr == C.POSITIVE_LABEL
        sign = 1.0 if ftr[pos, k].mean() >= ftr[~pos, k].mean() else -1.0
        out[name] = float(rank_auc((yte == C.POSITIVE_LABEL)[None], sign * fte[None, :, k])[0])
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("records", help="an ingest output: train/ eval/ test/ of raw records")
    parser.add_argument("--model", help="an exported model with a segmenter (ROI on)")
    parser.add_argument("--profile", default="busi-cpu", help="operating point and intervals")
    parser.add_argument(
        "--segmenter-size",
        type=int,
        help="also the rule at the served 24 px roi_mask, the masks reduced through this "
        "segmenter size as Transform does (default: the profile's; 0: not; with --model, "
        "the model's)",
    )
    parser.add_argument("--json", help="append the report as one JSON line to this file")
    args = parser.parse_args(argv)
    cfg = profile(args.profile)
    splits = {s: read_split(os.path.join(args.records, s)) for s in C.SPLITS}
    info = {
        "operating_point": cfg.operating_point.value,
        "operating_target": cfg.operating_target,
        "threshold_method": cfg.threshold_method,
        "seed": cfg.seed,
        "segmenter_size": cfg.segmenter_size
        if args.segmenter_size is None
        else args.segmenter_size,
        "max_pixels": cfg.max_image_pixels,
    }
    test_roi = None
    if args.model:
        with open(os.path.join(args.model, C.MODEL_INFO)) as f:
            info = json.load(f)
        scored = score_split(args.model, splits[C.TEST], [])
        out = scored.outputs[C.PREDICT_NO_MASK]
        test_roi = (out[C.ROI_MASK], out[C.ROI_SOURCE].astype(str))
    start = time.time()
    found = mask_shape_report(
        splits,
        info,
        cfg.interval_resamples,
        cfg.seed,
        cfg.interval_level,
        test_roi,
    )
    if found is None:
        raise SystemExit(f"no train image in {args.records} has a mask")
    report = found[0]
    print(
        f"{args.records}: {report['rule']}; threshold on eval for {report['operating_point']} "
        f">= {report['operating_target']} ({report['threshold_method']}); test, "
        f"{cfg.interval_level:.0%} intervals, {cfg.interval_resamples} class-stratified "
        f"resamples, seed {cfg.seed}; {time.time() - start:.1f} s"
    )
    for name in ("oracle", "oracle_24px", "predicted"):
        if name in report:
            e = report[name]
            print(
                f"  {name:<12} ({e['example_count']} images) AUC {_cell(e, 'auc')}, accuracy "
                f"{_cell(e, 'binary_accuracy')}, sensitivity {_cell(e, 'recall')}, "
                f"specificity {_cell(e, 'specificity')}; threshold {e['threshold']:.4f} "
                f"(eval sensitivity {e['eval_sensitivity']:.3f})"
            )
            print(f"  {'':<12} {e['masks']}")
    weights = report["oracle"]["coefficients"]
    print("  weights (standardised):", ", ".join(f"{k} {v:+.3f}" for k, v in weights.items()))
    alone = single_features(splits)
    print("  each feature alone, test AUC:", ", ".join(f"{k} {v:.3f}" for k, v in alone.items()))
    report["single_feature_test_auc"] = alone
    if args.json:
        with open(args.json, "a") as f:
            f.write(json.dumps({"records": args.records, "model": args.model, **report}) + "\n")
    return report


if __name__ == "__main__":
    main()
