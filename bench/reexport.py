"""Re-export a trained run's classifier with this checkout's serving graph, without training.

Why: a change to the served graph (post-processing, ROI choice, signatures) is judged by
`bench.serving_latency` on the model whose cost it changes. Retraining for that would take
15 minutes and change the weights too; this keeps the run's weights, decision (temperature,
threshold), Transform graph and segmenter, and rebuilds only the signatures.

Usage (from the repository root; RUN = a pipeline output with `serving/` and `tfx/`, e.g. a
`bench.roi_modes` variant folder):

  .venv/bin/python -m bench.reexport --run /tmp/roi_modes/grouped/predicted --out /tmp/m
  .venv/bin/python -m bench.serving_latency --model-dir /tmp/m --records 'RECORDS/test/*.gz'
"""

from __future__ import annotations

import os

from modules.keras2 import use_keras2

use_keras2()  # before anything imports TensorFlow

import argparse
import dataclasses
import json
from collections.abc import Sequence

from bench.roi_postprocess import latest
from modules import contract as C
from pipeline.config import PipelineConfig


def reexport(run: str, out: str, mirror_tta: bool | None = None) -> str:
    """Writes OUT/1 (a SavedModel with the run's weights and this code's signatures);
    `mirror_tta` True / False overrides the run's (the decision stays the run's)."""
    import tensorflow_transform as tft
    import tf_keras as keras

    from modules import model as M
    from modules.options import TrainerOptions
    from modules.segmenter.trainer import load_segmenter
    from modules.trainer import _serving_signatures

    names = PipelineConfig()
    source = latest(os.path.join(run, "serving", names.model_name, "*"))
    with open(os.path.join(source, C.MODEL_INFO)) as f:
        info = json.load(f)
    fields = [f.name for f in dataclasses.fields(TrainerOptions)]
    opts = TrainerOptions(**{name: info.get(name, "") for name in fields})
    if mirror_tta is not None:
        opts = dataclasses.replace(opts, mirror_tta=mirror_tta)
        info["mirror_tta"] = mirror_tta
    tfx_root = os.path.join(run, "tfx", names.pipeline_name)
    segmenter = None
    if opts.segmenter_size:
        pattern = os.path.join(tfx_root, "segmenter_trainer", "model", "*", "Format-Serving")
        segmenter = load_segmenter(latest(pattern))
    transform = tft.TFTransformOutput(
        latest(os.path.join(tfx_root, "Transform", "transform_graph", "*"))
    )
    decision = M.Decision(
        temperature=info["decision"]["temperature"], threshold=info["decision"]["threshold"]
    )
    model = keras.models.load_model(source, compile=False)
    signatures = _serving_signatures(model, segmenter, transform, opts, decision)
    target = os.path.join(out, "1")
    model.save(target, save_format="tf", signatures=signatures)
    info_path = os.path.join(target, C.MODEL_INFO)
    os.makedirs(os.path.dirname(info_path), exist_ok=True)
    with open(info_path, "w") as f:
        json.dump(info, f, indent=2)
    return target


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, help="pipeline output folder (serving/ and tfx/)")
    p.add_argument("--out", required=True, help="model base folder to write (OUT/1)")
    p.add_argument(
        "--mirror-tta",
        action=argparse.BooleanOptionalAction,
        help="export with (or without) mirror test-time averaging; default: as the run was",
    )
    args = p.parse_args(argv)
    print(f"re-exported {reexport(args.run, args.out, args.mirror_tta)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
