"""What one network costs against the classifier alone: the joint network's served forward
pass (encoder, lesion decoder, attention head, HiResCAM of the decided class, the lesion
map's post-processing into `roi_mask`) against the
classifier-only path (the same backbone, global pooling, Grad-CAM), both Lite0 at the same
size, in one process, interleaved round by round so background load hits both alike.

Why: the two-stage design's no-mask path (segmenter + classifier) cost 1.69x the classifier
alone at batch 1 (docs/RESULTS.md); issue 29 asks the joint network for <= 1.2x. Weights do
not change the cost, so both networks are built from random init (no training, no files).

Usage (from the repository root):

  .venv/bin/python -m bench.joint_cost [--image-size 160] [--batch-sizes 1,16] [--iters 40]
"""

from __future__ import annotations

from modules.keras2 import use_keras2

use_keras2()  # before anything imports TensorFlow

import argparse
import time
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from modules import model as M
from modules.joint.explain import JointExplainer, predict_joint
from modules.joint.network import build_joint_model
from modules.joint.signatures import roi_outputs
from modules.segmenter.network import RoiPostprocess

POST = RoiPostprocess(threshold=0.5, dilation=2, min_area=0.005, max_area=0.9)  # the defaults

BACKBONE = "efficientnet-lite0"


def variants(image_size: int) -> dict:
    """name -> a traced function of a batch of images: what each served graph computes after
    decoding (decoding and parsing are the same for both)."""
    classifier = M.build_model(2, image_size, "none", BACKBONE)
    joint = build_joint_model(2, image_size, "none", BACKBONE)
    cam, explainer = M.GradCam(classifier), JointExplainer(joint)
    spec = [tf.TensorSpec([None, image_size, image_size, 3], tf.float32)]

    @tf.function(input_signature=spec)
    def classifier_only(images):
        return M.predict_with_gradcam(cam, images, M.UNCALIBRATED)

    @tf.function(input_signature=spec)
    def joint_network(images):  # + its ROI outputs (the map's post-processing), as served
        out = predict_joint(explainer, images, M.UNCALIBRATED)
        lesion = out[M.C.LESION_PROBABILITY]
        none = tf.zeros(tf.shape(images)[:1], tf.bool)
        return {**out, **roi_outputs(lesion, none, tf.zeros_like(lesion, tf.uint8), POST)}

    return {"classifier": classifier_only, "joint": joint_network}


def measure(fns: dict, images: tf.Tensor, iters: int, warmup: int = 3) -> dict[str, list[float]]:
    for fn in fns.values():
        for _ in range(warmup):
            fn(images)
    names, times = list(fns), {name: [] for name in fns}
    for i in range(iters):
        for j in range(len(names)):
            name = names[(i + j) % len(names)]
            t0 = time.perf_counter()
            fns[name](images)[M.C.CLASS_ID].numpy()
            times[name].append(time.perf_counter() - t0)
    return times


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--image-size", type=int, default=160)
    p.add_argument("--batch-sizes", default="1,16")
    p.add_argument("--iters", type=int, default=40)
    args = p.parse_args(argv)
    fns = variants(args.image_size)
    rng = np.random.default_rng(0)
    print(f"Lite0 at {args.image_size} px, {args.iters} interleaved rounds per batch size")
    print(f"{'batch':>5} {'classifier p50 ms':>18} {'joint p50 ms':>13} {'joint / classifier':>19}")
    for batch in (int(b) for b in args.batch_sizes.split(",")):
        shape = (batch, args.image_size, args.image_size, 3)
        images = tf.constant(rng.uniform(0, 255, shape).astype("float32"))
        t = {k: np.asarray(v) for k, v in measure(fns, images, args.iters).items()}
        ratio = float(np.median(t["joint"] / t["classifier"]))  # paired per round
        print(
            f"{batch:>5} {np.median(t['classifier']) * 1e3:>18.1f} "
            f"{np.median(t['joint']) * 1e3:>13.1f} {ratio:>19.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
