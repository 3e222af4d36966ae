"""Reads one image and its masks, validates them and builds the raw tf.Example contract."""

from __future__ import annotations

import io
from dataclasses import dataclass

import imagehash
import numpy as np
from PIL import Image, UnidentifiedImageError

from lesionlens.ingest.layouts import Candidate

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


def _open(path: str, data: bytes, what: str) -> Image.Image:
    if not data:
        raise BadInput(f"{path}: empty {what} file")
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except UnidentifiedImageError:
        raise BadInput(f"{path}: not a readable image ({what})") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise BadInput(f"{path}: unreadable or truncated {what}: {e}") from None
    return img


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


def mask_union(images: list[Image.Image]) -> np.ndarray:
    """Logical OR of all masks after reducing any pixel mode to one channel (> 0 is lesion)."""
    union = np.zeros((images[0].height, images[0].width), dtype=bool)
    for m in images:
        union |= np.asarray(m.convert("L")) > 0
    return union


def read_record(c: Candidate, reader=read_bytes) -> Record:
    """Validates a candidate; raises BadInput naming the offending file."""
    data = reader(c.path)
    img = _open(c.path, data, "image")
    if img.format not in KEEP_FORMATS or img.mode not in KEEP_MODES:
        # The contract allows PNG/JPEG only: re-encode other formats/modes losslessly to PNG.
        img = img.convert("RGB") if img.mode not in KEEP_MODES else img
        data = encode_png(img)
    mask_bytes = b""
    if c.mask_paths:
        masks = []
        for mp in c.mask_paths:
            m = _open(mp, reader(mp), "mask")
            if m.size != img.size:
                raise BadInput(
                    f"{mp}: mask size {m.width}x{m.height} differs from image size "
                    f"{img.width}x{img.height} ({c.path})"
                )
            masks.append(m)
        union = mask_union(masks)
        mask_bytes = encode_png(Image.fromarray(union.astype(np.uint8) * 255, mode="L"))
    phash = str(imagehash.phash(img.convert("L")))
    return Record(c.image_id, c.label, c.class_name, data, mask_bytes, phash, img.width, img.height)


def to_example(rec: Record, modality: str, dataset: str, group_id: str) -> bytes:
    """Serializes the raw tf.Example contract of the design brief."""
    from tensorflow.core.example import example_pb2, feature_pb2

    def b(v: bytes) -> feature_pb2.Feature:
        return feature_pb2.Feature(bytes_list=feature_pb2.BytesList(value=[v]))

    feats = {
        "image": b(rec.image),
        "mask": b(rec.mask),
        "label": feature_pb2.Feature(int64_list=feature_pb2.Int64List(value=[rec.label])),
        "modality": b(modality.encode()),
        "dataset": b(dataset.encode()),
        "image_id": b(rec.image_id.encode()),
        "group_id": b(group_id.encode()),
    }
    return example_pb2.Example(features=feature_pb2.Features(feature=feats)).SerializeToString()
