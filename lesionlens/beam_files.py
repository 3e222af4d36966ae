"""Sharded output files that every Beam runner writes the same way.

Why not Beam's WriteToText / WriteToTFRecord / WriteToParquet: their temp-file finalisation
relies on side inputs and on output emitted from finish_bundle, which Beam's DaskRunner
(2.77) re-evaluates or drops: whole files went missing there. Here elements are grouped by
a shard key (GroupByKey, which every runner has) and each group is written to a fixed file
name, sorted, so a retried or recomputed shard rewrites the same bytes: no runner can
duplicate or lose a record, and reruns give identical files.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Iterable
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems


def shard_of(key: str, num_shards: int) -> int:
    """A stable shard for a record key (the same on every worker and every run)."""
    return zlib.crc32(key.encode("utf-8")) % num_shards


def write_bytes(path: str, data: bytes) -> None:
    with FileSystems.create(path) as f:
        f.write(data)


def read_jsonl(path: str) -> list[dict]:
    """Every line of a JSON-lines file, parsed (a missing file: an empty list)."""
    if not FileSystems.exists(path):
        return []
    with FileSystems.open(path, compression_type="uncompressed") as f:
        return [json.loads(line) for line in f.read().decode("utf-8").splitlines() if line]


class WriteGroups(beam.PTransform):
    """(group key, value) elements -> one `write(group key, values)` call per group, whose
    returned summary is the output. `empty_groups` are written even when nothing maps to
    them (e.g. every shard of a split, so a `-of-N` file set is complete)."""

    def __init__(self, write: Callable[[Any, list], Any], empty_groups: Iterable[Any] = ()) -> None:
        super().__init__()
        self.write = write
        self.empty_groups = list(empty_groups)

    def expand(self, keyed):
        if self.empty_groups:
            placeholders = keyed.pipeline | "EmptyGroups" >> beam.Create(
                [(g, None) for g in self.empty_groups]
            )
            keyed = (keyed, placeholders) | "WithEmptyGroups" >> beam.Flatten()
        write = self.write
        return (
            keyed
            | "Group" >> beam.GroupByKey()
            | "Write" >> beam.MapTuple(lambda k, vs: write(k, [v for v in vs if v is not None]))
        )


def run_pipeline(build: Callable[[beam.Pipeline], Any], options: Any) -> None:
    """Builds and runs a pipeline to the end; then closes the Dask client that Beam's
    DaskRunner opens and never closes (it would log reconnect errors once the cluster goes)."""
    p = beam.Pipeline(options=options)
    build(p)
    result = p.run()
    try:
        result.wait_until_finish()
    finally:
        client = getattr(result, "client", None)
        if client is not None:
            client.close()
