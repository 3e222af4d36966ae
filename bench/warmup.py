"""First-request latency of a freshly loaded model, with and without TF Serving warm-up.

Why: a version that TF Serving loads answers its first request only after that signature's
graph is built and optimised; replaying `assets.extra/tf_serving_warmup_requests` at load
moves that cost before the version goes live. Each measurement runs in a fresh process (no
graph cache carried over), alternating the two modes:

  cold    load the SavedModel, time the first `predict_images` request without a mask
  warm    load it as serve-dev does (replaying the warm-up file), time the same request

Usage (from the repository root):

  .venv/bin/python -m bench.warmup --model-dir DIR [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Sequence

CHILD = r"""
import json, sys, time
from pathlib import Path
import numpy as np
import tensorflow as tf
from modules import contract as C
from modules.warmup import read_warmup_requests
path, mode = sys.argv[1], sys.argv[2]
request = read_warmup_requests(path)[3].predict_log.request  # predict_images, no mask
inputs = {k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}
t0 = time.perf_counter()
if mode == "warm":
    from serving.dev.model_store import Servable
    fn = Servable("m", 1, Path(path))._functions[C.PREDICT_IMAGES]
else:
    fn = tf.saved_model.load(path).signatures[C.PREDICT_IMAGES]
load = time.perf_counter() - t0
t1 = time.perf_counter()
fn(**inputs)[C.PROBABILITIES].numpy()
first = time.perf_counter() - t1
t2 = time.perf_counter()
fn(**inputs)[C.PROBABILITIES].numpy()
second = time.perf_counter() - t2
print("RESULT" + json.dumps({"load_s": load, "first_ms": first * 1e3, "second_ms": second * 1e3}))
"""


def measure(model_dir: str, mode: str) -> dict[str, float]:
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, model_dir, mode],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return json.loads(proc.stdout.split("RESULT", 1)[1])


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model-dir", required=True, help="a version dir with the warm-up file")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    runs: dict[str, list[dict]] = {"cold": [], "warm": []}
    for _ in range(args.repeats):
        for mode in runs:
            runs[mode].append(measure(args.model_dir, mode))
    print(f"model {args.model_dir}, {args.repeats} fresh processes per mode, batch 2, no mask")
    print(f"{'mode':<6}{'load s':>9}{'first ms':>10}{'second ms':>11}")
    for mode, rs in runs.items():
        med = {k: sorted(r[k] for r in rs)[len(rs) // 2] for k in rs[0]}
        print(f"{mode:<6}{med['load_s']:>9.2f}{med['first_ms']:>10.1f}{med['second_ms']:>11.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
