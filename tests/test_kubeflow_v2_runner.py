"""kubeflow_v2_runner.py compiles the pipeline offline: the Vertex AI / Kubeflow V2 job JSON
names every component, runs each in the pipeline image, hands the Dataflow options to the
Beam components, and names no file of the compiling machine. The Dockerfile agrees with it."""

import json
import re
import socket
import sys

import apache_beam
import pytest
from conftest import ROOT
from tfx.utils import import_utils

import kubeflow_v2_runner as runner

IMAGE = "europe-west4-docker.pkg.dev/proj-1/lesionlens/pipeline:abc123"
ARGV = [
    "--profile=demo",
    "--project=proj-1",
    "--region=europe-west4",
    f"--image={IMAGE}",
    "--pipeline-root=gs://bucket-1/lesionlens",
    "--data-root=gs://bucket-1/busi/records",
]
DATAFLOW = [
    "--runner=DataflowRunner",
    "--project=proj-1",
    "--region=europe-west4",
    "--temp_location=gs://bucket-1/lesionlens/tmp",
    f"--sdk_container_image={IMAGE}",
]
BEAM_COMPONENTS = ["ImportExampleGen", "StatisticsGen", "Transform", "Evaluator"]


@pytest.fixture
def no_network(monkeypatch):
    """Compiling must not reach any cloud service: every connection attempt fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network call during compilation: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture
def compiled(tmp_path, no_network):
    out = tmp_path / "job.json"
    assert runner.main([*ARGV, f"--output={out}"]) == 0
    pipeline = runner.build_pipeline(runner.parse_args(ARGV))
    return json.loads(out.read_text()), pipeline


def test_job_names_every_component_in_the_image_with_dataflow(compiled):
    job, pipeline = compiled
    spec = job["pipelineSpec"]
    tasks = spec["root"]["dag"]["tasks"]
    executors = spec["deploymentSpec"]["executors"]
    ids = [c.id for c in pipeline.components]
    assert "Trainer" in ids and "segmenter_trainer" in ids and "Pusher" in ids
    for cid in ids:  # the Resolver compiles to one task per resolved channel: "<id>-..."
        assert cid in tasks or any(t.startswith(cid + "-") for t in tasks), cid
    assert job["runtimeConfig"]["gcsOutputDirectory"] == "gs://bucket-1/lesionlens/tfx/lesionlens"

    containers = {name: e["container"] for name, e in executors.items() if "container" in e}
    assert set(containers) == {f"{cid}_executor" for cid in ids if cid in tasks}
    for name, c in containers.items():
        assert c["image"] == IMAGE, name
        assert (
            c["command"][-1] == "tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor"
        )
        # The image must be able to import what each task runs (the image holds this package).
        assert import_utils.import_class_by_path(
            c["args"][c["args"].index("--executor_class_path") + 1]
        )
    for cid in BEAM_COMPONENTS:
        args = containers[f"{cid}_executor"]["args"]
        assert all(a in args for a in DATAFLOW), (cid, args)


def test_job_names_no_file_of_this_machine(compiled):
    job, _ = compiled
    text = json.dumps(job)
    assert str(ROOT) not in text
    schema = job["pipelineSpec"]["root"]["dag"]["tasks"]["ImportSchemaGen"]["inputs"]
    assert schema["parameters"]["schema_file"]["runtimeValue"]["constantValue"] == {
        "stringValue": runner.IMAGE_SCHEMA_FILE
    }
    assert "gs://bucket-1/busi/records" in text and "gs://bucket-1/lesionlens/serving/" in text


def test_direct_beam_and_extra_args():
    args = runner.parse_args([*ARGV, "--beam-runner=direct", "--beam-arg=--foo=1"])
    cfg = runner.pipeline_config(args)
    assert runner.beam_args(args, cfg) == [*cfg.beam_args, "--foo=1"]
    args = runner.parse_args([*ARGV, "--temp-location=gs://t/x", "--beam-arg=--max_num_workers=4"])
    got = runner.beam_args(args, runner.pipeline_config(args))
    assert "--temp_location=gs://t/x" in got and got[-1] == "--max_num_workers=4"


@pytest.mark.parametrize(
    "change, message",
    [
        (  # a local path: no container sees it
            {"--data-root": "out/busi/records"},
            "error: --data-root must be a gs:// path (the containers cannot see this "
            "machine's files), got 'out/busi/records'",
        ),
        (
            {"--pipeline-root": "/tmp/x"},
            "error: --pipeline-root must be a gs:// path (the containers cannot see this "
            "machine's files), got '/tmp/x'",
        ),
        ({"--image": ""}, "error: missing --image (or $LESIONLENS_IMAGE)"),
        (
            {"--weights": "gs://bucket-1/efficientnetv2-b0_notop.h5"},
            "error: --weights: the Trainer reads a weights file from the image's filesystem; "
            "COPY it into the image and pass that path there, or use imagenet / none",
        ),
    ],
)
def test_refuses_what_cannot_run_on_vertex(change, message, monkeypatch, capsys):
    for name in runner.REQUIRED:
        monkeypatch.delenv(runner._env_name(name), raising=False)
    argv = [a for a in ARGV if a.split("=")[0] not in change]
    argv += [f"{k}={v}" for k, v in change.items()]
    with pytest.raises(SystemExit) as exit_:
        runner.parse_args(argv)
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith(message)


def test_flags_fall_back_to_environment(monkeypatch):
    monkeypatch.setenv("LESIONLENS_PROJECT", "env-proj")
    monkeypatch.setenv("LESIONLENS_IMAGE", "img:1")
    args = runner.parse_args([a for a in ARGV if not a.startswith(("--project", "--image"))])
    assert (args.project, args.image) == ("env-proj", "img:1")


def test_dockerfile_matches_runner_and_stack():
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(rf"^WORKDIR {runner.IMAGE_ROOT}$", text, re.M)
    assert "pip install -c requirements.lock ." in text
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert f"ARG PYTHON_IMAGE=python:{py}-" in text
    # Dataflow: the workers' Beam and Python are the launching task's.
    assert f"ARG BEAM_SDK_IMAGE=apache/beam_python{py}_sdk:{apache_beam.__version__}" in text
    assert 'ENTRYPOINT ["/opt/apache/beam/boot"]' in text
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    needed = {"schema", "setup.py", "requirements.lock", "modules", "pipeline", "lesionlens"}
    assert not ignored & needed
