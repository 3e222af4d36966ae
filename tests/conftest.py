"""Shared fixtures: the real BUSI folder (skipped when absent), a TFRecord reader, the checkout
installed as a package, the pipeline run from that install (killed twice, then completed),
and helpers to run and stop its commands."""

import os

from modules.keras2 import use_keras2

use_keras2()  # before anything imports TensorFlow

import contextlib
import glob
import queue
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from bombs import bomb_jpeg, bomb_png  # noqa: F401 - shared with the tests

from modules import contract as C

ROOT = Path(__file__).resolve().parents[1]

# Marked by the fixtures a test uses (both deselected by `make test-fast`): `pipeline` runs
# the pipeline or the installed package, `slow` reads the real BUSI folder.
PIPELINE_FIXTURES = {"installed", "demo_pipeline", "three_class_run"}
SLOW_FIXTURES = {"busi_dir"}


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects
def pytest_collection_modifyitems(items) -> None:
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        if PIPELINE_FIXTURES & used:
            item.add_marker(pytest.mark.pipeline)
        if SLOW_FIXTURES & used:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def busi_dir() -> Path:
    path = ROOT / ".." / "shared" / "data" / "busi"
    path = path / "Dataset_BUSI_with_GT"
    if not path.is_dir():
        pytest.skip(f"real BUSI data not available at {path}")
    return path


def _read_examples(out_dir) -> dict[str, dict]:
    """Reads every split of an ingest output: image_id -> {"split", <feature>: value}.

    Also checks the raw-example contract on every record: exactly the 7 features, each with
    its type and exactly one value. Bytes features come back as bytes, `label` as int.
    """
    import tensorflow as tf

    rows: dict[str, dict] = {}
    for split in C.SPLITS:
        files = sorted(glob.glob(os.path.join(str(out_dir), split, C.SHARD_GLOB)))
        assert files, f"no TFRecord shards for split {split} in {out_dir}"
        for raw in tf.data.TFRecordDataset(files, compression_type="GZIP"):
            ex = tf.train.Example.FromString(raw.numpy())
            feats = ex.features.feature
            assert set(feats) == set(C.RAW_FEATURES), sorted(feats)
            row: dict = {"split": split}
            for name, kind in C.RAW_FEATURES.items():
                assert feats[name].WhichOneof("kind") == kind, (name, feats[name])
                values = getattr(feats[name], kind).value
                assert len(values) == 1, (name, len(values))
                row[name] = values[0]
            image_id = row[C.IMAGE_ID].decode()
            assert image_id not in rows, f"{image_id} written twice"
            rows[image_id] = row
    return rows


@pytest.fixture(scope="session")
def read_examples():
    """The TFRecord reader above, as a fixture: ``read_examples(out_dir)``."""
    return _read_examples


@pytest.fixture(scope="session")
def installed(tmp_path_factory) -> tuple[Path, dict]:
    """The checkout installed as users install it: a wheel (`pip install .`, not editable) in
    a fresh folder; the environment to run it with, nothing of the checkout on the path."""
    site = tmp_path_factory.mktemp("site")
    shutil.rmtree(ROOT / "build", ignore_errors=True)  # setuptools' leftovers of older trees
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


