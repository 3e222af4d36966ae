"""A real, non-editable `pip install .` works away from the checkout: the schema and the module
code ship as package data, and ingest -> pipeline -> serve-dev -> predict run from another
directory with nothing of the repository on the path.

The install goes into a fresh target folder (`pip install --target`, a wheel built from the
checkout); its dependencies come from the test's own environment, which is what a fresh
virtualenv would install from requirements.lock.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import start_dev_server

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, dict]:
    site = tmp_path_factory.mktemp("site")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation"]
        + ["--target", str(site), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    env = {
        **os.environ,
        "PYTHONPATH": str(site),
        "TF_USE_LEGACY_KERAS": "1",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    return site, env


def run(env: dict, cwd: Path, *args: str, timeout: int = 600) -> str:
    proc = subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, (args, proc.stdout[-2000:], proc.stderr[-3000:])
    return proc.stdout


def test_installed_copy_ingests_trains_serves_and_predicts(installed, tmp_path):
    site, env = installed
    work = tmp_path / "elsewhere"
    work.mkdir()
    where = run(
        env,
        work,
        "-c",
        "import lesionlens, local_runner, modules, pipeline, schema, serving; "
        "print(schema.schema_path()); "
        "print(*(m.__file__ for m in (lesionlens, local_runner, modules, pipeline, serving)))",
    ).split()
    assert all(path.startswith(str(site)) for path in where), where
    assert Path(where[0]).is_file()  # schema.pbtxt shipped as package data

    cli = ["-m", "lesionlens.cli"]
    run(env, work, *cli, "synth", "raw", "--n", "8", "--size", "48", "--seed", "1")
    run(env, work, *cli, "ingest", "raw", "records")
    out = run(
        env,
        work,
        "-m",
        "local_runner",
        "--data",
        "records",
        "--epochs",
        "1",
        "--image-size",
        "32",
        "--output-root",
        "out",
    )
    assert "pushed model:" in out, out[-2000:]
    model_base = work / "out" / "serving" / "lesionlens"
    assert [p.name for p in model_base.iterdir() if p.name.isdigit()]

    server, seen = start_dev_server(
        [*cli, "serve-dev", "--model-dir", str(model_base), "--port", "0", "--no-rest"], env, work
    )
    try:
        target = next(line.split()[-1] for line in seen if line.startswith("gRPC:"))
        out = run(
            env,
            work,
            *cli,
            "predict",
            "--server",
            target,
            "--model",
            "lesionlens",
            "--sibling-masks",
            "--out",
            "predictions",
            "raw/malignant",
        )
        assert out.count("malignant (") == 8, out
        overlays = sorted((work / "predictions").glob("*_gradcam.png"))
        assert len(overlays) == 8
    finally:
        server.terminate()
        server.wait(timeout=60)
