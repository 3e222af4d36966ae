"""One split of an Examples artifact as serialized records: the custom components' reader."""

from __future__ import annotations

import os

import tensorflow as tf
from tfx.dsl.io import fileio


def read_split(split_dir: str) -> list[bytes]:
    """Every record of the split's gzipped TFRecord files, files in name order."""
    files = sorted(fileio.glob(os.path.join(split_dir, "*")))
    return [r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP")]
