"""`lesionlens score MODEL SRC OUT [beam options]`: batch scoring on any Beam runner.

Exit codes: 0 scored (rejected inputs, if any, are listed in OUT/rejected-*.jsonl),
2 nothing could be scored, or the model / source cannot be used at all.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from modules import contract as C
from serving.cli import add_overlay_style, positive_int


def add_cli(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "score",
        help="score a folder / list / TFRecords of images with a pushed model on Apache Beam",
        description="Scores images with a pushed SavedModel through Beam's RunInference and "
        "writes OUT/predictions-*.jsonl and .parquet, OUT/rejected-*.jsonl (bad inputs with "
        "the reason) and OUT/summary.json. Unknown options go to Beam, e.g. "
        "--runner DataflowRunner --project P --region R --temp_location gs://..., or "
        "--direct_num_workers 2 --direct_running_mode multi_processing.",
    )
    p.add_argument("model", help="a SavedModel folder or a Pusher base folder (newest version)")
    p.add_argument(
        "src",
        help="an image folder (BUSI / MRI layout or any tree; *_mask*.png beside an image "
        "are its masks), one image file, a text file listing image paths, or TFRecord files "
        "(a glob or a folder of *.tfrecord*) in the raw contract; local or gs://",
    )
    p.add_argument("out", help="output folder (local or gs://)")
    p.add_argument("--batch-size", type=positive_int, default=16)
    p.add_argument(
        "--overlays",
        action="store_true",
        help="write OUT/overlays/*_<class>_gradcam.png, their thumbnails OUT/thumbs/*.jpg and "
        "OUT/index.html, a page to browse, sort and filter the scored images",
    )
    p.add_argument("--alpha", type=float, default=0.4, help="heatmap opacity in overlays")
    add_overlay_style(p)
    p.add_argument(
        "--signature",
        choices=(C.SERVING_DEFAULT, C.PREDICT_ONLY, C.PREDICT_NO_MASK),
        help="default: serving_default with --overlays (it returns Grad-CAM), else "
        "predict_only; predict_no_mask ignores masks found beside the images",
    )
    p.add_argument(
        "--classes",
        type=C.parse_classes,
        help="the model's classes, e.g. benign,malignant,normal (default: the model's own)",
    )
    p.add_argument("--num-shards", type=int, default=0, help="0: one per 10,000 images")
    p.add_argument("--max-pixels", type=int, default=C.DEFAULT_MAX_IMAGE_PIXELS)
    p.set_defaults(func=_run, accepts_extra=True)


def missing_local_path(model: str, src: str) -> str | None:
    """The error for a local MODEL or SRC that does not exist, found before Beam and
    TensorFlow are imported (seconds), so a mistyped path is answered at once."""
    if "://" not in model and not os.path.exists(model):
        return f"{model}: no such model folder"
    if "://" not in src and not any(ch in src for ch in "*?[") and not os.path.exists(src):
        return f"{src}: no such file or folder"
    return None


def _run(args: argparse.Namespace, beam_args: list[str]) -> int:
    started = time.time()  # the summary's wall time counts TensorFlow's import too
    problem = missing_local_path(args.model, args.src)
    if problem:
        print(f"lesionlens score: error: {problem}", file=sys.stderr)
        return 2
    from lesionlens.score import job
    from lesionlens.score.inference import ModelError
    from lesionlens.score.sources import ScoreInputError

    cfg = job.ScoreConfig(
        model=args.model,
        src=args.src,
        out=args.out,
        batch_size=args.batch_size,
        overlays=args.overlays,
        alpha=args.alpha,
        overlay_style=args.overlay_style,
        signature=args.signature,
        classes=args.classes,
        num_shards=args.num_shards,
        max_pixels=args.max_pixels,
        started=started,
    )
    try:
        summary = job.run(cfg, beam_args)
    except (ModelError, ScoreInputError, job.NothingScored) as e:
        print(f"lesionlens score: error: {e}", file=sys.stderr)
        return 2
    print(job.summary_line(summary))
    print(f"wrote {args.out}/predictions-*.jsonl, .parquet, rejected-*.jsonl, summary.json")
    if summary["outputs"].get("gallery"):
        print(f"gallery: {summary['outputs']['gallery']}")
    return 0
