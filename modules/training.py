"""What both Trainer modules (classifier and segmenter) share: reading a split of
transformed examples and one log line per epoch."""

from __future__ import annotations

import logging
import time

import tensorflow as tf
import tf_keras as keras


def transformed_records(file_patterns: list[str], shuffle_seed: int | None) -> tf.data.Dataset:
    """Serialized transformed examples of gzipped TFRecords, files in name order; shuffled
    (seeded, reshuffled each epoch) when `shuffle_seed` is given."""
    files = sorted(f for p in file_patterns for f in tf.io.gfile.glob(p))
    ds = tf.data.TFRecordDataset(files, compression_type="GZIP")
    if shuffle_seed is not None:
        ds = ds.shuffle(4096, seed=shuffle_seed, reshuffle_each_iteration=True)
    return ds


class Progress(keras.callbacks.Callback):
    """One line per epoch: the Trainer log should say where a long run is."""

    def __init__(self, epochs: int, log: logging.Logger, what: str = "epoch"):
        super().__init__()
        self.epochs, self.log, self.what, self.t0 = epochs, log, what, time.time()

    def on_epoch_end(self, epoch, logs=None):
        stats = " ".join(f"{k}={v:.4f}" for k, v in sorted((logs or {}).items()))
        self.log.info(
            "%s %d/%d %s (%.0f s)", self.what, epoch + 1, self.epochs, stats, time.time() - self.t0
        )
