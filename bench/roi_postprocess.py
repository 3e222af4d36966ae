"""Which post-processing turns the segmenter's probability map into the served ROI?

On the transformed eval and test splits of a pipeline run, with its trained segmenter, for
a grid of settings (component at the most confident pixel on / off, dilation in pixels at
the segmenter's resolution), against the radiologist's masks:

  dice        overlap of the ROI with the lesion
  coverage    share of the lesion's pixels inside the ROI (what the classifier gets to see
              of the lesion: cut-off margins lose the cues of malignancy)
  area        share of the image inside the ROI (what it sees of the rest)
  fallback    share of images where no usable ROI was found (whole image)

Usage (from the repository root):

  .venv/bin/python -m bench.roi_postprocess --run OUT/tfx/lesionlens [--split test]
"""

from __future__ import annotations

import os

from modules.keras2 import use_keras2

use_keras2()  # before anything imports TensorFlow

import argparse
import glob
import json
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from modules.segmenter import network as S
from modules.segmenter.evaluation import score_segmenter
from modules.segmenter.records import segment_records
from modules.segmenter.trainer import load_segmenter
from modules.split_records import read_split


def latest(pattern: str) -> str:
    """The match with the highest artifact id (the `*` of the pattern)."""
    paths = glob.glob(pattern)
    if not paths:
        raise SystemExit(f"nothing matches {pattern}")
    return max(paths, key=lambda p: int(p[len(pattern.split("*")[0]) :].split(os.sep)[0]))


def sweep(run: str, split: str, dilations: list[int]) -> list[dict]:
    model = load_segmenter(
        latest(os.path.join(run, "segmenter_trainer", "model", "*", "Format-Serving"))
    )
    examples = latest(os.path.join(run, "Transform", "transformed_examples", "*", f"Split-{split}"))
    records = read_split(examples)
    size = model.input_shape[1]  # the classifier's image size (the segmenter resizes inside)
    rows = []
    for dilation in dilations:
        post = S.RoiPostprocess(0.5, dilation, 0.005, 0.9)
        values, _, _ = score_segmenter(model, records, size, post, [])
        cover, area, fallback = [], [], []
        for _, seg in segment_records(model, records, size, post):
            truth = tf.cast(seg["lesion_mask"] > 0, tf.float32)
            keep = tf.reduce_sum(truth, axis=[1, 2]) > 0
            inside = tf.reduce_sum(truth * seg["roi"], axis=[1, 2])
            cover.append(
                tf.boolean_mask(inside / tf.maximum(tf.reduce_sum(truth, [1, 2]), 1), keep)
            )
            area.append(tf.boolean_mask(tf.reduce_mean(seg["roi"], axis=[1, 2]), keep))
            fallback.append(tf.boolean_mask(~seg["found"], keep))
        rows.append(
            {
                "dilation": dilation,
                "dice": float(values["roi_dice"].mean()),
                "coverage": float(np.concatenate(cover).mean()),
                "area": float(np.concatenate(area).mean()),
                "fallback": float(np.concatenate(fallback).mean()),
                "raw_dice": float(values["dice"].mean()),
            }
        )
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, help="the pipeline root: OUT/tfx/<pipeline name>")
    p.add_argument("--split", default="test")
    p.add_argument("--dilations", default="0,1,2,3,4")
    args = p.parse_args(argv)
    rows = sweep(args.run, args.split, [int(d) for d in args.dilations.split(",")])
    print(f"{'dilation':>9}{'dice':>8}{'coverage':>10}{'area':>8}{'fallback':>10}")
    for r in rows:
        print(
            f"{r['dilation']:>9}{r['dice']:>8.3f}{r['coverage']:>10.3f}{r['area']:>8.3f}"
            f"{r['fallback']:>10.3f}"
        )
    print(
        f"(P > 0.5 alone, no component selection and no fallback: Dice {rows[0]['raw_dice']:.3f};"
        " dilation 0 above adds only those)"
    )
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
