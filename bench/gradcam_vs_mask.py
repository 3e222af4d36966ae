"""Does the heatmap point at the lesion? Grad-CAM of a pushed model against the radiologist's
masks on the ingested test split, next to the baselines a heatmap has to beat.

Why: a radiologist trusts a prediction only when the heatmap beside it is right, and the
design brief asks for explanation quality measured, not asserted. Per test image with a
non-empty mask, the `serving_default` Grad-CAM is upsampled bilinearly to the image (as
clients do) and scored:

  pointing game   the heatmap's hottest pixel lies inside the mask
                  (baseline in the same run: the image centre)
  heat in mask    share of the heatmap's mass inside the mask
                  (baseline: a uniform map, whose share is the mask's area fraction)
  miss distance   for a missed peak, how far it lies from the mask, in feature-map cells

With ROI on (the paper's recipe) the model sees only the masked lesion, so a heatmap on the
lesion is expected there; the numbers say how much of that the heatmap shows.

Usage (from the repository root):

  .venv/bin/python -m bench.gradcam_vs_mask [--model-dir DIR] [--records GLOB] [--json OUT]
      [--without-masks] [--map gradcam|lesion_probability]

`--map lesion_probability` scores a joint model's own lesion map (architecture=joint) the same
way, and adds its Dice against the mask (map > 0.5 at the map's side, the mask area-resized).
"""

from __future__ import annotations

from modules.keras2 import use_keras2

use_keras2()  # before anything imports TensorFlow

import argparse
import io
import json
import sys
from collections.abc import Sequence

import numpy as np
import tensorflow as tf
from PIL import Image

from bench.serving_latency import record_files, resolve_model_dir
from lesionlens.pointing import score
from modules import contract as C
from modules.raw_examples import without_mask

BATCH = 16


def _field(example: tf.train.Example, name: str):
    feature = example.features.feature[name]
    return feature.int64_list.value[0] if feature.int64_list.value else feature.bytes_list.value[0]


def _dice(probability: np.ndarray, mask: np.ndarray) -> float:
    side = probability.shape[0]
    small = tf.image.resize(mask[..., None].astype("float32"), [side, side], method="area")
    truth, predicted = small.numpy()[..., 0] >= 0.5, probability > 0.5
    total = truth.sum() + predicted.sum()
    return float(2 * (truth & predicted).sum() / total) if total else 1.0


def evaluate(
    model_dir: str, files: Sequence[str], with_masks: bool = True, heat: str = C.GRADCAM
) -> list[dict]:
    """Scores every test example that has a non-empty mask. `with_masks=False` sends each
    request without its mask (the deployable answer: the model's own ROI); the heatmap is
    still scored against the radiologist's mask. `heat`: the output scored."""
    predict = tf.saved_model.load(model_dir).signatures[C.SERVING_DEFAULT]
    compression = "GZIP" if files[0].endswith(".gz") else ""
    rows = []
    batches = tf.data.TFRecordDataset(list(files), compression_type=compression).batch(BATCH)
    for batch in batches:
        request = batch if with_masks else tf.constant([without_mask(r) for r in batch.numpy()])
        out = predict(**{C.EXAMPLES: request})
        for i, raw in enumerate(batch.numpy()):
            example = tf.train.Example.FromString(raw)
            mask_bytes = _field(example, C.MASK)
            if not mask_bytes:
                continue
            mask = np.asarray(Image.open(io.BytesIO(mask_bytes)).convert("L")) > 0
            if not mask.any():
                continue
            row = score(out[heat][i].numpy(), mask)
            if heat == C.LESION_PROBABILITY:
                row["dice"] = _dice(out[heat][i].numpy(), mask)
            row.update(
                image_id=_field(example, C.IMAGE_ID).decode(),
                label=int(_field(example, C.LABEL)),
                predicted=int(out[C.CLASS_ID][i].numpy()),
            )
            rows.append(row)
    return rows


def summarize(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Per group: pointing rates are means, heat share and area medians (skewed by size)."""
    groups = {
        "all": rows,
        "correct": [r for r in rows if r["label"] == r["predicted"]],
        "wrong": [r for r in rows if r["label"] != r["predicted"]],
        "label 0": [r for r in rows if r["label"] == 0],
        "label 1": [r for r in rows if r["label"] == 1],
    }
    out = {}
    for name, rs in groups.items():
        if rs:
            stats = {k: float(np.mean([r[k] for r in rs])) for k in ("hit", "centre_hit")}
            for k in ("heat_in_mask", "area"):
                stats[k] = float(np.median([r[k] for r in rs]))
            stats["concentration"] = stats["heat_in_mask"] / stats["area"] if stats["area"] else 0.0
            misses = [r["miss_cells"] for r in rs if not r["hit"]]
            stats["miss_cells"] = float(np.median(misses)) if misses else 0.0
            if "dice" in rs[0]:
                stats["dice"] = float(np.mean([r["dice"] for r in rs]))
            out[name] = {"n": len(rs), **stats}
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model-dir", help="version dir or <serving_root>/<name> (default: latest)")
    p.add_argument("--records", help="glob of raw tf.Example TFRecords (default: model's test)")
    p.add_argument("--json", help="also write per-image scores and the summary here")
    p.add_argument(
        "--without-masks",
        action="store_true",
        help="send each request without its mask (deployable: the model's own ROI); the "
        "heat map is still scored against the radiologist's mask",
    )
    p.add_argument(
        "--map",
        choices=[C.GRADCAM, C.LESION_PROBABILITY],
        default=C.GRADCAM,
        help="the served heat map (default) or a joint model's own lesion map",
    )
    args = p.parse_args(argv)
    model_dir = resolve_model_dir(args.model_dir)
    if model_dir is None:
        print("no pushed model found; run the pipeline or pass --model-dir", file=sys.stderr)
        return 2
    files = record_files(model_dir, args.records)
    if not files:
        print(f"no test records found for {model_dir}; pass --records", file=sys.stderr)
        return 2
    rows = evaluate(str(model_dir), files, with_masks=not args.without_masks, heat=args.map)
    if not rows:
        print("no test example has a non-empty mask: nothing to compare", file=sys.stderr)
        return 2
    summary = summarize(rows)
    print(f"model    {model_dir}\nrecords  {', '.join(files)}\n")
    print(
        f"{'images':<9}{'n':>4}{'pointing':>10}{'centre':>8}"
        f"{'heat in mask':>14}{'mask area':>11}{'ratio':>7}{'miss dist':>11}"
    )
    for name, s in summary.items():
        print(
            f"{name:<9}{s['n']:>4}{s['hit']:>10.1%}{s['centre_hit']:>8.1%}"
            f"{s['heat_in_mask']:>14.1%}{s['area']:>11.1%}{s['concentration']:>7.2f}"
            f"{s['miss_cells']:>11.2f}" + (f"  Dice {s['dice']:.3f}" if "dice" in s else "")
        )
    print(
        "\npointing: share of images whose hottest pixel is inside the mask (centre: the image"
        "\ncentre instead); heat in mask and mask area are medians; ratio = heat in mask / area"
        "\n(1.0 = no better than a uniform map); miss dist = median distance of a missed peak to"
        "\nthe mask, in feature-map cells."
    )
    if args.json:
        with open(args.json, "w") as f:
            report = {"model_dir": str(model_dir), "summary": summary, "images": rows}
            json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
