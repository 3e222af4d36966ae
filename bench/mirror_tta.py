"""Mirror test-time averaging: what it costs in the served graph, on one trained model.

Why: `mirror_tta` (PipelineConfig) is kept only if it costs <= 1.3x a prediction without it
(issue 25). This re-exports a run's classifier twice with `bench.reexport` (same weights,
decision and Transform graph; mirror averaging off and on) and times, in one process,
round-robin interleaved so background load hits every variant alike, at each batch size:

  serving_default  parse + Transform + classifier + Grad-CAM, raw tf.Examples (the server)
  predict_only     the same without Grad-CAM
  classifier       `modules.model.predict_with_gradcam` on already-decoded images (tf.function)

It also sends each test image and its left-right mirror (`predict_images`, PNG bytes) to
both exports and prints the largest difference of P(malignant) between the two answers.

  .venv/bin/python -m bench.mirror_tta --run /work/runs/lite0-s42 \\
      --records '/work/runs/busi/records/test/*.gz' [--batch-sizes 1,16] [--iters 20]

The benefit (test AUC with and without averaging) is `bench.recipe --mirror`.
"""

from __future__ import annotations

import os

from modules.keras2 import use_keras2

use_keras2()  # before anything imports TensorFlow

import argparse
import io
import json
import platform
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf
import tf_keras as keras
from PIL import Image

from bench.reexport import reexport
from bench.serving_latency import load_examples
from modules import contract as C
from modules import model as M
from modules.transform import decode_images

GOAL = 1.3  # serving_default with / without mirror averaging


def _flipped_png(raw: bytes) -> tuple[bytes, bytes]:
    """The example's image as PNG, and its left-right mirror as PNG."""
    image = tf.train.Example.FromString(raw).features.feature[C.IMAGE].bytes_list.value[0]
    pixels = np.asarray(Image.open(io.BytesIO(image)).convert("RGB"))
    out = []
    for p in (pixels, pixels[:, ::-1]):
        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(p)).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out[0], out[1]


def flip_disagreement(signatures, pool: Sequence[bytes], n: int) -> float:
    """Largest |P(malignant | image) - P(malignant | mirrored image)| over `n` test images."""
    worst = 0.0
    for raw in pool[:n]:
        own, mirrored = _flipped_png(raw)
        out = signatures[C.PREDICT_IMAGES](
            image_bytes=tf.constant([own, mirrored]), mask_bytes=tf.constant(["", ""])
        )
        p = out[C.POSITIVE_PROBABILITY].numpy()
        worst = max(worst, float(abs(p[0] - p[1])))
    return worst


def _classifier(cam: M.GradCam, decision: M.Decision):
    return tf.function(lambda x: M.predict_with_gradcam(cam, x, decision), autograph=False)


def _calls(name: str, signatures, classifier, examples: tf.Tensor, images: tf.Tensor) -> dict:
    """The timed calls of one export; each returns numpy probabilities (forces the result)."""
    default, predict_only = signatures[C.SERVING_DEFAULT], signatures[C.PREDICT_ONLY]
    return {
        f"serving_default/{name}": lambda: default(examples=examples)[C.PROBABILITIES].numpy(),
        f"predict_only/{name}": lambda: predict_only(examples=examples)[C.PROBABILITIES].numpy(),
        f"classifier/{name}": lambda: classifier(images)[C.PROBABILITIES].numpy(),
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, help="a pipeline output folder (serving/ and tfx/)")
    p.add_argument("--records", help="glob of raw tf.Example TFRecords (test images)")
    p.add_argument("--out", help="where the two exports go (default: a temporary folder)")
    p.add_argument("--batch-sizes", default="1,16")
    p.add_argument("--iters", type=int, default=20, help="timed rounds per batch size")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--flip-images", type=int, default=16, help="images for the flip check")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    out = args.out or tempfile.mkdtemp(prefix="mirror_tta_")
    dirs = {
        name: reexport(args.run, os.path.join(out, name), mirror_tta=on)
        for name, on in (("off", False), ("on", True))
    }
    loaded = {name: tf.saved_model.load(d) for name, d in dirs.items()}
    keras_model = keras.models.load_model(dirs["off"], compile=False)
    with open(os.path.join(dirs["off"], C.MODEL_INFO)) as f:
        info = json.load(f)
    size = int(info["image_size"])
    decision = M.Decision(info["decision"]["temperature"], info["decision"]["threshold"])
    cam = M.GradCam(keras_model)
    classifier = {
        name: _classifier(cam, M.Decision(decision.temperature, decision.threshold, on))
        for name, on in (("off", False), ("on", True))
    }
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    pool, source = load_examples(Path(dirs["off"]), args.records, max(sizes) * 2)
    print(f"[mirror_tta] {len(pool)} examples from {source}; {size} px")
    transform = loaded["off"].signatures[C.TRANSFORM_FEATURES]
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "load_average": os.getloadavg(),
        "batches": {},
    }
    for batch in sizes:
        examples = tf.constant(np.array([pool[i % len(pool)] for i in range(batch)], object))
        images = decode_images(transform(examples=examples)[C.IMAGE], size)
        calls = {}
        for name in ("off", "on"):
            calls.update(_calls(name, loaded[name].signatures, classifier[name], examples, images))
        for fn in calls.values():
            for _ in range(args.warmup):
                fn()
        times: dict[str, list[float]] = {k: [] for k in calls}
        order = list(calls)
        for i in range(args.iters):
            for name in order[i % len(order) :] + order[: i % len(order)]:
                t0 = time.perf_counter()
                calls[name]()
                times[name].append(time.perf_counter() - t0)
        median = {k: float(np.median(v)) * 1000 for k, v in times.items()}
        ratios = {
            what: float(np.median(np.array(times[f"{what}/on"]) / np.array(times[f"{what}/off"])))
            for what in ("serving_default", "predict_only", "classifier")
        }
        result["batches"][batch] = {"median_ms": median, "ratio_on_off": ratios}
        print(f"\n[mirror_tta] batch {batch}: median ms (off -> on), ratio on/off")
        for what, ratio in ratios.items():
            off, on = median[f"{what}/off"], median[f"{what}/on"]
            goal = f"  (goal <= {GOAL})" if what == "serving_default" else ""
            print(f"  {what:<16} {off:9.1f} -> {on:9.1f} ms   {ratio:.2f}x{goal}")
    result["flip_disagreement"] = {
        name: flip_disagreement(loaded[name].signatures, pool, args.flip_images)
        for name in ("off", "on")
    }
    print(
        f"\n[mirror_tta] max |P(malignant | image) - P(malignant | mirror)| over "
        f"{min(args.flip_images, len(pool))} test images: off "
        f"{result['flip_disagreement']['off']:.4f}, on {result['flip_disagreement']['on']:.2g}"
    )
    print(f"[mirror_tta] load average {result['load_average']}, {result['machine']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
