"""The pipeline run on this machine: LocalDagRunner, MLMD in sqlite under the output root,
the config's Beam options. local_runner.py (the command), `lesionlens reproduce`, the
report's variants (lesionlens/report/run_variant.py) and the benches run the pipeline
through here."""

from __future__ import annotations

import json
import logging
import os
import time

from pipeline.config import PipelineConfig

log = logging.getLogger("lesionlens")  # local_runner's lines: `[lesionlens] ...`


def metadata_connection(cfg: PipelineConfig):
    """MLMD in sqlite under the output root: the local run's choice, not the pipeline's."""
    from tfx import v1 as tfx

    path = os.path.join(cfg.output_root, "tfx", "metadata.sqlite")
    return tfx.orchestration.metadata.sqlite_metadata_connection_config(path)


def run_pipeline(cfg: PipelineConfig) -> None:
    """One LocalDagRunner run of the pipeline with this store and the config's Beam options."""
    from tfx import v1 as tfx

    from pipeline.pipeline import create_pipeline

    pipeline = create_pipeline(
        cfg,
        metadata_connection_config=metadata_connection(cfg),
        beam_pipeline_args=list(cfg.beam_args),
    )
    tfx.orchestration.LocalDagRunner().run(pipeline)


def run_and_report(cfg: PipelineConfig, profile_name: str) -> dict:
    """Runs the pipeline (cached components are reused, so a stopped run resumes), logs the
    test-split summary and writes it to `<output_root>/last_run.json`; returns the results
    (`pipeline.results.latest_results`). local_runner.py and `lesionlens reproduce` run it."""
    from pipeline.results import format_decision, format_metrics, latest_results

    t0 = time.time()
    run_pipeline(cfg)
    res = latest_results(metadata_connection(cfg))
    log.info("pipeline finished in %.0f s (profile %s)", time.time() - t0, profile_name)
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
    return res
