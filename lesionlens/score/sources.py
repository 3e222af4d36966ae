"""What `lesionlens score` reads: a folder of images, a file listing image paths, or raw
TFRecords in the project's contract; each good image becomes one raw tf.Example.

Inputs are planned in the launcher (sorted, so batches are the same on every run) and read
on the workers; a file that cannot be used becomes a rejected record with its reason.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from apache_beam.io.filesystems import FileSystems

from lesionlens.ingest import layouts, records
from modules import contract as C

TFRECORD_MARKERS = (".tfrecord", ".tfrecords")


class ScoreInputError(ValueError):
    """SRC as a whole cannot be scored (missing, empty, or of an unknown kind)."""


@dataclass(frozen=True)
class ImageInput:
    """One image file (with its lesion masks, if any) and the batch it is scored in."""

    candidate: layouts.Candidate
    batch: int


@dataclass(frozen=True)
class RecordFile:
    """One TFRecord file of raw examples; its records are batched within the file."""

    path: str
    index: int


@dataclass
class Plan:
    kind: str  # "images" | "tfrecords"
    inputs: list[ImageInput | RecordFile]
    skipped: list[dict]  # {"path", "reason"}: found but unusable before reading (orphan masks)


def _is_tfrecord(path: str) -> bool:
    return any(marker in os.path.basename(path) for marker in TFRECORD_MARKERS)


def _is_dir(src: str) -> bool:
    if "://" not in src:
        return os.path.isdir(src)
    return bool(_match(src.rstrip("/") + "/*"))


def _match(pattern: str) -> list[str]:
    return sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)


def _image_candidates(
    paths: list[str], root: str | None
) -> tuple[list[layouts.Candidate], list[dict]]:
    """Candidates from a flat list of files: masks by ingestion's rule beside their image."""
    masks: dict[tuple[str, str], list[str]] = {}
    images = []
    for path in paths:
        folder, name = os.path.split(path)
        stem = C.mask_stem(name)
        if stem is not None:
            masks.setdefault((folder, stem), []).append(path)
        elif os.path.splitext(name)[1].lower() in layouts.IMAGE_EXTENSIONS:
            images.append(path)
    out = []
    for path in images:
        folder, name = os.path.split(path)
        found = sorted(masks.pop((folder, os.path.splitext(name)[0]), []), key=C.mask_order)
        image_id = os.path.relpath(path, root) if root and "://" not in path else path
        if root and "://" in path:
            image_id = path[len(root.rstrip("/")) + 1 :]
        out.append(_candidate(path, image_id, found))
    orphans = [
        {"path": m, "reason": f"{m}: a lesion mask without its image (not scored)"}
        for found in masks.values()
        for m in found
    ]
    return out, orphans


def _candidate(path: str, image_id: str, masks: list[str]) -> layouts.Candidate:
    folder = os.path.basename(os.path.dirname(path)).lower()
    if folder in C.LABELS:
        return layouts.Candidate(path, image_id, folder, C.LABELS[folder], masks)
    return layouts.Candidate(path, image_id, "", -1, masks)


def _folder_candidates(src: str) -> tuple[list[layouts.Candidate], list[dict]]:
    """Every image below SRC, local or gs://, with the masks beside it. Unlike ingestion, an
    image without a mask is scored (that is the point of care); a BUSI / MRI class folder
    above an image names its true class, for the output's `label`."""
    return _image_candidates(_match(src.rstrip("/") + "/**"), src)


def _listed_candidates(listing: str) -> list[layouts.Candidate]:
    with FileSystems.open(listing, compression_type="uncompressed") as f:
        lines = f.read().decode("utf-8").splitlines()
    paths = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    out = []
    for path in paths:
        folder = os.path.dirname(path) or "."
        masks = C.sibling_masks(path) if "://" not in path and os.path.isdir(folder) else []
        out.append(_candidate(path, path, masks))
    return out


