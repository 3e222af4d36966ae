"""Where scores go: prediction rows as JSONL + Parquet shards, rejected inputs as JSONL, and
one Grad-CAM overlay PNG per image; shards are written by lesionlens.beam_files (the same
files on every runner, DaskRunner included)."""

from __future__ import annotations

import hashlib
import io
import json
import re

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from lesionlens.beam_files import WriteGroups, read_jsonl, shard_of, write_bytes

PREDICTIONS, REJECTED = "predictions", "rejected"
AUDIT, AUDIT_FILE = "audit", "audit.jsonl"  # per-image audit lines (serving/audit.py)
OVERLAYS = "overlays"
THUMBS, INDEX = "thumbs", "index.html"  # the gallery of `--overlays` (lesionlens.score.gallery)
ROW_KEY = {
    PREDICTIONS: "image_id",
    REJECTED: "path",
    AUDIT: "path",
}  # shards and sorts each kind's rows

PARQUET_SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),
        ("path", pa.string()),
        ("label", pa.string()),
        ("probabilities", pa.list_(pa.float32())),
        ("class_id", pa.int64()),
        ("class_name", pa.string()),
        ("threshold", pa.float32()),
        ("positive_probability", pa.float32()),
        ("roi_source", pa.string()),
        ("gradcam_overlay", pa.string()),
    ]
)


def shard_path(out: str, kind: str, shard: int, suffix: str) -> str:
    return FileSystems.join(out, f"{kind}-{shard:05d}{suffix}")


def _shard_writer(out: str, kind: str):
    key = ROW_KEY[kind]

    def write(shard: int, rows: list[dict]) -> dict:
        rows = sorted(rows, key=lambda r: r[key])
        lines = "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows)
        write_bytes(shard_path(out, kind, shard, ".jsonl"), lines.encode("utf-8"))
        if kind == PREDICTIONS:
            buf = io.BytesIO()
            pq.write_table(pa.Table.from_pylist(rows, schema=PARQUET_SCHEMA), buf)
            write_bytes(shard_path(out, kind, shard, ".parquet"), buf.getvalue())
        return {"kind": kind, "shard": shard, "rows": len(rows)}

    return write


class WriteShards(beam.PTransform):
    """Rows -> `num_shards` files, a row's shard fixed by its image id (or path)."""

    def __init__(self, out: str, kind: str, num_shards: int) -> None:
        super().__init__()
        self.out, self.kind, self.num_shards = out, kind, num_shards

    def expand(self, rows):
        key, n = ROW_KEY[self.kind], self.num_shards
        return (
            rows
            | "ByShard" >> beam.Map(lambda r: (shard_of(r[key], n), r))
            | "Write" >> WriteGroups(_shard_writer(self.out, self.kind))
        )


_UNSAFE = re.compile(r"[^A-Za-z0-9._()/ -]+")
HASH_MARK = "~"  # never in a name kept as it is (`_UNSAFE` replaces it), so no clash with one
HASH_HEX = 12  # 48 bits: among 100,000 renamed inputs a clash has a chance of about 2e-5


def overlay_stem(image_id: str) -> str:
    """The OUT/overlays-relative stem of an image's overlay: distinct for distinct ids.

    An id that is a safe relative path ending in `.png` keeps its folders and name, less the
    extension (`benign/benign (1).png` -> `benign/benign (1)`); any other id (unsafe
    characters, `..` or empty folders, another extension such as `.jpg`, none) would lose
    something in cleaning, and two such ids could clean to one name (`a<b.png`, `a>b.png`;
    `x.png`, `x.jpg`): it gets `~` and a hash of the whole id (`x~3f2a...`)."""
    stem = image_id[: -len(".png")] if image_id.endswith(".png") else image_id
    parts = [p for p in _UNSAFE.sub("_", stem).split("/") if p not in ("", ".", "..")]
    parts = parts or ["image"]
    if "/".join(parts) == stem and stem != image_id:
        return stem
    digest = hashlib.sha256(image_id.encode("utf-8")).hexdigest()[:HASH_HEX]
    parts[-1] = f"{parts[-1]}{HASH_MARK}{digest}"
    return "/".join(parts)


def overlay_name(image_id: str, class_name: str) -> str:
    """OUT-relative overlay path that keeps the source's folders and names the predicted
    class, as `lesionlens predict` does; distinct ids never share one (`overlay_stem`), so
    workers writing at the same time never overwrite each other's overlays or thumbnails."""
    from serving.overlay import overlay_file_name

    folders, _, name = overlay_stem(image_id).rpartition("/")
    return "/".join(
        [OVERLAYS, *([folders] if folders else []), overlay_file_name(name, class_name)]
    )


def write_overlay(out: str, image_id: str, class_name: str, png: bytes) -> str:
    name = overlay_name(image_id, class_name)
    write_bytes(FileSystems.join(out, *name.split("/")), png)
    return name


def clear_outputs(out: str) -> None:
    """A rerun must not mix old shards, overlays or gallery with new ones."""
    old = FileSystems.match(
        [
            FileSystems.join(out, f"{PREDICTIONS}-*"),
            FileSystems.join(out, f"{REJECTED}-*"),
            FileSystems.join(out, f"{AUDIT}-*"),
            FileSystems.join(out, AUDIT_FILE),
            FileSystems.join(out, OVERLAYS, "**"),
            FileSystems.join(out, THUMBS, "**"),
            FileSystems.join(out, INDEX),
        ]
    )
    paths = [m.path for result in old for m in result.metadata_list]
    if paths:
        FileSystems.delete(paths)


def read_rows(out: str, kind: str) -> list[dict]:
    shards = FileSystems.match([FileSystems.join(out, f"{kind}-*.jsonl")])[0].metadata_list
    return [row for m in shards for row in read_jsonl(m.path)]