def spawn_python(args: list[str], env: dict, cwd) -> subprocess.Popen:
    """`python ARGS` in the background, its stdout readable line by line."""
    return subprocess.Popen(
        [sys.executable, *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def run_python(env: dict, cwd, *args: str, timeout: int = 600) -> str:
    """`python ARGS` in `cwd`; asserts it succeeds and returns its stdout."""
    proc = subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, (args, proc.stdout[-2000:], proc.stderr[-3000:])
    return proc.stdout


def kill_when(env: dict, cwd, args: list[str], line: str, after_s: float) -> None:
    """Runs `python ARGS` until it prints `line`, waits `after_s`, then SIGKILLs it."""
    proc = spawn_python(args, env, cwd)
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


DEMO_RUN = ["-m", "local_runner", "--data", "records", "--output-root", "out"]
DEMO_RUN += ["--image-size", "64", "--epochs", "1", "--segmenter-epochs", "100"]


@pytest.fixture(scope="session")
def demo_pipeline(installed, tmp_path_factory):
    """The whole pipeline on tiny synthetic data (64 px, 1 epoch, random init), run as a user
    runs it: from the installed package, in a folder away from the checkout. It is also the
    crash test: SIGKILLed during Transform, then during the Trainer, then run to the end
    (tests/test_installed_package.py checks what that left behind).

    Returns (config, pushed model dir, records dir); the generated images are in
    records/../raw. Shared by the pipeline, export, serving and Grad-CAM tests (a run costs
    about two minutes).
    """
    from pipeline.config import profile
    from pipeline.local import metadata_connection
    from pipeline.results import latest_results

    _, env = installed
    root = tmp_path_factory.mktemp("pipeline")
    cli = ["-m", "lesionlens.cli"]
    run_python(env, root, *cli, "synth", "raw", "--n", "12", "--size", "64", "--seed", "3")
    run_python(env, root, *cli, "ingest", "raw", "records")
    kill_when(env, root, DEMO_RUN, "[pipeline] Transform ...", after_s=1.0)
    kill_when(env, root, DEMO_RUN, "[pipeline] Trainer ...", after_s=2.0)
    out = run_python(env, root, *DEMO_RUN)
    assert "pushed model:" in out, out[-2000:]
    records = root / "records"
    cfg = profile(
        "demo", data_root=str(records), output_root=str(root / "out"), image_size=64, epochs=1
    )
    res = latest_results(metadata_connection(cfg))
    assert res["pushed"], res
    return cfg, res["pushed_destination"], records


THREE_CLASSES = "benign,malignant,normal"
THREE_CLASS_RUN = [
    "-m",
    "local_runner",
    "--data",
    "records",
    "--output-root",
    "out",
    "--image-size",
    "64",
]
THREE_CLASS_RUN += ["--epochs", "2", "--segmenter-epochs", "30", "--classes", THREE_CLASSES]


@pytest.fixture(scope="session", autouse=True)
def _three_class_run_started(request, tmp_path_factory):
    """Starts the three-class pipeline (about 150 s alone) in the background as the session
    starts, so it overlaps the tests before the first one that needs it; only when a
    collected test uses `three_class_run`."""
    if not any("three_class_run" in item.fixturenames for item in request.session.items):
        yield None
        return
    _, env = request.getfixturevalue("installed")
    root = tmp_path_factory.mktemp("three_classes")
    cli = [sys.executable, "-m", "lesionlens.cli"]
    steps = [
        [*cli, "synth", "raw", "--n", "12", "--size", "64", "--seed", "5"],
        [*cli, "ingest", "raw", "records", "--classes", THREE_CLASSES],
        [sys.executable, *THREE_CLASS_RUN],
    ]
    with open(root / "run.log", "w") as log:
        proc = subprocess.Popen(
            ["bash", "-c", " && ".join(shlex.join(s) for s in steps)],
            cwd=root,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    yield root, proc
    if proc.poll() is None:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="session")
def three_class_run(_three_class_run_started):
    """The paper's three-class setting on generated data (tests/test_three_classes.py,
    tests/test_report.py): (config, results, the run's output, its folder)."""
    from pipeline.config import profile
    from pipeline.local import metadata_connection
    from pipeline.results import latest_results

    root, proc = _three_class_run_started
    returncode = proc.wait(timeout=900)
    out = (root / "run.log").read_text()
    assert returncode == 0, out[-3000:]
    cfg = profile(
        "demo",
        data_root=str(root / "records"),
        output_root=str(root / "out"),
        image_size=64,
        classes=tuple(THREE_CLASSES.split(",")),
    )
    res = latest_results(metadata_connection(cfg))
    assert res["pushed"], out[-3000:]
    return cfg, res, out, root


def read_raw_examples(records, split: str = "test") -> list[bytes]:
    import tensorflow as tf

    files = sorted(glob.glob(os.path.join(str(records), split, C.SHARD_GLOB)))
    return [r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP")]


def start_dev_server(argv: list[str], env: dict, cwd) -> tuple[object, list[str]]:
    """Starts a dev server process; returns it with the lines it printed up to 'Press Ctrl-C'
    (TF import and model load may take minutes on a busy 2-core machine: one 300 s deadline)."""
    proc = spawn_python(argv, env, cwd)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True).start()
    seen: list[str] = []
    deadline = time.monotonic() + 300
    try:
        while not seen or not seen[-1].startswith("Press Ctrl-C"):
            seen.append(lines.get(timeout=max(1.0, deadline - time.monotonic())).strip())
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc, seen


def _status_mb(field: str) -> float:
    """A memory line of /proc/self/status (VmRSS, VmHWM: kB there), in MB."""
    with open("/proc/self/status") as f:
        line = next(x for x in f if x.startswith(f"{field}:"))
    return int(line.split()[1]) / 1024


@contextlib.contextmanager
def peak_rss_growth() -> Iterator[Callable[[], float]]:
    """How far this process's resident memory peaks above its level at the start of the
    block, in MB: `with peak_rss_growth() as growth: ...; assert growth() < N`. The kernel's
    high-water mark (VmHWM) is reset first (writing 5 to /proc/self/clear_refs), so a higher
    peak of an earlier test cannot hide this block's."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    start = _status_mb("VmRSS")
    assert _status_mb("VmHWM") <= start + 64, "the high-water mark was not reset"
    yield lambda: _status_mb("VmHWM") - start
