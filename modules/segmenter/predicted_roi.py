"""PredictedRoi: the classifier's training images with the segmenter's ROI instead of the
radiologist's (`train_roi="predicted"`), so the mode that serves is the mode that trained.

It rewrites the `image` feature of every split with exactly what the served graph computes
for a request without a mask (`network.predicted_roi` + `apply_roi`: the image x the mask,
or the crop around it with `roi_mode="crop"`; whole image where nothing usable is found);
SMOTE and the Trainer then read it as they read Transform's.
"""

# no `from __future__ import annotations`: the @component decorator reads real type hints

import json
import logging
import os

import numpy as np
import tensorflow as tf
from tfx import v1 as tfx
from tfx.types import artifact_utils
from tfx.utils import path_utils

from modules import contract as C
from modules.segmenter import network as S
from modules.segmenter.records import segment_records
from modules.segmenter.trainer import load_segmenter
from modules.split_records import read_split
from modules.transform import encode_images

OUTPUT_FILE = "data_tfrecord-00000-of-00001.gz"
log = logging.getLogger(__name__)


@tfx.dsl.components.component
def PredictedRoi(
    examples: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Examples],
    segmenter: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Model],
    roi_examples: tfx.dsl.components.OutputArtifact[tfx.types.standard_artifacts.Examples],
    image_size: tfx.dsl.components.Parameter[int],
    roi_mode: tfx.dsl.components.Parameter[str],
    roi_margin: tfx.dsl.components.Parameter[float],
    roi_threshold: tfx.dsl.components.Parameter[float],
    roi_dilation: tfx.dsl.components.Parameter[int],
    roi_min_area: tfx.dsl.components.Parameter[float],
    roi_max_area: tfx.dsl.components.Parameter[float],
    code_version: tfx.dsl.components.Parameter[str],
) -> None:
    """`code_version` only keys the cache on the module code."""
    del code_version
    post = S.RoiPostprocess(roi_threshold, roi_dilation, roi_min_area, roi_max_area)
    crop_margin = S.crop_margin_of(roi_mode, roi_margin)
    model = load_segmenter(path_utils.serving_model_path(segmenter.uri), image_size)
    roi_examples.split_names = examples.split_names
    for key in ("payload_format", "file_format"):
        if examples.has_custom_property(key):
            roi_examples.set_string_custom_property(key, examples.get_string_custom_property(key))
    found_fraction = {}
    for split in artifact_utils.decode_split_names(examples.split_names):
        records = read_split(artifact_utils.get_split_uri([examples], split))
        dst = artifact_utils.get_split_uri([roi_examples], split)
        tf.io.gfile.makedirs(dst)
        found = []
        with tf.io.TFRecordWriter(os.path.join(dst, OUTPUT_FILE), options="GZIP") as writer:
            for batch, seg in segment_records(model, records, image_size, post):
                images, _ = S.apply_roi(seg[C.FULL_IMAGE], seg["roi"], crop_margin)
                encoded = encode_images(tf.cast(images, tf.uint8)).numpy()
                for record, image in zip(batch, encoded, strict=True):
                    ex = tf.train.Example.FromString(record)
                    ex.features.feature[C.IMAGE].bytes_list.value[:] = [image]
                    writer.write(ex.SerializeToString())
                found.append(seg["found"].numpy())
        found_fraction[split] = float(np.concatenate(found).mean()) if found else 0.0
        log.info(
            "%s: %d images, predicted ROI found for %.0f %% (the rest: whole image)",
            split,
            len(records),
            100 * found_fraction[split],
        )
    roi_examples.set_string_custom_property("roi_found_fraction", json.dumps(found_fraction))
