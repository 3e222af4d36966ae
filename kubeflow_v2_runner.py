"""Compiles the pipeline to a Vertex AI Pipelines / Kubeflow Pipelines V2 job (JSON) with
KubeflowV2DagRunner. It only writes the file: nothing is built, uploaded or submitted (see
README, "Vertex AI Pipelines / Kubeflow").

python kubeflow_v2_runner.py --profile busi-paper --project P --region europe-west4 \\
    --image europe-west4-docker.pkg.dev/P/lesionlens/pipeline:TAG \\
    --pipeline-root gs://BUCKET/lesionlens --data-root gs://BUCKET/busi-paper/records

Every component runs in --image (the Dockerfile beside this file, built from this checkout);
the Beam-based ones (ImportExampleGen, StatisticsGen, Transform, Evaluator) start Dataflow
jobs whose workers run the same image. Vertex AI keeps the ML metadata itself, so no
connection config is passed. --project, --region, --image, --pipeline-root and --data-root
fall back to LESIONLENS_PROJECT, LESIONLENS_REGION, LESIONLENS_IMAGE,
LESIONLENS_PIPELINE_ROOT and LESIONLENS_DATA_ROOT.
"""

from __future__ import annotations

import os

from modules.keras2 import use_keras2

use_keras2()  # before anything imports TensorFlow

import argparse
import sys

from pipeline.config import PipelineConfig
from pipeline.flags import add_model_flags, config_from_flags

# Where the Dockerfile puts this checkout (WORKDIR); create_pipeline would otherwise name
# the schema's path on the compiling machine, which no container has.
IMAGE_ROOT = "/pipeline"
IMAGE_SCHEMA_FILE = f"{IMAGE_ROOT}/schema/schema.pbtxt"
DEFAULT_OUTPUT = "lesionlens_pipeline.json"


# Required; each falls back to LESIONLENS_<FLAG> in the environment.
REQUIRED = {
    "project": "Google Cloud project of the Dataflow jobs",
    "region": "Dataflow region, e.g. europe-west4 (the pipeline job's region)",
    "image": "pipeline image URI (Dockerfile), for Vertex AI tasks and Dataflow workers",
    "pipeline-root": "gs:// root of all the pipeline writes: artifacts under "
    "<root>/tfx/<pipeline name>, pushed models under <root>/serving",
    "data-root": "gs:// ingestion output (OUT of `lesionlens ingest`)",
}


def _env_name(flag: str) -> str:
    return "LESIONLENS_" + flag.upper().replace("-", "_")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    for flag, help_text in REQUIRED.items():
        p.add_argument(f"--{flag}", default=os.environ.get(_env_name(flag)), help=help_text)
    p.add_argument("--temp-location", help="gs:// Dataflow temp folder (default <root>/tmp)")
    p.add_argument(
        "--beam-runner",
        choices=["dataflow", "direct"],
        default="dataflow",
        help="direct: the Beam components run inside their Vertex AI task (small data)",
    )
    p.add_argument(
        "--beam-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="one more Beam pipeline option, e.g. --beam-arg=--max_num_workers=4 (repeatable)",
    )
    p.add_argument("--schema-file", default=IMAGE_SCHEMA_FILE, help="schema path in the image")
    p.add_argument("--display-name", help="Vertex AI display name (default: pipeline name)")
    p.add_argument("--output", default=DEFAULT_OUTPUT, help="where to write the job JSON")
    add_model_flags(p, default_profile=None)
    args = p.parse_args(argv)
    missing = [f for f in REQUIRED if not getattr(args, f.replace("-", "_"))]
    if missing:
        p.error("missing " + ", ".join(f"--{f} (or ${_env_name(f)})" for f in missing))
    for flag in ("pipeline_root", "data_root", "temp_location"):
        value = getattr(args, flag)
        if value and not value.startswith("gs://"):
            p.error(
                f"--{flag.replace('_', '-')} must be a gs:// path (the containers cannot see "
                f"this machine's files), got {value!r}"
            )
    if args.weights and "://" in args.weights:
        p.error(
            "--weights: the Trainer reads a weights file from the image's filesystem; "
            "COPY it into the image and pass that path there, or use imagenet / none"
        )
    return args


def pipeline_config(args: argparse.Namespace) -> PipelineConfig:
    return config_from_flags(
        args, data_root=args.data_root.rstrip("/"), output_root=args.pipeline_root.rstrip("/")
    )


def beam_args(args: argparse.Namespace, cfg: PipelineConfig) -> list[str]:
    """Dataflow, its workers in the pipeline image (Beam adds Runner v2, which custom
    containers need); or the config's DirectRunner options inside each task."""
    if args.beam_runner == "direct":
        return [*cfg.beam_args, *args.beam_arg]
    return [
        "--runner=DataflowRunner",
        f"--project={args.project}",
        f"--region={args.region}",
        f"--temp_location={args.temp_location or cfg.output_root + '/tmp'}",
        f"--sdk_container_image={args.image}",
        *args.beam_arg,
    ]


def build_pipeline(args: argparse.Namespace):
    from pipeline.pipeline import create_pipeline

    cfg = pipeline_config(args)
    return create_pipeline(
        cfg,
        metadata_connection_config=None,
        beam_pipeline_args=beam_args(args, cfg),
        schema_file=args.schema_file,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from tfx.orchestration.kubeflow.v2 import kubeflow_v2_dag_runner as kfv2

    output = os.path.abspath(args.output)
    runner = kfv2.KubeflowV2DagRunner(
        config=kfv2.KubeflowV2DagRunnerConfig(
            display_name=args.display_name, default_image=args.image
        ),
        output_dir=os.path.dirname(output),
        output_filename=os.path.basename(output),
    )
    runner.run(build_pipeline(args))
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
