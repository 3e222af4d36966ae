"""Where `lesionlens reproduce` reads BUSI and what it does with an earlier ingest: the
default folder beside the repository, the class counts against the paper's, and whether
OUT/records already holds the paper-protocol ingest of the same folder (then reused: an
interrupted reproduction resumes without ingesting again). No TensorFlow, no Beam."""

from __future__ import annotations

import os
from pathlib import Path

from modules import contract as C

PAPER_CLASSES = ("benign", "malignant")
PAPER_PROTOCOL = "paper"
# Images per class of the public Dataset_BUSI_with_GT that the paper split 452 / 98 / 97.
PAPER_COUNTS = {"benign": 437, "malignant": 210}
# The shared working copy, relative to the repository root (../shared/data/busi/README.md).
DEFAULT_BUSI = Path("..", "shared", "data", "busi", "Dataset_BUSI_with_GT")


class ReproduceError(ValueError):
    """The reproduction cannot start: said in words, naming the file or folder."""


def repository_root() -> Path:
    """The folder holding the `lesionlens` package (the checkout, or site-packages)."""
    return Path(__file__).resolve().parents[2]


def busi_folder(src: str | None) -> str:
    """`src`, or the shared BUSI copy beside the repository when none is given."""
    if src:
        if not os.path.isdir(src):
            raise ReproduceError(
                f"{src}: no such BUSI folder (the public Dataset_BUSI_with_GT: benign/, "
                "malignant/ with their masks)"
            )
        return src
    default = (repository_root() / DEFAULT_BUSI).resolve()
    if not default.is_dir():
        raise ReproduceError(
            f"no BUSI folder given, and the default {default} (../shared/data/busi/"
            "Dataset_BUSI_with_GT beside the repository) does not exist; pass the folder of "
            "the public Dataset_BUSI_with_GT (benign/, malignant/ with their masks): "
            "lesionlens reproduce /path/Dataset_BUSI_with_GT [OUT]"
        )
    return str(default)


def class_counts(src: str) -> dict[str, int]:
    """Images per paper class in a BUSI folder (masks not counted)."""
    from lesionlens.ingest import layouts

    found = layouts.discover(src, "busi", PAPER_CLASSES).candidates
    return {c: sum(1 for f in found if f.class_name == c) for c in PAPER_CLASSES}


def counts_warning(src: str, counts: dict[str, int]) -> str | None:
    """A warning when the folder does not hold the paper's images, or None."""
    if counts == PAPER_COUNTS:
        return None
    said = ", ".join(f"{c} {counts.get(c, 0)}" for c in PAPER_CLASSES)
    paper = ", ".join(f"{c} {n}" for c, n in PAPER_COUNTS.items())
    return (
        f"{src}: {said} images, the paper's BUSI has {paper} (its split 452 / 98 / 97); "
        "missing or extra files change the split, so this run is not the paper's table"
    )


def same_folder(a: str, b: str) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def reusable_ingest(records: str, src: str, manifest: dict | None) -> bool:
    """True when `records` (its `manifest`) is the paper-protocol ingest of `src`'s paper
    classes; False when there is none yet. Any other ingest there is refused by name, never
    overwritten or run."""
    if manifest is None:
        return False
    where = os.path.join(records, C.MANIFEST)
    if manifest.get("protocol") != PAPER_PROTOCOL:
        raise ReproduceError(
            f"{where}: the records were ingested with protocol {manifest.get('protocol')!r}, "
            f"the paper's table needs {PAPER_PROTOCOL!r} (the paper's per-class random split);"
            " give another OUT, or remove that folder to ingest again"
        )
    if not same_folder(manifest.get("source", ""), src):
        raise ReproduceError(
            f"{where}: the records were ingested from {manifest.get('source')}, not {src}; "
            "give another OUT, or remove that folder to ingest again"
        )
    stored = tuple(C.class_names(manifest.get("classes") or {}))
    if stored != PAPER_CLASSES:
        raise ReproduceError(
            f"{where}: the records hold classes {', '.join(stored)}, the paper's table "
            f"{', '.join(PAPER_CLASSES)}; give another OUT"
        )
    return True