def plan_inputs(src: str, batch_size: int) -> Plan:
    """Decides what SRC is and lists the work; raises ScoreInputError when it is unusable."""
    if _is_dir(src):
        records_found = [p for p in _match(src.rstrip("/") + "/**") if _is_tfrecord(p)]
        candidates, skipped = _folder_candidates(src)
        if not candidates and records_found:
            return Plan("tfrecords", [RecordFile(p, i) for i, p in enumerate(records_found)], [])
    elif any(ch in src for ch in "*?[") or _is_tfrecord(src):
        files = _match(src)
        if not files:
            raise ScoreInputError(f"{src}: matches no files")
        bad = [f for f in files if not _is_tfrecord(f)]
        if bad:
            raise ScoreInputError(f"{src}: not TFRecord files: {', '.join(bad[:3])}")
        return Plan("tfrecords", [RecordFile(p, i) for i, p in enumerate(files)], [])
    elif FileSystems.exists(src):
        candidates, skipped = _listed_candidates(src), []
    else:
        raise ScoreInputError(f"{src}: no such file or folder")
    if not candidates:
        raise ScoreInputError(
            f"{src}: no images found (.png/.jpg/.jpeg/.bmp/.tif; *_mask*.png files are masks)"
        )
    candidates = sorted(candidates, key=lambda c: c.image_id)
    inputs = [ImageInput(c, i // batch_size) for i, c in enumerate(candidates)]
    return Plan("images", inputs, skipped)


# --------------------------------------------------------------------------- on the workers

OK, REJECTED = "ok", "rejected"


def read_image(item: ImageInput, max_pixels: int):
    """(OK, batch key, path, class, raw example) or (REJECTED, path, reason) for one file."""
    c = item.candidate
    try:
        rec = records.read_record(c, max_pixels, fingerprint=False)
    except records.BadInput as e:
        return REJECTED, c.path, str(e)
    except Exception as e:  # noqa: BLE001 - one odd file must not fail a long batch job
        return REJECTED, c.path, f"{c.path}: unexpected error reading it: {type(e).__name__}: {e}"
    label = rec.label if rec.label >= 0 else None
    example = C.build_raw_example(rec.image, rec.mask, label=label, image_id=rec.image_id)
    return OK, ("images", item.batch), c.path, c.class_name, example


def read_records(item: RecordFile, batch_size: int, max_pixels: int):
    """Every record of one TFRecord file, validated like an image file."""
    from apache_beam.io.tfrecordio import _TFRecordUtil
    from tensorflow.core.example import example_pb2

    compression = "gzip" if item.path.endswith(".gz") else "uncompressed"
    try:
        f = FileSystems.open(item.path, compression_type=compression)
    except Exception as e:  # noqa: BLE001
        yield REJECTED, item.path, f"{item.path}: cannot open: {type(e).__name__}: {e}"
        return
    with f:
        index = 0
        while True:
            where = f"{item.path}#{index}"
            try:
                raw = _TFRecordUtil.read_record(f)
            except Exception as e:  # noqa: BLE001 - a corrupt tail loses only what follows
                yield REJECTED, where, f"{where}: corrupt TFRecord, rest of file unread: {e}"
                return
            if raw is None:
                return
            yield _check_record(
                raw, where, (item.index, index // batch_size), max_pixels, example_pb2
            )
            index += 1


def _check_record(raw: bytes, where: str, batch, max_pixels: int, example_pb2):
    try:
        example = example_pb2.Example.FromString(raw)
        feats = example.features.feature
        if C.IMAGE not in feats or not feats[C.IMAGE].bytes_list.value:
            raise ValueError(f"{where}: no `{C.IMAGE}` feature")
        image = C.open_image(where, feats[C.IMAGE].bytes_list.value[0], "image", max_pixels)
        mask = feats[C.MASK].bytes_list.value[0] if C.MASK in feats else b""
        if mask and feats[C.MASK].bytes_list.value:
            C.open_image(where, mask, "mask", size=image.size)
        if not (C.IMAGE_ID in feats and feats[C.IMAGE_ID].bytes_list.value[0]):
            feats[C.IMAGE_ID].bytes_list.value[:] = [where.encode()]
            raw = example.SerializeToString()
    except Exception as e:  # noqa: BLE001
        reason = str(e) if str(e).startswith(where) else f"{where}: {type(e).__name__}: {e}"
        return REJECTED, where, reason
    return OK, ("records", batch), where, "", raw
