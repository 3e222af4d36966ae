"""Does the served answer survive ordinary differences in how an image was acquired or saved?

Sends every test image to a pushed model without its mask (`predict_images`, the deployable
answer), then again after one everyday change at a time: saved as JPEG (quality 90 / 75),
saved single-channel, mirrored left-right, stored at 75 % or 125 % of its pixel size, 8 %
brighter, 8 % less contrast, 5 % of the border cropped away. Per change it prints how many
decisions flip at the exported threshold, the mean and largest change of P(malignant), and
the test AUC, beside the unchanged images (a lossless PNG re-save, which must change
nothing). A model worth serving changes few decisions under all of them.

Usage (from the repository root; RECORDS = an ingest output's test split):

  .venv/bin/python -m bench.invariance MODEL RECORDS/test [--json OUT.json]

MODEL: a pushed version folder or the folder of versions (the newest is used).
"""

from __future__ import annotations

from modules.keras2 import use_keras2

use_keras2()  # before anything imports TensorFlow

import argparse
import glob
import io
import json
import os
import sys
from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf
from PIL import Image, ImageEnhance, ImageOps
from sklearn.metrics import roc_auc_score

from lesionlens.score.inference import resolve_model
from modules import contract as C

BATCH = 16


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _jpeg(quality: int) -> Callable[[Image.Image], bytes]:
    def save(img: Image.Image) -> bytes:
        buf = io.BytesIO()
        img.convert("RGB").save(buf, format="JPEG", quality=quality)
        return buf.getvalue()

    return save


def _scaled(factor: float) -> Callable[[Image.Image], bytes]:
    def save(img: Image.Image) -> bytes:
        size = (round(img.width * factor), round(img.height * factor))
        return _png(img.resize(size, Image.Resampling.LANCZOS))

    return save


def _border_cropped(img: Image.Image) -> bytes:
    dx, dy = round(0.05 * img.width), round(0.05 * img.height)
    return _png(img.crop((dx, dy, img.width - dx, img.height - dy)))


# name -> the image as a client would send it after that change
CHANGES: dict[str, Callable[[Image.Image], bytes]] = {
    "png re-save (control)": _png,
    "jpeg q90": _jpeg(90),
    "jpeg q75": _jpeg(75),
    "single channel": lambda img: _png(img.convert("L")),
    "mirrored left-right": lambda img: _png(ImageOps.mirror(img)),
    "75 % pixel size": _scaled(0.75),
    "125 % pixel size": _scaled(1.25),
    "8 % brighter": lambda img: _png(ImageEnhance.Brightness(img).enhance(1.08)),
    "8 % less contrast": lambda img: _png(ImageEnhance.Contrast(img).enhance(0.92)),
    "5 % border cropped": _border_cropped,
}


def read_test(split_dir: str) -> tuple[list[bytes], np.ndarray]:
    files = sorted(glob.glob(os.path.join(split_dir, "*")))
    if not files:
        raise SystemExit(f"error: no records in {split_dir}")
    compression = "GZIP" if files[0].endswith(".gz") else ""
    images, labels = [], []
    for raw in tf.data.TFRecordDataset(files, compression_type=compression):
        ex = tf.train.Example.FromString(raw.numpy())
        images.append(ex.features.feature[C.IMAGE].bytes_list.value[0])
        labels.append(ex.features.feature[C.LABEL].int64_list.value[0])
    return images, np.array(labels)


def answers(predict, images: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """P(malignant) and class_id of each image, sent without a mask."""
    probs, classes = [], []
    for i in range(0, len(images), BATCH):
        chunk = images[i : i + BATCH]
        out = predict(
            **{C.IMAGE_BYTES: tf.constant(chunk), C.MASK_BYTES: tf.constant([b""] * len(chunk))}
        )
        probs.append(out[C.POSITIVE_PROBABILITY].numpy())
        classes.append(out[C.CLASS_ID].numpy())
    return np.concatenate(probs), np.concatenate(classes)


def measure(model: str, split_dir: str) -> list[dict]:
    predict = tf.saved_model.load(resolve_model(model)).signatures[C.PREDICT_IMAGES]
    originals, labels = read_test(split_dir)
    base_p, base_c = answers(predict, originals)
    rows = []
    for name, change in CHANGES.items():
        changed = [change(Image.open(io.BytesIO(b))) for b in originals]
        p, c = answers(predict, changed)
        delta = np.abs(p - base_p)
        rows.append(
            {
                "change": name,
                "images": len(labels),
                "flipped": int((c != base_c).sum()),
                "flipped_fraction": float((c != base_c).mean()),
                "mean_abs_dp": float(delta.mean()),
                "max_abs_dp": float(delta.max()),
                "auc": float(roc_auc_score(labels == C.POSITIVE_LABEL, p)),
                "auc_unchanged": float(roc_auc_score(labels == C.POSITIVE_LABEL, base_p)),
            }
        )
        r = rows[-1]
        print(
            f"{name:24s} {r['flipped']:4d} / {r['images']:<4d} {r['flipped_fraction']:8.1%} "
            f"{r['mean_abs_dp']:10.3f} {r['max_abs_dp']:8.3f} {r['auc']:8.3f}",
            flush=True,
        )
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="a pushed version folder, or the folder of versions")
    p.add_argument("split", help="a test split folder of `lesionlens ingest` records")
    p.add_argument("--json", help="write the rows here")
    args = p.parse_args(argv)
    print(
        f"{'change':24s} {'flipped':>11s} {'share':>8s} {'mean |dP|':>10s} {'max':>8s} {'AUC':>8s}"
    )
    rows = measure(args.model, args.split)
    print(f"unchanged images: AUC {rows[0]['auc_unchanged']:.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
