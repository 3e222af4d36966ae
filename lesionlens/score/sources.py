"""What `lesionlens score` reads: a folder of images, one image file, a file listing image
paths, or raw TFRecords in the project's contract; each good image becomes one raw tf.Example.

Inputs are planned in the launcher as batches of sorted images (the same on every run), and
each batch is read on a worker as one unit, its files in parallel threads, so no shuffle
moves image bytes between reading and inference; a TFRecord file is read as one unit and
batched as it is read. A file that cannot be used becomes a rejected record with its reason.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import Executor
from dataclasses import dataclass

from apache_beam.io.filesystems import FileSystems

from lesionlens.ingest import layouts, records
from modules import contract as C
from modules import image_io
from modules.raw_examples import build_raw_example

TFRECORD_MARKERS = (".tfrecord", ".tfrecords")


class ScoreInputError(ValueError):
    """SRC as a whole cannot be scored (missing, empty, or of an unknown kind)."""


@dataclass(frozen=True)
class ImageBatch:
    """Image files (with their lesion masks, if any) scored together."""

    index: int
    candidates: tuple[layouts.Candidate, ...]


@dataclass(frozen=True)
class RecordFile:
    """One TFRecord file of raw examples; its records are batched within the file."""

    path: str
    index: int


@dataclass
class Plan:
    kind: str  # "images" | "tfrecords"
    inputs: list[ImageBatch | RecordFile]
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
    """Candidates from the files below `root` (local or gs://): masks by ingestion's rule
    beside their image. Unlike ingestion, an image without a mask is scored (that is the
    point of care); a BUSI / MRI class folder above an image names its true class, for the
    output's `label`."""
    masks: dict[tuple[str, str], list[str]] = {}
    images = []
    for path in paths:
        folder, name = os.path.split(path)
        stem = image_io.mask_stem(name)
        if stem is not None:
            masks.setdefault((folder, stem), []).append(path)
        elif os.path.splitext(name)[1].lower() in layouts.IMAGE_EXTENSIONS:
            images.append(path)
    out = []
    for path in images:
        folder, name = os.path.split(path)
        found = sorted(masks.pop((folder, os.path.splitext(name)[0]), []), key=image_io.mask_order)
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


def _is_image(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in layouts.IMAGE_EXTENSIONS


def _single_image(path: str) -> layouts.Candidate:
    """One image file given as SRC: its masks beside it, its id its file name (so the
    overlay is named like the image), its class folder its label, as in a folder."""
    folder = os.path.dirname(path) or "."
    masks = image_io.sibling_masks(path) if "://" not in path and os.path.isdir(folder) else []
    return _candidate(path, os.path.basename(path), masks)


def _listed_candidates(listing: str) -> list[layouts.Candidate]:
    with FileSystems.open(listing, compression_type="uncompressed") as f:
        data = f.read()
    try:
        lines = data.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise ScoreInputError(
            f"{listing}: neither an image file ({', '.join(sorted(layouts.IMAGE_EXTENSIONS))}) "
            "nor a text file listing image paths (one per line)"
        ) from None
    paths = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    out = []
    for path in paths:
        folder = os.path.dirname(path) or "."
        masks = image_io.sibling_masks(path) if "://" not in path and os.path.isdir(folder) else []
        out.append(_candidate(path, path, masks))
    return out


def plan_inputs(src: str, batch_size: int) -> Plan:
    """Decides what SRC is and lists the work; raises ScoreInputError when it is unusable."""
    if _is_dir(src):
        files = _match(src.rstrip("/") + "/**")
        records_found = [p for p in files if _is_tfrecord(p)]
        candidates, skipped = _image_candidates(files, src)
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
    elif FileSystems.exists(src) and _is_image(src):
        candidates, skipped = [_single_image(src)], []
    elif FileSystems.exists(src):
        candidates, skipped = _listed_candidates(src), []
    else:
        raise ScoreInputError(f"{src}: no such file or folder")
    if not candidates:
        raise ScoreInputError(
            f"{src}: no images found (.png/.jpg/.jpeg/.bmp/.tif; *_mask*.png files are masks)"
        )
    candidates = sorted(candidates, key=lambda c: c.image_id)
    inputs = [
        ImageBatch(i // batch_size, tuple(candidates[i : i + batch_size]))
        for i in range(0, len(candidates), batch_size)
    ]
    return Plan("images", inputs, skipped)


def image_count(plan: Plan) -> int:
    return sum(len(b.candidates) for b in plan.inputs if isinstance(b, ImageBatch))


# --------------------------------------------------------------------------- on the workers

OK, BATCH, REJECTED = "ok", "batch", "rejected"
Good = tuple[str, str, bytes]  # (path, true class or "", serialized raw example)


def read_image(c: layouts.Candidate, max_pixels: int):
    """(OK, path, class, raw example) or (REJECTED, path, reason) for one image file."""
    try:
        rec = records.read_record(c, max_pixels, fingerprint=False)
    except records.BadInput as e:
        return REJECTED, c.path, str(e)
    except Exception as e:
        return REJECTED, c.path, f"{c.path}: unexpected error reading it: {type(e).__name__}: {e}"
    label = rec.label if rec.label >= 0 else None
    example = build_raw_example(rec.image, rec.mask, label=label, image_id=rec.image_id)
    return OK, c.path, c.class_name, example


def read_batch(batch: ImageBatch, max_pixels: int, pool: Executor) -> Iterator[tuple]:
    """(REJECTED, path, reason) per bad file, then (BATCH, key, [Good, ...]) of the rest."""
    good = []
    for result in pool.map(lambda c: read_image(c, max_pixels), batch.candidates):
        if result[0] == OK:
            good.append(result[1:])
        else:
            yield result
    if good:
        yield BATCH, ("images", batch.index), good


def read_records(item: RecordFile, batch_size: int, max_pixels: int) -> Iterator[tuple]:
    """Every record of one TFRecord file, checked like an image file, in batches."""
    from apache_beam.io.tfrecordio import _TFRecordUtil
    from tensorflow.core.example import example_pb2

    compression = "gzip" if item.path.endswith(".gz") else "uncompressed"
    try:
        f = FileSystems.open(item.path, compression_type=compression)
    except Exception as e:
        yield REJECTED, item.path, f"{item.path}: cannot open: {type(e).__name__}: {e}"
        return
    good: list[Good] = []
    chunk = index = 0
    with f:
        while True:
            where = f"{item.path}#{index}"
            try:
                raw = _TFRecordUtil.read_record(f)
            except Exception as e:
                yield REJECTED, where, f"{where}: corrupt TFRecord, rest of file unread: {e}"
                break
            if raw is None:
                break
            result = _check_record(raw, where, max_pixels, example_pb2)
            if result[0] == OK:
                good.append(result[1:])
            else:
                yield result
            if len(good) == batch_size:
                yield BATCH, ("records", item.index, chunk), good
                good, chunk = [], chunk + 1
            index += 1
    if good:
        yield BATCH, ("records", item.index, chunk), good


def _check_record(raw: bytes, where: str, max_pixels: int, example_pb2):
    try:
        example = example_pb2.Example.FromString(raw)
        feats = example.features.feature
        if C.IMAGE not in feats or not feats[C.IMAGE].bytes_list.value:
            raise ValueError(f"{where}: no `{C.IMAGE}` feature")
        data = feats[C.IMAGE].bytes_list.value[0]
        image = image_io.open_image(where, data, "image", max_pixels, decode=False)
        mask = (feats[C.MASK].bytes_list.value or [b""])[0] if C.MASK in feats else b""
        if mask:
            image_io.open_image(where, mask, "mask", size=image.size, decode=False)
        if not (feats[C.IMAGE_ID].bytes_list.value or [b""])[0]:
            feats[C.IMAGE_ID].bytes_list.value[:] = [where.encode()]
            raw = example.SerializeToString(deterministic=True)
    except Exception as e:
        reason = str(e) if str(e).startswith(where) else f"{where}: {type(e).__name__}: {e}"
        return REJECTED, where, reason
    return OK, where, "", raw
