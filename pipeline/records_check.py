"""What a run checks about its records before any component runs: that they are an ingest
output, hold the configured classes, and were split with the protocol the profile expects
(`busi-paper` measured on the paper's split must not silently run on the grouped one). Reads
only the records' manifest.json: no TensorFlow."""

from __future__ import annotations

import json
import os

from modules import contract as C
from pipeline.config import PipelineConfig


def read_manifest(data_root: str) -> dict | None:
    """The records' manifest, or None when `data_root` is no ingest output."""
    path = os.path.join(data_root, C.MANIFEST)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def classes_mismatch(cfg: PipelineConfig, manifest: dict) -> str | None:
    """Why the records' label ids are not the configured classes', or None (names may
    differ: MRI's healthy / sick are benign / malignant's 0 / 1)."""
    stored = manifest.get("classes") or {}
    if sorted(stored.values()) == [C.LABELS[c] for c in cfg.classes]:
        return None
    return (
        f"{os.path.join(cfg.data_root, C.MANIFEST)}: the records hold classes "
        f"{', '.join(C.class_names(stored))}, the pipeline is configured for "
        f"{', '.join(cfg.classes)}; pass --classes {','.join(C.class_names(stored))} "
        "(or ingest again with the classes you want)"
    )


def protocol_mismatch(cfg: PipelineConfig, manifest: dict) -> str | None:
    """Why the records' split protocol is not the one the config expects, or None."""
    if cfg.records_protocol == "any":
        return None
    stored = manifest.get("protocol")
    if stored == cfg.records_protocol:
        return None
    return (
        f"{os.path.join(cfg.data_root, C.MANIFEST)}: the records were ingested with protocol "
        f"{stored!r}, this run expects {cfg.records_protocol!r} (records_protocol); ingest "
        f"again with `lesionlens ingest SRC OUT --protocol {cfg.records_protocol}`, or pass "
        f"--records-protocol {stored or 'any'} to run these settings on that split"
    )


def records_problem(cfg: PipelineConfig) -> str | None:
    """The first reason the run cannot start on `cfg.data_root`, or None."""
    manifest = read_manifest(cfg.data_root)
    if manifest is None:
        return (
            f"{cfg.data_root} is not an ingestion output (no {C.MANIFEST}); run `lesionlens "
            "ingest SRC OUT` first and pass --data OUT"
        )
    return classes_mismatch(cfg, manifest) or protocol_mismatch(cfg, manifest)
