"""`lesionlens reproduce [BUSI] [OUT]`: the paper's BUSI table reproduced in one command.

Stages, one progress line each: the BUSI folder and its class counts; ingest with the
paper's protocol (skipped when OUT/records already holds that ingest of the same folder);
the records and weights checked before any component runs; the `busi-paper` profile run
through local_runner.py's own code, `pipeline.local.run_and_report` (cached components
reused, so a stopped reproduction resumes); the served model timed; the table printed and
written to OUT/paper-table.md.
TensorFlow and Beam are imported inside the stages, so `--help` answers at once.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import time
from typing import Any

from pipeline.flags import add_model_flags

DEFAULT_OUT = os.path.join("out", "busi-paper")
STAGES = 5
log = logging.getLogger("lesionlens.reproduce")


def add_cli(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "reproduce",
        help="the paper's BUSI table in one command: ingest (paper protocol), run the "
        "busi-paper profile, print this run's ORACLE and deployable figures beside the paper's",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "src",
        nargs="?",
        help="the BUSI folder (Dataset_BUSI_with_GT: benign/, malignant/ with their masks); "
        "default ../shared/data/busi/Dataset_BUSI_with_GT beside the repository",
    )
    p.add_argument(
        "out",
        nargs="?",
        default=DEFAULT_OUT,
        help=f"output folder: records/, the pipeline root, serving/ (default {DEFAULT_OUT})",
    )
    add_model_flags(p, default_profile="busi-paper")
    p.set_defaults(func=_run)


def _stage(number: int, text: str) -> None:
    log.info("[%d/%d] %s", number, STAGES, text)


def _fail(message: str) -> int:
    print(f"lesionlens reproduce: error: {message}", file=sys.stderr)
    return 2


def _config(args: argparse.Namespace):
    """(BUSI folder, config) from the arguments; ReproduceError / ValueError if unusable."""
    from lesionlens.reproduce import source
    from modules import contract as C
    from pipeline.flags import config_from_flags

    if args.classes and tuple(C.class_names(args.classes)) != source.PAPER_CLASSES:
        raise source.ReproduceError(
            f"--classes {','.join(args.classes)}: the paper's table is "
            f"{', '.join(source.PAPER_CLASSES)} (its three-class figure: `lesionlens report`)"
        )
    src = os.path.abspath(source.busi_folder(args.src))
    out = os.path.abspath(args.out)
    return src, config_from_flags(args, data_root=os.path.join(out, "records"), output_root=out)


def _ingest(src: str, records: str) -> str | None:
    """Ingests `src` into `records` unless that ingest is there; why it cannot, or None."""
    from lesionlens.reproduce import source
    from pipeline.records_check import read_manifest

    try:
        if source.reusable_ingest(records, src, read_manifest(records)):
            _stage(2, f"ingest: {records} holds the paper-protocol ingest of {src}; reused")
            return None
    except source.ReproduceError as e:
        return str(e)
    from lesionlens.ingest import job, layouts
    from lesionlens.ingest import records as ingest_records

    _stage(2, f"ingest: {src} -> {records} (paper protocol: per-class random 70/15/15) ...")
    config = job.IngestConfig(
        src=src, out=records, classes=source.PAPER_CLASSES, protocol=source.PAPER_PROTOCOL
    )
    try:
        manifest = job.run(config)
    except (layouts.SourceError, job.IngestError, ingest_records.BadInput) as e:
        return str(e)
    log.info("ingested:\n%s", job.summary_table(manifest))
    return None


def _weights_problem(cfg) -> str | None:
    """Builds the classifier once, so a missing or wrong weights file (or an offline
    ImageNet download) fails now, not after Transform, SMOTE and the segmenter."""
    if cfg.weights in ("none", ""):
        return None
    import tf_keras as keras

    from modules.backbones import WeightsFileError, WeightsUnavailableError
    from modules.backbones.pretrained import PretrainedWeightsError
    from modules.backbones.torch_checkpoint import CheckpointError
    from modules.model import build_model

    refused = (
        FileNotFoundError,
        WeightsFileError,
        WeightsUnavailableError,
        PretrainedWeightsError,
        CheckpointError,
    )
    try:
        build_model(len(cfg.classes), cfg.image_size, cfg.weights, cfg.backbone)
    except refused as e:
        return str(e)
    finally:
        keras.backend.clear_session()
    return None


def _measured_seconds(cfg, res: dict):
    """The classifier's training time (its lesionlens.json) and the time per served answer."""
    import tensorflow as tf
    from tfx.utils import path_utils

    from lesionlens.report.run_variant import newest_model
    from lesionlens.reproduce.table import Seconds
    from lesionlens.reproduce.timing import oracle_and_deployable
    from modules import contract as C
    from modules.split_records import read_split

    trained = newest_model(cfg.pipeline_root, "Trainer")
    model_dir = res["pushed_destination"] or (trained and path_utils.serving_model_path(trained))
    if not model_dir:
        return Seconds()
    with tf.io.gfile.GFile(os.path.join(model_dir, C.MODEL_INFO)) as f:
        train = json.load(f).get("train_seconds")
    oracle, deployable = oracle_and_deployable(
        model_dir, read_split(os.path.join(cfg.data_root, C.TEST))
    )
    return Seconds(train, oracle, deployable)


def _machine() -> str:
    import tensorflow as tf

    gpus = len(tf.config.list_physical_devices("GPU"))
    return f"{os.cpu_count()} CPU cores" + (f", {gpus} GPU" if gpus else "")


def _run(args: argparse.Namespace) -> int:
    from lesionlens.reproduce import source

    t0 = time.time()
    try:
        src, cfg = _config(args)
    except ValueError as e:  # ReproduceError too
        return _fail(str(e))
    from pipeline.console import quiet_libraries
    from pipeline.records_check import records_problem

    _stage(
        1,
        f"BUSI folder {src}; profile {args.profile}: {cfg.backbone} (weights {cfg.weights}), "
        f"{cfg.image_size} px, ROI {'on' if cfg.roi else 'off'} (train on {cfg.train_roi.value}"
        f" masks), SMOTE {cfg.smote.value}, seed {cfg.seed}; output {cfg.output_root}",
    )
    warning = source.counts_warning(src, source.class_counts(src))
    if warning:
        log.warning("%s", warning)
    quiet_libraries()  # Beam's and TFX's progress lines ("[pipeline] X ..."), not their INFO
    problem = _ingest(src, cfg.data_root)
    if problem:
        return _fail(problem)
    _stage(3, "checks: the records' classes and split protocol, the weights ...")
    problem = records_problem(cfg) or _weights_problem(cfg)
    if problem:
        return _fail(problem)
    _stage(4, f"pipeline: profile {args.profile} (finished components are reused) ...")
    from pipeline.local import run_and_report

    res = run_and_report(cfg, args.profile)
    _stage(5, "timing the served model (batch 1, with and without masks) ...")
    from lesionlens.reproduce.table import paper_table

    seconds = _measured_seconds(cfg, res)
    table = paper_table(res, seconds, _machine())
    with open(os.path.join(cfg.output_root, "paper-table.md"), "w") as f:
        f.write(table + "\n")
    with open(os.path.join(cfg.output_root, "reproduce.json"), "w") as f:
        json.dump(
            {"src": src, "profile": args.profile, "seconds": dataclasses.asdict(seconds), **res},
            f,
            indent=2,
            default=list,
        )
    print(table, flush=True)
    log.info(
        "done in %.0f s; the table is in %s",
        time.time() - t0,
        os.path.join(cfg.output_root, "paper-table.md"),
    )
    return 0
