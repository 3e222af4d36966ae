"""Segmenter Trainer `run_fn`: learns the lesion mask from the whole image.

Which images it learns from: those with a non-empty lesion mask, and `normal` images (label
2, in a three-class run) as empty targets: a normal breast has no lesion, so "nothing here"
is the right answer for it. Images whose mask is unknown (MRI: the dataset has none) are
left out: an empty target there would teach the segmenter that lesions are background.
"""

from __future__ import annotations

import json
import logging
import os
import time

import numpy as np
import tensorflow as tf
import tf_keras as keras
from tfx import v1 as tfx

from modules import contract as C
from modules.joint import attention  # noqa: F401 - registers the joint layer for load_model
from modules.options import SegmenterEncoder, SegmenterOptions, from_custom_config
from modules.segmenter import network as S
from modules.training import Progress, transformed_records
from modules.transform import decode_images, decode_masks

AUTOTUNE = tf.data.AUTOTUNE
NORMAL = C.LABELS["normal"]
INFO = "assets.extra/segmenter.json"
log = logging.getLogger(__name__)


def segmentation_dataset(
    file_patterns: list[str], opts: SegmenterOptions, shuffle_seed: int | None = None
) -> tf.data.Dataset:
    """(whole image float32 [B,S,S,3], mask float32 [B,m,m,1]) of the images it learns from."""
    spec = {
        C.FULL_IMAGE: tf.io.FixedLenFeature([], tf.string),
        C.LESION_MASK: tf.io.FixedLenFeature([], tf.string),
        C.HAS_MASK: tf.io.FixedLenFeature([], tf.int64),
        C.LABEL: tf.io.FixedLenFeature([], tf.int64),
    }
    ds = transformed_records(file_patterns, shuffle_seed)
    ds = ds.map(lambda r: tf.io.parse_single_example(r, spec))
    ds = ds.filter(lambda d: (d[C.HAS_MASK] == 1) | (d[C.LABEL] == NORMAL))

    @tf.autograph.experimental.do_not_convert
    def decode(d):
        images = decode_images(d[C.FULL_IMAGE], opts.image_size)
        masks = decode_masks(d[C.LESION_MASK], opts.segmenter_size)
        return images, tf.cast(masks, tf.float32)[..., None]

    return ds.batch(opts.batch_size).map(decode, num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE)


def mean_dice(model: keras.Model, ds: tf.data.Dataset) -> float:
    """Mean hard Dice (P > 0.5) over the dataset's images."""
    scores = [
        S.dice_iou(masks[..., 0], model(images, training=False)[..., 0] > 0.5)[0].numpy()
        for images, masks in ds
    ]
    return float(np.concatenate(scores).mean()) if scores else float("nan")


# TFX Trainer will call this function.
def run_fn(fn_args: tfx.components.FnArgs) -> None:
    """Trains the U-Net with Dice + BCE and exports it as a Keras SavedModel, which the
    classifier's Trainer embeds in the served graph."""
    opts = from_custom_config(SegmenterOptions, fn_args.custom_config)
    keras.utils.set_random_seed(opts.seed)
    train_ds = segmentation_dataset(fn_args.train_files, opts, shuffle_seed=opts.seed)
    eval_ds = segmentation_dataset(fn_args.eval_files, opts)
    if opts.encoder == SegmenterEncoder.EFFICIENTNET_LITE0:
        model = S.build_lite0_segmenter(
            opts.image_size, opts.segmenter_size, opts.width, opts.encoder_weights
        )
    else:
        model = S.build_segmenter(opts.image_size, opts.segmenter_size, opts.width)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=opts.learning_rate), loss=S.dice_bce_loss
    )
    t0 = time.time()
    history = model.fit(
        train_ds,
        validation_data=eval_ds,
        epochs=opts.epochs,
        verbose=0,
        callbacks=[Progress(opts.epochs, log, "segmenter epoch")],
    )
    seconds = time.time() - t0
    eval_dice = mean_dice(model, eval_ds)
    model.save(fn_args.serving_model_dir, save_format="tf", include_optimizer=False)
    info = os.path.join(fn_args.serving_model_dir, INFO)
    tf.io.gfile.makedirs(os.path.dirname(info))
    with tf.io.gfile.GFile(info, "w") as f:
        json.dump(
            {
                "segmenter_size": opts.segmenter_size,
                "width": opts.width,
                "encoder": opts.encoder,
                "epochs": opts.epochs,
                "train_seconds": round(seconds, 1),
                "eval_dice": eval_dice,
                "history": {k: [float(x) for x in v] for k, v in history.history.items()},
            },
            f,
            indent=2,
        )
    log.info("segmenter: %d epochs in %.0f s, eval Dice %.3f", opts.epochs, seconds, eval_dice)


class SegmenterMismatchError(ValueError):
    """The segmenter was trained for other image or mask sizes than this run's."""


def load_segmenter(
    model_dir: str, image_size: int | None = None, segmenter_size: int | None = None
) -> keras.Model:
    """The exported segmenter, for the classifier's graph and the ROI components (or a joint
    network's lesion map, for its evaluation). Given the run's sizes, one trained for others
    (an imported `segmenter_model`) is refused by name."""
    model = keras.models.load_model(model_dir, compile=False)
    if isinstance(model.output, list | tuple):  # the joint network: its lesion map
        model = keras.Model(model.inputs, model.get_layer(C.LESION_PROBABILITY).output)
    wanted = {"image": image_size, "mask": segmenter_size}
    sizes = {"image": model.input_shape[1], "mask": model.output_shape[1]}
    wrong = [f"{k} {sizes[k]} px, not {v}" for k, v in wanted.items() if v and sizes[k] != v]
    if wrong:
        raise SegmenterMismatchError(
            f"segmenter {model_dir} was trained for other sizes than this run's: "
            f"{'; '.join(wrong)} (image_size, segmenter_size)"
        )
    return model
