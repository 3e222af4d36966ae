"""Runs the pipeline locally with LocalDagRunner and MLMD in sqlite.

python local_runner.py                       # demo profile on generated data
python local_runner.py --profile busi-paper --data out/busi-paper/records
"""

from __future__ import annotations

import os

from modules.keras2 import use_keras2

use_keras2()  # before anything imports TensorFlow

import argparse
import json
import logging
import sys
import time

from modules import contract as C
from pipeline.config import DEMO_DATA, PipelineConfig
from pipeline.flags import add_model_flags, config_from_flags
from pipeline.local import metadata_connection, run_pipeline

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


def classes_mismatch(cfg: PipelineConfig) -> str | None:
    """Why the records' label ids (their manifest) are not the configured classes', or
    None (names may differ: MRI's healthy / sick are benign / malignant's 0 / 1)."""
    with open(os.path.join(cfg.data_root, C.MANIFEST)) as f:
        stored = json.load(f).get("classes") or {}
    if sorted(stored.values()) == [C.LABELS[c] for c in cfg.classes]:
        return None
    return (
        f"{os.path.join(cfg.data_root, C.MANIFEST)}: the records hold classes "
        f"{', '.join(C.class_names(stored))}, the pipeline is configured for "
        f"{', '.join(cfg.classes)}; pass --classes {','.join(C.class_names(stored))} "
        "(or ingest again with the classes you want)"
    )


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
    if not os.path.exists(os.path.join(cfg.data_root, C.MANIFEST)):
        log.error(
            "%s is not an ingestion output (no %s); run `lesionlens ingest SRC OUT` first and "
            "pass --data OUT",
            cfg.data_root,
            C.MANIFEST,
        )
        return 2

    problem = classes_mismatch(cfg)
    if problem:
        log.error("%s", problem)
        return 2

    from pipeline.results import format_decision, format_metrics, latest_results

    t0 = time.time()
    run_pipeline(cfg)
    res = latest_results(metadata_connection(cfg))
    log.info("pipeline finished in %.0f s (profile %s)", time.time() - t0, args.profile)
    log.info(
        "test-split metrics at the operating threshold (95%% CI: seeded bootstrap, %d "
        "resamples):\n%s",
        cfg.interval_resamples,
        format_metrics(res["metrics"], res["intervals"]),
    )
    if res.get("calibration"):
        log.info("%s", format_decision(res))
    if res["pushed"]:
        log.info("pushed model: %s", res["pushed_destination"])
    else:
        log.warning("model NOT pushed: the Evaluator did not bless it (thresholds: config)")
    with open(os.path.join(cfg.output_root, "last_run.json"), "w") as f:
        json.dump(res, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
