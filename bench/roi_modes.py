"""Where does the ROI come from at inference, and what does each answer cost in accuracy?

Trains the pipeline once per variant on each ingested protocol and reports, on the same test
images, with seeded bootstrap 95 % intervals:

  (a) oracle      ROI from the radiologist's mask of the test image (the paper; ORACLE: it
                  needs a mask that does not exist for a new patient)
  (b) deployable  the same model, each request without a mask: the served segmenter's ROI
  (c) no ROI      classifier trained and tested on whole images
  (d) predicted   classifier trained on the segmenter's ROI (train_roi=predicted), tested
                  without masks (and, for reference, with them)
  (e) crop        as (d), with the lesion-centred crop of the ROI's box (roi_mode=crop)

plus the segmenter's Dice / IoU and the Grad-CAM pointing game for (a) and (b).

Usage (from the repository root; DATA = `lesionlens ingest` outputs):

  .venv/bin/python -m bench.roi_modes --data grouped=/tmp/busi/grouped/records \\
      --data paper=/tmp/busi/paper/records --out /tmp/roi_modes [--image-size 160] \\
      [--epochs 16] [--variants mask,none,predicted,crop]
"""

from __future__ import annotations

import os

from modules.keras2 import use_keras2

use_keras2()  # before anything imports TensorFlow

import argparse
import glob
import json
import subprocess
import sys
import time
from collections.abc import Sequence

from bench.gradcam_vs_mask import evaluate, summarize
from pipeline.config import PipelineConfig

METRICS = ("auc", "binary_accuracy", "recall", "specificity", "f1_score")
VARIANTS = {
    "mask": {"roi": True, "train_roi": "mask"},
    "none": {"roi": False},
    "predicted": {"roi": True, "train_roi": "predicted"},
    "crop": {"roi": True, "train_roi": "predicted", "roi_mode": "crop"},
}


def run_variant(data: str, out: str, variant: str, args: argparse.Namespace) -> dict:
    from pipeline.local import metadata_connection, run_pipeline
    from pipeline.results import latest_results

    # the paper's recipe (PipelineConfig's defaults: EfficientNetV2B0, Nadam, the last
    # epoch), as this bench measured it before busi-paper moved to the pretrained Lite0
    cfg = PipelineConfig(
        data_root=data,
        output_root=out,
        image_size=args.image_size,
        epochs=args.epochs,
        weights=args.weights,
        segmenter_size=args.segmenter_size,
        segmenter_epochs=args.segmenter_epochs,
        segmenter_width=args.segmenter_width,
        min_dice=0.0,  # measure whatever the segmenter reaches
        seed=args.seed,
        **VARIANTS[variant],
    )
    t0 = time.time()
    run_pipeline(cfg)
    res = latest_results(metadata_connection(cfg))
    res["wall_s"] = round(time.time() - t0)
    model_dir = res["pushed_destination"] or _latest_model(out)
    test = sorted(glob.glob(os.path.join(data, "test", "*.gz")))
    res["pointing"] = {"oracle": summarize(evaluate(model_dir, test))["all"]}
    if variant != "none":
        res["pointing"]["deployable"] = summarize(evaluate(model_dir, test, with_masks=False))[
            "all"
        ]
    return res


def _latest_model(out: str) -> str:
    models = glob.glob(os.path.join(out, "tfx", "*", "Trainer", "model", "*", "Format-Serving"))
    return max(models, key=lambda p: int(p.split(os.sep)[-2]))


def _cell(metrics: dict, intervals: dict, name: str) -> str:
    lo, hi = intervals.get(name, (float("nan"), float("nan")))
    return f"{metrics[name]:.3f} [{lo:.2f}, {hi:.2f}]"


def rows(protocol: str, variant: str, res: dict) -> list[str]:
    out = []
    deployable = (res["metrics"]["overall"], res["intervals"]["overall"])
    named = {
        "mask": [
            ("(a) oracle: GT-mask ROI at test", res.get("oracle")),
            ("(b) deployable: " "predicted ROI at test", None),
        ],
        "none": [("(c) no ROI: whole images", None)],
        "predicted": [
            ("(d) trained on predicted ROI, predicted at test", None),
            ("(d') same model, GT-mask ROI at test (oracle)", res.get("oracle")),
        ],
        "crop": [
            ("(e) trained on predicted-ROI crops, predicted at test", None),
            ("(e') same model, GT-mask box at test (oracle)", res.get("oracle")),
        ],
    }[variant]
    for label, oracle in named:
        metrics, intervals = (oracle["metrics"], oracle["intervals"]) if oracle else deployable
        cells = " | ".join(_cell(metrics, intervals, m) for m in METRICS)
        out.append(f"| {protocol} | {label} | {cells} |")
    return out


def run_isolated(protocol: str, data: str, out: str, variant: str, args) -> dict:
    """One variant in a child process: memory of in-process pipeline runs accumulates (five
    in one process reached 20 GB on a 24 GB machine)."""
    argv = [sys.executable, "-m", "bench.roi_modes", "--child", "--data", f"{protocol}={data}"]
    argv += ["--out", out, "--variants", variant]
    for flag in (
        "image_size",
        "epochs",
        "weights",
        "segmenter_size",
        "segmenter_width",
        "segmenter_epochs",
        "seed",
    ):
        argv += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    subprocess.run(argv, check=True)
    with open(os.path.join(out, "result.json")) as f:
        return json.load(f)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", action="append", required=True, help="NAME=ingest output")
    p.add_argument("--out", required=True)
    p.add_argument("--variants", default="mask,none,predicted")
    p.add_argument("--image-size", type=int, default=160)
    p.add_argument("--epochs", type=int, default=16)
    p.add_argument("--weights", default="none")
    p.add_argument("--segmenter-size", type=int, default=96)
    p.add_argument("--segmenter-epochs", type=int, default=30)
    p.add_argument("--segmenter-width", type=int, default=16)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    from pipeline.console import log_to_console, quiet_libraries

    log_to_console()
    quiet_libraries()
    if args.child:  # one protocol, one variant, in this process; results to OUT/result.json
        protocol, _, data = args.data[0].partition("=")
        res = run_variant(data, args.out, args.variants, args)
        with open(os.path.join(args.out, "result.json"), "w") as f:
            json.dump(res, f, indent=1, default=str)
        return 0
    results = {}
    table = [
        "| protocol | variant | " + " | ".join(METRICS) + " |",
        "| --- | --- |" + " --- |" * len(METRICS),
    ]
    for item in args.data:
        protocol, _, data = item.partition("=")
        for variant in args.variants.split(","):
            out = os.path.abspath(os.path.join(args.out, protocol, variant))
            os.makedirs(out, exist_ok=True)
            res = run_isolated(protocol, os.path.abspath(data), out, variant, args)
            results[f"{protocol}/{variant}"] = res
            table += rows(protocol, variant, res)
            with open(os.path.join(args.out, "roi_modes.json"), "w") as f:
                json.dump(results, f, indent=1, default=str)
            print("\n".join(table), flush=True)
            seg = res.get("segmentation")
            if seg:
                o = seg["slices"]["overall"]
                print(
                    f"{protocol}/{variant}: segmenter Dice {o['metrics']['dice']:.3f} "
                    f"{o['intervals']['dice']}, IoU {o['metrics']['iou']:.3f}, served ROI Dice "
                    f"{o['metrics']['roi_dice']:.3f}; baselines {seg['baselines_dice']}",
                    flush=True,
                )
            print(f"{protocol}/{variant}: pointing game {res['pointing']}; wall {res['wall_s']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
