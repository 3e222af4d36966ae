"""SMOTE executor: train split resampled, every other split copied byte-for-byte."""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from typing import Any

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2
from tfx import types
from tfx.dsl.components.base import base_executor
from tfx.dsl.io import fileio
from tfx.types import artifact_utils
from tfx.utils import io_utils

from modules import contract as C
from modules.options import SmoteMethod
from modules.smote.resample import smote_images
from modules.split_records import read_split

OUTPUT_FILE = "data_tfrecord-00000-of-00001.gz"
log = logging.getLogger(__name__)


def _image(ex: tf.train.Example) -> np.ndarray:
    proto = tensor_pb2.TensorProto.FromString(ex.features.feature[C.IMAGE].bytes_list.value[0])
    return tf.make_ndarray(proto)


def _synthetic_example(template: tf.train.Example, image: np.ndarray, label: int) -> bytes:
    ex = tf.train.Example()
    ex.CopyFrom(template)  # modality / dataset of a real example of the same class
    ex.features.feature[C.IMAGE].bytes_list.value[:] = [
        tf.make_tensor_proto(image).SerializeToString()
    ]
    ex.features.feature[C.LABEL].int64_list.value[:] = [int(label)]
    # A synthetic image blends two real ones; the template's mask outlines neither, so it
    # is marked as having none: the joint network trains its class only (modules/joint).
    if C.HAS_MASK in ex.features.feature:
        ex.features.feature[C.HAS_MASK].int64_list.value[:] = [0]
    return ex.SerializeToString()


def resample_split(src_dir: str, dst_dir: str, params: dict[str, Any]) -> dict[str, Any]:
    records = read_split(src_dir)
    examples = [tf.train.Example.FromString(r) for r in records]
    labels = np.array([e.features.feature[C.LABEL].int64_list.value[0] for e in examples])
    before = Counter(int(x) for x in labels)
    out = list(records)
    if params["method"] is SmoteMethod.PIXEL and len(before) > 1:
        images = np.stack([_image(e) for e in examples])
        new_images, new_labels = smote_images(
            images,
            labels,
            k_neighbors=params["k_neighbors"],
            seed=params["seed"],
            target_ratio=params["target_ratio"],
            max_memory_gb=params["max_memory_gb"],
        )
        rng = np.random.default_rng(params["seed"])
        by_class = {c: np.flatnonzero(labels == c) for c in before}
        for img, lab in zip(new_images, new_labels, strict=True):
            template = examples[int(rng.choice(by_class[int(lab)]))]
            out.append(_synthetic_example(template, img, int(lab)))
        after = before + Counter(int(x) for x in new_labels)
    else:
        after = before
    fileio.makedirs(dst_dir)
    with tf.io.TFRecordWriter(os.path.join(dst_dir, OUTPUT_FILE), options="GZIP") as w:
        for r in out:
            w.write(r)
    return {"before": dict(sorted(before.items())), "after": dict(sorted(after.items()))}


class Executor(base_executor.BaseExecutor):
    """Reads the transformed Examples, writes an Examples artifact with the same splits."""

    def Do(
        self,
        input_dict: dict[str, list[types.Artifact]],
        output_dict: dict[str, list[types.Artifact]],
        exec_properties: dict[str, Any],
    ) -> None:
        src = artifact_utils.get_single_instance(input_dict["examples"])
        dst = artifact_utils.get_single_instance(output_dict["resampled_examples"])
        dst.split_names = src.split_names
        for key in ("payload_format", "file_format"):
            if src.has_custom_property(key):
                dst.set_string_custom_property(key, src.get_string_custom_property(key))
        params = {
            "method": SmoteMethod(exec_properties["method"]),
            "k_neighbors": int(exec_properties["k_neighbors"]),
            "seed": int(exec_properties["seed"]),
            "target_ratio": float(exec_properties["target_ratio"]),
            "max_memory_gb": float(exec_properties["max_memory_gb"]),
        }
        resample = set(json.loads(exec_properties["resample_splits"]))
        stats = {}
        for split in artifact_utils.decode_split_names(src.split_names):
            src_dir = artifact_utils.get_split_uri([src], split)
            dst_dir = artifact_utils.get_split_uri([dst], split)
            if split in resample:
                stats[split] = resample_split(src_dir, dst_dir, params)
                log.info(
                    "%s: class counts %s -> %s",
                    split,
                    stats[split]["before"],
                    stats[split]["after"],
                )
            else:
                io_utils.copy_dir(src_dir, dst_dir)
        dst.set_string_custom_property("smote_class_counts", json.dumps(stats))
