"""Runs the pipeline locally with LocalDagRunner and MLMD in sqlite.

python local_runner.py                       # demo profile on generated data
python local_runner.py --profile busi-paper --data out/busi-paper/records
"""

from __future__ import annotations

import os

from modules.keras2 import use_keras2

use_keras2()  # before anything imports TensorFlow

import argparse
import logging
import sys

from modules import contract as C
from pipeline.config import DEMO_DATA, PipelineConfig
from pipeline.flags import add_model_flags, config_from_flags
from pipeline.local import run_and_report
from pipeline.records_check import records_problem

DEMO_RAW = os.path.join("demo_data", "busi")
log = logging.getLogger("lesionlens")


def ensure_demo_data(records: str) -> None:
    """Generates and ingests the synthetic demo set once (deterministic, seed 0)."""
    if os.path.exists(os.path.join(records, C.MANIFEST)):
        return
    from lesionlens import synth
    from lesionlens.ingest import job

    log.info("generating synthetic BUSI-layout data in %s", DEMO_RAW)
    synth.generate(DEMO_RAW, layout="busi", **DEMO_DATA)
    manifest = job.run(job.IngestConfig(src=DEMO_RAW, out=records))
    log.info("ingested %s:\n%s", records, job.summary_table(manifest))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--data", help="ingestion output folder (OUT of `lesionlens ingest`)")
    p.add_argument("--output-root", help="pipeline root, MLMD and serving folder (default ./out)")
    add_model_flags(p, default_profile="demo")
    p.add_argument("--verbose", action="store_true", help="show every TFX / Beam / TF log line")
    return p.parse_args(argv)


def pipeline_config(args: argparse.Namespace) -> PipelineConfig:
    """Relative --data / --output-root: from the working directory."""
    return config_from_flags(args, data_root=args.data, output_root=args.output_root)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = pipeline_config(args)
    from pipeline.console import log_to_console, quiet_libraries

    log_to_console()
    if not args.verbose:
        quiet_libraries()
    if args.profile == "demo" and not args.data:
        ensure_demo_data(cfg.data_root)
    problem = records_problem(cfg)  # before any component runs
    if problem:
        log.error("%s", problem)
        return 2
    run_and_report(cfg, args.profile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
