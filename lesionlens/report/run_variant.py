"""One variant of the report's grid, in its own process: the pipeline run, then what the
report needs from it (`collect`): the run's test results, the model's training record, a
Grad-CAM gallery and the inference time per image.

Usage (lesionlens.report.grid starts it): python -m lesionlens.report.run_variant OUT
PROFILE VARIANT_JSON
"""

from __future__ import annotations

import os

from modules.keras2 import use_keras2

use_keras2()  # before anything imports TensorFlow

import dataclasses
import io
import json
import sys
import time

import numpy as np

from lesionlens.report.grid import Variant, profile_config, result_path
from lesionlens.reproduce.timing import TIMED_IMAGES, seconds_per_image
from modules import contract as C
from modules.raw_examples import without_mask

GALLERY_PER_KIND = 2  # true positives, false negatives, false positives (malignant)


def _feature(record: bytes, name: str) -> bytes:
    import tensorflow as tf

    return tf.train.Example.FromString(record).features.feature[name].bytes_list.value[0]


def _small_mask(mask_png: bytes) -> np.ndarray | None:
    """The radiologist's mask at ROI_MASK_SIZE (1 = lesion), None without one."""
    from PIL import Image

    if not mask_png:
        return None
    mask = Image.open(io.BytesIO(mask_png)).convert("L").point(lambda v: 255 if v else 0)
    small = np.asarray(mask.resize((C.ROI_MASK_SIZE,) * 2, Image.BOX)) >= 128
    return small.astype(np.uint8) if small.any() else None


def gallery(model, records: dict[str, bytes], per_image: dict, folder: str) -> list[dict]:
    """Grad-CAM overlays of a few true positives, false negatives and false positives of the
    deployable answer (requests without a mask), the radiologist's mask outlined."""
    import tensorflow as tf

    from serving.overlay import overlay_png

    labels = np.asarray(per_image["label"])
    called = np.asarray(per_image["deployable"][C.CLASS_ID])
    kinds = {
        "true positive": (labels == C.POSITIVE_LABEL) & (called == C.POSITIVE_LABEL),
        "false negative": (labels == C.POSITIVE_LABEL) & (called != C.POSITIVE_LABEL),
        "false positive": (labels != C.POSITIVE_LABEL) & (called == C.POSITIVE_LABEL),
    }
    os.makedirs(folder, exist_ok=True)
    out = []
    for kind, hits in kinds.items():
        for i in np.flatnonzero(hits)[:GALLERY_PER_KIND]:
            image_id = per_image["image_id"][i]
            record = records[image_id]
            answer = model.signatures[C.SERVING_DEFAULT](
                **{C.EXAMPLES: tf.constant([without_mask(record)])}
            )
            png = overlay_png(
                _feature(record, C.IMAGE),
                answer[C.GRADCAM].numpy()[0],
                roi_mask=_small_mask(_feature(record, C.MASK)),
            )
            name = f"{kind.replace(' ', '_')}_{len(out)}.png"
            with open(os.path.join(folder, name), "wb") as f:
                f.write(png)
            p = float(np.asarray(per_image["deployable"][C.PROBABILITIES])[i][C.POSITIVE_LABEL])
            out.append({"kind": kind, "image_id": image_id, "file": name, "p_malignant": p})
    return out


def inference_seconds(model, records: list[bytes]) -> float:
    """Median wall time of `serving_default` (Grad-CAM included, no mask) at batch 1."""
    seconds = seconds_per_image(model, [without_mask(r) for r in records[:TIMED_IMAGES]])
    return float("nan") if seconds is None else seconds  # no test image: as np.median([])


def newest_model(pipeline_root: str, trainer: str) -> str | None:
    """The model artifact folder (`.../model/<id>`) a Trainer node of the run wrote last."""
    import glob

    pattern = os.path.join(pipeline_root, trainer, "model", "*", "Format-Serving")
    models = [os.path.dirname(m) for m in glob.glob(pattern)]
    return max(models, key=lambda m: int(os.path.basename(m))) if models else None


def sibling_segmenter(out: str, profile: str, variant: Variant) -> str | None:
    """The segmenter that the variant's finished SMOTE sibling trained: the same records,
    seed and segmenter settings (SMOTE acts after it), so the same model; reusing it saves a
    ROI-on run the segmenter's training."""
    if not variant.roi:
        return None
    sibling = dataclasses.replace(variant, smote=not variant.smote)
    if not os.path.exists(result_path(out, sibling)):
        return None
    return newest_model(profile_config(profile, sibling, out).pipeline_root, "segmenter_trainer")


def pipeline_seconds(connection) -> float | None:
    """The components' own times summed, as MLMD recorded them (the local runner runs them
    one after another): the run's time even when a resumed report finds them cached."""
    from ml_metadata import metadata_store

    executions = metadata_store.MetadataStore(connection).get_executions()
    if not executions:
        return None
    return sum(e.last_update_time_since_epoch - e.create_time_since_epoch for e in executions) / 1e3


def collect(cfg, variant: Variant, wall_s: float, folder: str) -> dict:
    """The report's record of one finished run (JSON-able)."""
    import tensorflow as tf
    from tfx.utils import path_utils

    from modules.split_records import read_split
    from pipeline.local import metadata_connection
    from pipeline.results import latest_results

    res = latest_results(metadata_connection(cfg))
    trained = newest_model(cfg.pipeline_root, "Trainer")
    model_dir = res["pushed_destination"] or (trained and path_utils.serving_model_path(trained))
    if not model_dir:
        raise RuntimeError(f"{variant.name}: the run trained no model ({cfg.output_root})")
    with tf.io.gfile.GFile(os.path.join(model_dir, C.MODEL_INFO)) as f:
        info = json.load(f)
    test = read_split(os.path.join(cfg.data_root, C.TEST))
    records = {_feature(r, C.IMAGE_ID).decode(): r for r in test}
    model = tf.saved_model.load(model_dir)
    return {
        "variant": dataclasses.asdict(variant),
        "wall_s": round(pipeline_seconds(metadata_connection(cfg)) or wall_s, 1),
        "segmenter_model": cfg.segmenter_model or None,  # imported, not trained in this run
        "results": res,
        "info": {k: info.get(k) for k in ("classes", "train_seconds", "decision", "history")},
        "inference_s_per_image": inference_seconds(model, test),
        "gallery": gallery(model, records, res["per_image"], os.path.join(folder, "gallery")),
    }


def main(argv: list[str]) -> int:
    from pipeline.console import log_to_console, quiet_libraries

    log_to_console()
    quiet_libraries()
    out, profile, spec = argv
    variant = Variant(**json.loads(spec))
    cfg = profile_config(profile, variant, out)
    reused = sibling_segmenter(out, profile, variant)
    if reused:
        print(f"[report] {variant.name}: the segmenter of its SMOTE sibling, {reused}", flush=True)
        cfg = cfg.replace(segmenter_model=reused)
    from pipeline.local import run_pipeline

    t0 = time.time()
    run_pipeline(cfg)
    path = result_path(out, variant)
    result = collect(cfg, variant, time.time() - t0, os.path.dirname(path))
    with open(path + ".tmp", "w") as f:
        json.dump(result, f, default=list)
    os.replace(path + ".tmp", path)  # a killed run leaves no half-written result
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
