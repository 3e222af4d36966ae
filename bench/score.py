"""Throughput of `lesionlens score` (Beam RunInference) against a bare predict loop, and its
scaling from one to two workers on the DirectRunner and on Beam's DaskRunner.

Every variant scores the same images with the same model in this process's run:

  bare            tf.saved_model.load + a loop of the signature over batches of the same
                  raw examples, built from the same files beforehand (no I/O, no checks)
  direct-1        the Beam job, DirectRunner in one process (in_memory)
  direct-mp-1/2   DirectRunner multi_processing with 1 / 2 worker processes
  dask-1/2        DaskRunner on a local dask.distributed cluster of 1 / 2 worker processes

`+overlays` variants also write one Grad-CAM overlay PNG per image (serving_default; the
others use predict_only). Images/s counts the whole job: model load, reading, validation,
inference and writing (the bare loop counts its model load too; its load-free rate is shown
beside it). Goal: direct-1 at >= 0.9x the bare loop. On a machine with few cores, one TF
process already uses them all: `--worker-threads 1` gives each worker process one core, so
the 1 -> 2 worker scaling measures the job, not TF's own threading.

Usage (from the repository root; MODEL = a pushed model, e.g. from `local_runner.py`):

  .venv/bin/python -m bench.score --model MODEL \\
      [--src ../shared/data/busi/Dataset_BUSI_with_GT] [--out /tmp/bench_score] \\
      [--variants bare,direct-1,direct-mp-1,direct-mp-2,dask-1,dask-2,direct-1+overlays,...]
"""

from __future__ import annotations

import os

from modules.keras2 import use_keras2

use_keras2()  # before anything imports TensorFlow

import argparse
import json
import shutil
import sys
import time
from collections.abc import Sequence

DEFAULT_SRC = os.path.join(
    os.path.dirname(__file__), "..", "..", "shared", "data", "busi", "Dataset_BUSI_with_GT"
)
DEFAULT_VARIANTS = (
    "bare,direct-1,direct-mp-1,direct-mp-2,dask-1,dask-2,"
    "direct-1+overlays,direct-mp-2+overlays,dask-2+overlays"
)


def bare(model_path: str, src: str, batch_size: int, signature: str) -> dict:
    """The same images as raw examples in memory, then load + a plain loop of the signature."""
    import tensorflow as tf

    from lesionlens.score import sources

    plan = sources.plan_inputs(src, batch_size)
    examples = []
    for batch in plan.inputs:
        for candidate in batch.candidates:
            got = sources.read_image(candidate, 16_000_000)
            if got[0] == sources.OK:
                examples.append(got[-1])
    t0 = time.perf_counter()
    fn = tf.saved_model.load(model_path).signatures[signature]
    t_load = time.perf_counter() - t0
    for start in range(0, len(examples), batch_size):
        fn(examples=tf.constant(examples[start : start + batch_size]))
    seconds = time.perf_counter() - t0
    return {
        "images": len(examples),
        "seconds": round(seconds, 2),
        "images_per_second": round(len(examples) / seconds, 2),
        "images_per_second_after_load": round(len(examples) / (seconds - t_load), 2),
        "load_seconds": round(t_load, 2),
    }


def beam_job(model: str, src: str, out: str, variant: str, batch_size: int) -> dict:
    from lesionlens.score import job

    name, _, extra = variant.partition("+")
    overlays = extra == "overlays"
    runner, _, workers = name.rpartition("-")
    cfg = job.ScoreConfig(model, src, out, batch_size=batch_size, overlays=overlays)
    if runner == "direct":
        args = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]
    elif runner == "direct-mp":
        args = ["--direct_running_mode=multi_processing", f"--direct_num_workers={workers}"]
    elif runner == "dask":
        from distributed import LocalCluster

        with LocalCluster(
            n_workers=int(workers), threads_per_worker=1, dashboard_address=None
        ) as cluster:
            address = cluster.scheduler_address
            args = [
                "--runner=apache_beam.runners.dask.dask_runner.DaskRunner",
                f"--dask_client_address={address}",
            ]
            return _timed(cfg, args)
    else:
        raise SystemExit(f"unknown variant {variant}")
    return _timed(cfg, args)


def _timed(cfg, args: list[str]) -> dict:
    from lesionlens.score import job

    if os.path.isdir(cfg.out):
        shutil.rmtree(cfg.out)
    s = job.run(cfg, args)
    return {
        "images": s["scored"],
        "rejected": s["rejected"],
        "seconds": s["pipeline_seconds"],
        "images_per_second": s["images_per_second"],
    }


def _median(rs: list[dict]) -> dict:
    """The run with the median images/s (a real run, not a mix of several)."""
    return sorted(rs, key=lambda r: r["images_per_second"])[len(rs) // 2]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--src", default=os.path.normpath(DEFAULT_SRC))
    p.add_argument("--out", default="/tmp/bench_score")
    p.add_argument("--variants", default=DEFAULT_VARIANTS)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--repeats", type=int, default=1, help="interleaved rounds (medians)")
    p.add_argument(
        "--worker-threads",
        type=int,
        default=0,
        help="TensorFlow threads per worker process (TF_NUM_INTRAOP/INTEROP_THREADS) for the "
        "multi-process variants; 0 = TF's default (all cores in every worker)",
    )
    args = p.parse_args(argv)
    if args.worker_threads:  # read by TF in the worker processes started below
        os.environ["TF_NUM_INTRAOP_THREADS"] = str(args.worker_threads)
        os.environ["TF_NUM_INTEROP_THREADS"] = str(args.worker_threads)
    if not os.path.isdir(args.src):
        print(f"skip: {args.src} not found (the BUSI folder or any image folder)")
        return 0
    from lesionlens.score.inference import resolve_model

    model_path = resolve_model(args.model)
    runs: dict[str, list[dict]] = {}
    for round_ in range(args.repeats):  # interleaved rounds: drift hits every variant alike
        for variant in args.variants.split(","):
            print(f"--- {variant} (round {round_ + 1})", flush=True)
            if variant == "bare":
                r = bare(model_path, args.src, args.batch_size, "predict_only")
            else:
                out = os.path.join(args.out, variant)
                r = beam_job(model_path, args.src, out, variant, args.batch_size)
            runs.setdefault(variant, []).append(r)
            print(json.dumps(r), flush=True)
    results = {v: _median(rs) for v, rs in runs.items()}
    base = results.get("bare", {}).get("images_per_second")
    print(f"\nmodel {model_path}\nsource {args.src}\nmedian of {args.repeats} round(s)\n")
    print(f"{'variant':<24}{'images':>8}{'seconds':>10}{'images/s':>10}{'range':>16}{'vs bare':>9}")
    for variant, r in results.items():
        ratio = f"{r['images_per_second'] / base:.2f}x" if base else "-"
        rates = [x["images_per_second"] for x in runs[variant]]
        span = f"{min(rates):.1f}-{max(rates):.1f}"
        print(
            f"{variant:<24}{r['images']:>8}{r['seconds']:>10}{r['images_per_second']:>10}"
            f"{span:>16}{ratio:>9}"
        )
    for runner in ("direct-mp", "dask"):
        for extra in ("", "+overlays"):
            one, two = results.get(f"{runner}-1{extra}"), results.get(f"{runner}-2{extra}")
            if one and two:
                scale = two["images_per_second"] / one["images_per_second"]
                print(f"scaling {runner}{extra} 1 -> 2 workers: {scale:.2f}x")
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "bench_score.json"), "w") as f:
        json.dump({"model": model_path, "source": args.src, "runs": runs}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
