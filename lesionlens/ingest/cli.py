"""`lesionlens ingest` command line."""

from __future__ import annotations

import argparse
import sys
import time

from modules import contract as C


def _fractions(text: str) -> tuple[float, float, float]:
    parts = [float(x) for x in text.split(",")]
    if len(parts) != 3 or any(p < 0 for p in parts) or sum(parts) <= 0:
        raise argparse.ArgumentTypeError(f"--split needs three non-negative numbers, got {text!r}")
    total = sum(parts)
    return tuple(p / total for p in parts)  # type: ignore[return-value]


def add_cli(subparsers) -> None:
    p = subparsers.add_parser(
        "ingest",
        help="turn a BUSI / MRI image folder into split TFRecords of raw tf.Examples (Beam job)",
        description="Extra arguments are passed to Beam as pipeline options "
        "(e.g. --runner DataflowRunner --project P --region R --temp_location gs://...).",
    )
    p.add_argument("src", help="dataset folder (e.g. Dataset_BUSI_with_GT)")
    p.add_argument("out", help="output folder: OUT/{train,eval,test}/*.tfrecord.gz + manifest.json")
    p.add_argument("--layout", choices=["busi", "mri", "auto"], default="auto")
    p.add_argument(
        "--classes",
        type=C.parse_classes,
        help="comma-separated class folders to keep "
        "(default busi: benign,malignant; mri: healthy,sick)",
    )
    p.add_argument(
        "--split",
        type=_fractions,
        default=(0.70, 0.15, 0.15),
        help="train,eval,test fractions (default 70,15,15)",
    )
    p.add_argument("--seed", type=int, default=42)
    p.add_argument(
        "--protocol",
        choices=["grouped", "paper"],
        default="grouped",
        help="grouped: near-duplicates never span splits (default); "
        "paper: the paper's per-class random split",
    )
    p.add_argument(
        "--max-distance",
        type=int,
        default=6,
        help="perceptual-hash Hamming distance for near-duplicates (default 6 of 64 bits)",
    )
    p.add_argument(
        "--drop-conflicts",
        action="store_true",
        help="exclude near-duplicate groups whose members carry different labels",
    )
    p.add_argument("--dataset", help="value of the `dataset` feature (default from the layout)")
    p.add_argument(
        "--max-pixels",
        type=int,
        default=C.DEFAULT_MAX_IMAGE_PIXELS,
        help="skip images above this many pixels, read from the header before decoding "
        f"(default {C.DEFAULT_MAX_IMAGE_PIXELS}; the model's graph applies the same budget)",
    )
    p.set_defaults(func=_run, accepts_extra=True)


def _run(args, extra: list[str]) -> int:
    started = time.time()  # the manifest's wall time counts the imports below too
    # Beam (2 s) and TensorFlow load only here, so `--help` and argument errors answer at once.
    from lesionlens.ingest import job, layouts, records

    cfg = job.IngestConfig(
        src=args.src,
        out=args.out,
        layout=args.layout,
        classes=args.classes,
        fractions=args.split,
        seed=args.seed,
        protocol=args.protocol,
        max_distance=args.max_distance,
        drop_conflicts=args.drop_conflicts,
        dataset=args.dataset,
        max_pixels=args.max_pixels,
        started=started,
    )
    try:
        manifest = job.run(cfg, extra)
    except (layouts.SourceError, job.IngestError, records.BadInput) as e:
        print(f"lesionlens ingest: error: {e}", file=sys.stderr)
        return 2
    print(job.summary_table(manifest))
    print(f"wrote {args.out}/{{train,eval,test}}/ and {args.out}/manifest.json")
    return 0
