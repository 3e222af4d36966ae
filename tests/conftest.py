"""Shared fixtures: the real BUSI folder (skipped when absent) and a TFRecord reader."""

import os

# tensorflow-transform needs Keras 2: set before anything imports TensorFlow.
os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"

import glob  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from modules import contract as C  # noqa: E402


@pytest.fixture(scope="session")
def busi_dir() -> Path:
    path = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "busi"
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
def demo_pipeline(tmp_path_factory):
    """Runs the whole TFX pipeline once on tiny synthetic data (64 px, 1 epoch, random init).

    Returns (config, pushed model dir, records dir). Shared by the pipeline, export and
    Grad-CAM tests because a run costs about a minute.
    """
    from lesionlens import synth
    from lesionlens.ingest import job
    from local_runner import metadata_connection, run_pipeline
    from pipeline.config import profile
    from pipeline.results import latest_results

    root = tmp_path_factory.mktemp("pipeline")
    synth.generate(root / "raw", layout="busi", n=12, size=64, seed=3)
    records = root / "records"
    job.run(job.IngestConfig(src=str(root / "raw"), out=str(records)))
    cfg = profile(
        "demo", data_root=str(records), output_root=str(root / "out"), image_size=64, epochs=1
    )
    run_pipeline(cfg)
    res = latest_results(metadata_connection(cfg))
    assert res["pushed"], res
    return cfg, res["pushed_destination"], records


def read_raw_examples(records, split: str = "test") -> list[bytes]:
    import tensorflow as tf

    files = sorted(glob.glob(os.path.join(str(records), split, C.SHARD_GLOB)))
    return [r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP")]


def start_dev_server(argv: list[str], env: dict, cwd) -> tuple[object, list[str]]:
    """Starts a dev server process; returns it with the lines it printed up to 'Press Ctrl-C'
    (TF import and model load may take minutes on a busy 2-core machine: one 300 s deadline)."""
    import queue
    import subprocess
    import sys
    import threading
    import time

    proc = subprocess.Popen(
        [sys.executable, *argv],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
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


def bomb_png(width: int = 20000, height: int = 20000) -> bytes:
    """A valid PNG of width x height black pixels (1-bit grey) in a few dozen KB: what a
    decompression bomb looks like (decoded as RGB: width x height x 3 bytes)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    z = zlib.compressobj(9)
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed bits
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def bomb_jpeg(width: int = 20000, height: int = 20000) -> bytes:
    """A small JPEG whose frame header (SOF0) claims width x height: a decoder that trusts it
    allocates the whole frame before it finds the data missing."""
    import io
    import struct

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (90, 90, 90)).save(buf, format="JPEG")
    data = bytearray(buf.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)
