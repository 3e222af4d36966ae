"""Reads one image and its masks, validates them and builds the raw tf.Example contract."""

from __future__ import annotations

import io
from dataclasses import dataclass

import imagehash
from PIL import Image

from lesionlens.ingest.layouts import Candidate
from modules import image_io
from modules.raw_examples import build_raw_example

KEEP_FORMATS = {"PNG", "JPEG"}
KEEP_MODES = {"L", "LA", "RGB", "RGBA"}


class BadInput(ValueError):
    """A single file cannot be used; the message names the file and the problem."""


@dataclass
class Record:
    """A validated image: everything needed to split it and to write its tf.Example."""

    image_id: str
    label: int
    class_name: str
    image: bytes
    mask: bytes
    phash: str
    width: int
    height: int


def _open(path: str, data: bytes, what: str, max_pixels: int, decode: bool) -> Image.Image:
    try:
        return image_io.open_image(path, data, what, max_pixels, decode=decode)
    except ValueError as e:
        raise BadInput(str(e)) from None


def read_bytes(path: str) -> bytes:
    # Beam's FileSystems reads local paths and gs:// alike, so workers on Dataflow can ingest.
    from apache_beam.io.filesystems import FileSystems

    try:
        with FileSystems.open(path, compression_type="uncompressed") as f:
            return f.read()
    except OSError as e:
        raise BadInput(f"{path}: cannot read file: {e}") from None


def encode_png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def read_record(
    c: Candidate, max_pixels: int, reader=read_bytes, fingerprint: bool = True
) -> Record:
    """Validates a candidate; raises BadInput naming the offending file. `fingerprint=False`
    skips the perceptual hash (only the split needs it; scoring does not)."""
    data = reader(c.path)
    img = _open(c.path, data, "image", max_pixels, decode=fingerprint)
    if img.format not in KEEP_FORMATS or img.mode not in KEEP_MODES:
        # The contract allows PNG/JPEG only: re-encode other formats/modes losslessly to PNG.
        img = img.convert("RGB") if img.mode not in KEEP_MODES else img
        data = encode_png(img)
    mask_bytes = b""
    if c.mask_paths:
        try:
            mask_bytes = image_io.mask_feature(c.mask_paths, img.size, reader)
        except ValueError as e:
            raise BadInput(f"{e} ({c.path})") from None
    phash = str(imagehash.phash(img.convert("L"))) if fingerprint else ""
    return Record(c.image_id, c.label, c.class_name, data, mask_bytes, phash, img.width, img.height)


def to_example(rec: Record, modality: str, dataset: str, group_id: str) -> bytes:
    """Serializes the raw tf.Example contract of the design brief."""
    return build_raw_example(
        rec.image,
        rec.mask,
        label=rec.label,
        modality=modality,
        dataset=dataset,
        image_id=rec.image_id,
        group_id=group_id,
    )
