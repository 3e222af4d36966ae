"""A real, non-editable `pip install .` works away from the checkout: the schema and the module
code ship as package data, and ingest -> pipeline -> serve-dev -> predict run from another
directory with nothing of the repository on the path. The pipeline run is also the crash
test: SIGKILLed during Transform, then during the Trainer, then run to the end.

The install goes into a fresh target folder (`pip install --target`, a wheel built from the
checkout); its dependencies come from the test's own environment, which is what a fresh
virtualenv would install from requirements.lock.
"""

import os
import signal
import subprocess
import sys
import time
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


def kill_when(env: dict, cwd: Path, args: list[str], line: str, after_s: float) -> None:
    """Runs a command until it prints `line`, waits `after_s`, then SIGKILLs it."""
    proc = subprocess.Popen(
        [sys.executable, *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        seen = []
        for got in proc.stdout:
            seen.append(got)
            if got.strip() == line:
                time.sleep(after_s)
                break
        assert proc.poll() is None, ("finished before it could be killed", seen[-20:])
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL


def assert_consistent_after_kills(sqlite_path: Path) -> None:
    """Killed executions stay unfinished and nothing consumed their outputs; the last run
    reused what had finished (cache) and ran the rest."""
    from ml_metadata import metadata_store
    from ml_metadata.proto import metadata_store_pb2

    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = str(sqlite_path)
    store = metadata_store.MetadataStore(config)
    types = {t.id: t.name.rsplit(".", 1)[-1] for t in store.get_execution_types()}
    states: dict[str, list[int]] = {}
    for e in sorted(store.get_executions(), key=lambda e: e.id):
        states.setdefault(types[e.type_id], []).append(e.last_known_state)
    done = {metadata_store_pb2.Execution.COMPLETE, metadata_store_pb2.Execution.CACHED}
    for name in ("Transform", "Trainer"):  # each killed once, then completed
        assert states[name][0] not in done and states[name][-1] in done, (name, states[name])
    cached = metadata_store_pb2.Execution.CACHED
    assert states["Transform"][-1] == cached and states["StatisticsGen"][-1] == cached
    assert states["Trainer"][-1] == metadata_store_pb2.Execution.COMPLETE
    unfinished = {e.id for e in store.get_executions() if e.last_known_state not in done}
    for event in store.get_events_by_execution_ids(list(unfinished)):
        if event.type == metadata_store_pb2.Event.OUTPUT:
            users = store.get_events_by_artifact_ids([event.artifact_id])
            assert all(u.type != metadata_store_pb2.Event.INPUT for u in users), event


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
    runner = ["-m", "local_runner", "--data", "records", "--epochs", "1", "--image-size", "32"]
    runner += ["--output-root", "out"]
    kill_when(env, work, runner, "[pipeline] Transform ...", after_s=1.0)
    kill_when(env, work, runner, "[pipeline] Trainer ...", after_s=8.0)
    model_base = work / "out" / "serving" / "lesionlens"
    assert not model_base.exists() or not os.listdir(model_base)  # nothing pushed yet
    out = run(env, work, *runner)
    assert "pushed model:" in out, out[-2000:]
    assert_consistent_after_kills(work / "out" / "tfx" / "metadata.sqlite")
    [version] = os.listdir(model_base)  # one complete version, no partial or staging folder
    assert version.isdigit() and (model_base / version / "saved_model.pb").is_file()

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
