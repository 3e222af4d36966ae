"""Folder layouts of the supported datasets and the label contract they map to."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from modules.contract import LABELS, LAYOUT_CLASSES
from modules.image_io import mask_order, mask_stem

MRI_SPLIT_FOLDERS = ("train", "validation", "test")  # the Kaggle MRI set's own folders
IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
SYNTH_MARKER = "lesionlens-synth.json"


class SourceError(ValueError):
    """The source folder as a whole cannot be ingested (wrong path, unknown layout)."""


@dataclass
class Candidate:
    """One image to ingest, with all its masks (BUSI) and its class."""

    path: str
    image_id: str
    class_name: str
    label: int
    mask_paths: list[str] = field(default_factory=list)


@dataclass
class Discovery:
    candidates: list[Candidate]
    skipped: list[dict]
    excluded: dict[str, int]


def _skip(skipped: list[dict], src: str, path: str, reason: str) -> None:
    skipped.append({"path": os.path.relpath(path, src), "reason": reason})


def detect_layout(src: str) -> str:
    """Guesses the layout from class folder names (case-insensitive)."""
    if not os.path.isdir(src):
        raise SourceError(f"{src}: source folder does not exist or is not a folder")
    names = {d.lower() for d in _subdirs(src)}
    if names & set(LAYOUT_CLASSES["busi"]):
        return "busi"
    if names & set(LAYOUT_CLASSES["mri"]):
        return "mri"
    for split in names & set(MRI_SPLIT_FOLDERS):
        real = next(d for d in _subdirs(src) if d.lower() == split)
        if {d.lower() for d in _subdirs(os.path.join(src, real))} & set(LAYOUT_CLASSES["mri"]):
            return "mri"
    raise SourceError(
        f"{src}: cannot tell the layout: expected class folders benign/malignant/normal (BUSI) "
        f"or Healthy/Sick (MRI, optionally under train/validation/test); found {sorted(names)}"
    )


def _subdirs(path: str) -> list[str]:
    return sorted(e.name for e in os.scandir(path) if e.is_dir())


def discover(src: str, layout: str, classes: tuple[str, ...]) -> Discovery:
    """Lists every image with its masks; anything unusable goes to `skipped` with its reason."""
    if not os.path.isdir(src):
        raise SourceError(f"{src}: source folder does not exist or is not a folder")
    if layout == "auto":
        layout = detect_layout(src)
    known = LAYOUT_CLASSES[layout]
    unknown = [c for c in classes if c not in known]
    if unknown:
        raise SourceError(
            f"--classes {','.join(unknown)} not in layout {layout} ({', '.join(known)})"
        )
    skipped: list[dict] = []
    excluded: dict[str, int] = {}
    candidates: list[Candidate] = []

    class_dirs: list[tuple[str, str]] = []  # (class folder path, class name)
    roots = [src]
    if layout == "mri":
        splits = [d for d in _subdirs(src) if d.lower() in MRI_SPLIT_FOLDERS]
        roots = [os.path.join(src, d) for d in splits] or [src]
    for root in roots:
        for entry in sorted(os.scandir(root), key=lambda e: e.name):
            if entry.is_file():
                if entry.name != SYNTH_MARKER and not entry.name.startswith("."):
                    _skip(skipped, src, entry.path, "file outside any class folder")
                continue
            name = entry.name.lower()
            if root == src and layout == "mri" and name in MRI_SPLIT_FOLDERS:
                continue
            if name not in known:
                _skip(
                    skipped,
                    src,
                    entry.path,
                    f"unknown class folder (expected one of {', '.join(known)})",
                )
            elif name not in classes:
                excluded[name] = excluded.get(name, 0) + sum(
                    1 for f in os.listdir(entry.path) if _is_image_name(f) and not mask_stem(f)
                )
            else:
                class_dirs.append((entry.path, name))

    for folder, class_name in class_dirs:
        found = _discover_class(src, folder, class_name, layout == "busi", skipped)
        if not found:
            _skip(skipped, src, folder, "empty class folder (no images)")
        candidates.extend(found)
    return Discovery(candidates, skipped, excluded)


def _is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _discover_class(
    src: str, folder: str, class_name: str, needs_mask: bool, skipped: list[dict]
) -> list[Candidate]:
    images: dict[str, str] = {}
    masks: dict[str, list[tuple[int, str]]] = {}
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            _skip(skipped, src, entry.path, "unexpected folder inside a class folder")
            continue
        stem = mask_stem(entry.name)
        if stem and needs_mask:
            masks.setdefault(stem, []).append((mask_order(entry.name), entry.path))
        elif _is_image_name(entry.name):
            images[os.path.splitext(entry.name)[0]] = entry.path
        else:
            _skip(skipped, src, entry.path, "not an image file (unsupported extension)")
    out = []
    for stem, path in images.items():
        mask_paths = [p for _, p in sorted(masks.pop(stem, []))]
        if needs_mask and not mask_paths:
            _skip(skipped, src, path, f"mask missing: expected '{stem}_mask.png' beside the image")
            continue
        rel = os.path.relpath(path, src).replace(os.sep, "/")
        out.append(Candidate(path, rel, class_name, LABELS[class_name], mask_paths))
    for stem, orphans in masks.items():
        for _, p in orphans:
            _skip(skipped, src, p, f"mask without image: no '{stem}.png' beside it")
    return out
