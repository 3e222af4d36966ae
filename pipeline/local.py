"""The pipeline run on this machine: LocalDagRunner, MLMD in sqlite under the output root,
the config's Beam options. local_runner.py (the command), the report's variants
(lesionlens/report/run_variant.py) and the benches run the pipeline through here."""

from __future__ import annotations

import os

from pipeline.config import PipelineConfig


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
