"""Trainer `run_fn`: fine-tunes EfficientNetV2B0 on transformed examples and exports the
serving signatures of the design brief (raw tf.Examples, image bytes, predict-only, TFMA)."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import tensorflow as tf
import tensorflow_transform as tft
import tf_keras as keras
from tfx import v1 as tfx

from modules import features as F
from modules import model as M
from modules.transform import decode_images, prepare_images

AUTOTUNE = tf.data.AUTOTUNE


def input_dataset(
    file_patterns: list[str],
    image_size: int,
    batch_size: int,
    shuffle_seed: int | None = None,
) -> tf.data.Dataset:
    """(image float32 [B,S,S,3], label int64 [B]) batches from gzipped transformed examples."""
    spec = {
        F.IMAGE: tf.io.FixedLenFeature([], tf.string),
        F.LABEL: tf.io.FixedLenFeature([], tf.int64),
    }
    files = sorted(f for p in file_patterns for f in tf.io.gfile.glob(p))
    ds = tf.data.TFRecordDataset(files, compression_type="GZIP")
    if shuffle_seed is not None:
        ds = ds.shuffle(4096, seed=shuffle_seed, reshuffle_each_iteration=True)

    @tf.autograph.experimental.do_not_convert
    def parse(serialized):
        d = tf.io.parse_example(serialized, spec)
        return decode_images(d[F.IMAGE], image_size), d[F.LABEL]

    ds = ds.batch(batch_size).map(parse, num_parallel_calls=AUTOTUNE)
    return ds.prefetch(AUTOTUNE)


class _Progress(keras.callbacks.Callback):
    """One line per epoch: the Trainer log should say where a long run is."""

    def __init__(self, epochs: int):
        super().__init__()
        self.epochs, self.t0 = epochs, time.time()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        stats = " ".join(f"{k}={v:.4f}" for k, v in sorted(logs.items()))
        print(
            f"[trainer] epoch {epoch + 1}/{self.epochs} {stats} ({time.time() - self.t0:.0f} s)",
            flush=True,
        )


def _serving_signatures(
    model: keras.Model, tf_transform_output: tft.TFTransformOutput, size: int, roi: bool
) -> dict[str, Any]:
    """Signatures exported with the model. All share one graph path: parse -> Transform graph
    (or the same `prepare_images` for raw bytes) -> model -> Grad-CAM."""
    model.tft_layer = tf_transform_output.transform_features_layer()
    cam = M.GradCam(model)
    serving_spec = {
        F.IMAGE: tf.io.FixedLenFeature([1], tf.string),
        F.MASK: tf.io.FixedLenFeature([1], tf.string, default_value=[""]),
        F.MODALITY: tf.io.FixedLenFeature([1], tf.string, default_value=[""]),
        F.DATASET: tf.io.FixedLenFeature([1], tf.string, default_value=[""]),
    }

    def transformed_images(serialized):
        parsed = tf.io.parse_example(serialized, serving_spec)
        transformed = model.tft_layer(parsed)
        return decode_images(transformed[F.IMAGE], size)

    @tf.function(
        autograph=False, input_signature=[tf.TensorSpec([None], tf.string, name="examples")]
    )
    def serve_examples(serialized):
        return M.predict_with_gradcam(cam, transformed_images(serialized))

    @tf.function(
        autograph=False, input_signature=[tf.TensorSpec([None], tf.string, name="examples")]
    )
    def serve_predict_only(serialized):
        return M.predict_only(model, transformed_images(serialized))

    @tf.function(
        autograph=False,
        input_signature=[
            tf.TensorSpec([None], tf.string, name="image_bytes"),
            tf.TensorSpec([None], tf.string, name="mask_bytes"),
        ],
    )
    def serve_images(image_bytes, mask_bytes):
        images, _ = prepare_images(image_bytes, mask_bytes, size, roi)
        return M.predict_with_gradcam(cam, tf.cast(images, tf.float32))

    raw_spec = tf_transform_output.raw_feature_spec()

    @tf.function(
        autograph=False, input_signature=[tf.TensorSpec([None], tf.string, name="examples")]
    )
    def transform_features(serialized):
        return model.tft_layer(tf.io.parse_example(serialized, raw_spec))

    return {
        "serving_default": serve_examples.get_concrete_function(),
        "predict_images": serve_images.get_concrete_function(),
        "predict_only": serve_predict_only.get_concrete_function(),
        "transform_features": transform_features.get_concrete_function(),
    }


def run_fn(fn_args: tfx.components.FnArgs) -> None:
    """TFX Trainer entry point. Hyperparameters come from `custom_config` (pipeline config)."""
    cfg = fn_args.custom_config or {}
    size = int(cfg.get("image_size", 299))
    batch = int(cfg.get("batch_size", 32))
    epochs = int(cfg.get("epochs", 22))
    classes = list(cfg.get("classes", ["benign", "malignant"]))
    seed = int(cfg.get("seed", 42))
    roi = bool(cfg.get("roi", True))
    weights = str(cfg.get("weights", "none"))
    keras.utils.set_random_seed(seed)

    train_ds = input_dataset(fn_args.train_files, size, batch, shuffle_seed=seed)
    eval_ds = input_dataset(fn_args.eval_files, size, batch)

    model = M.build_model(len(classes), size, weights)
    model.compile(
        optimizer=keras.optimizers.Nadam(learning_rate=float(cfg.get("learning_rate", 1e-4))),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    t0 = time.time()
    history = model.fit(
        train_ds,
        validation_data=eval_ds,
        epochs=epochs,
        verbose=0,
        callbacks=[
            keras.callbacks.TensorBoard(log_dir=fn_args.model_run_dir, update_freq="epoch"),
            _Progress(epochs),
        ],
    )
    train_seconds = time.time() - t0

    tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)
    signatures = _serving_signatures(model, tf_transform_output, size, roi)
    model.save(fn_args.serving_model_dir, save_format="tf", signatures=signatures)
    assets = os.path.join(fn_args.serving_model_dir, "assets.extra")
    tf.io.gfile.makedirs(assets)
    with tf.io.gfile.GFile(os.path.join(assets, "lesionlens.json"), "w") as f:
        json.dump(
            {
                "classes": classes,
                "image_size": size,
                "roi": roi,
                "weights": weights,
                "epochs": epochs,
                "train_seconds": round(train_seconds, 1),
                "history": {k: [float(x) for x in v] for k, v in history.history.items()},
            },
            f,
            indent=2,
        )
    print(
        f"[trainer] trained {epochs} epochs in {train_seconds:.0f} s; "
        f"exported {fn_args.serving_model_dir}"
    )
