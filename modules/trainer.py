"""Trainer `run_fn`: trains the classifier (modules/backbones, modules/recipe) on transformed
examples and exports the serving signatures of the design brief (raw tf.Examples, image
bytes, predict-only, TFMA), with the lesion segmenter (the `base_model` input, when ROI is
on) in the same graph."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
import tf_keras as keras
from tfx import v1 as tfx

from modules import calibration, recipe, roi_crop
from modules import contract as C
from modules import model as M
from modules.backbones import backbone
from modules.joint import network as J
from modules.joint.data import joint_augmented, joint_dataset, mask_report
from modules.joint.explain import METHOD as EXPLANATION_METHOD
from modules.joint.signatures import joint_signatures
from modules.options import Architecture, OperatingPoint, TrainerOptions, from_custom_config
from modules.segmenter import network as S
from modules.segmenter.trainer import load_segmenter
from modules.served_inputs import (
    EXAMPLES,
    IMAGE_BYTES,
    transform_features_signature,
    transformed_requests,
)
from modules.training import transformed_records
from modules.transform import decode_images, decode_masks, prepare_images
from modules.warmup import write_warmup_requests

AUTOTUNE = tf.data.AUTOTUNE
GRADCAM_METHOD = "Grad-CAM of the decided class's logit"
log = logging.getLogger(__name__)


def input_dataset(
    file_patterns: list[str],
    image_size: int,
    batch_size: int,
    shuffle_seed: int | None = None,
) -> tf.data.Dataset:
    """(image float32 [B,S,S,3], label int64 [B]) batches from gzipped transformed examples."""
    spec = {
        C.IMAGE: tf.io.FixedLenFeature([], tf.string),
        C.LABEL: tf.io.FixedLenFeature([], tf.int64),
    }
    ds = transformed_records(file_patterns, shuffle_seed)

    @tf.autograph.experimental.do_not_convert
    def parse(serialized):
        d = tf.io.parse_example(serialized, spec)
        return decode_images(d[C.IMAGE], image_size), d[C.LABEL]

    ds = ds.batch(batch_size).map(parse, num_parallel_calls=AUTOTUNE)
    return ds.prefetch(AUTOTUNE)


def dataset_logits(
    model: keras.Model, ds: tf.data.Dataset, mirror_tta: bool
) -> tuple[np.ndarray, np.ndarray]:
    """(logits, labels) of every batch of `ds`: the logits the served graph computes (mean
    over the image and its left-right mirror with `mirror_tta`)."""
    logits_model = keras.Model(model.inputs, model.get_layer(M.LOGITS_LAYER).output)
    logits_of = lambda x: logits_model(x, training=False)  # noqa: E731
    logits, labels = [], []
    for batch in ds:
        images, batch_labels = recipe.images_and_labels(batch)
        logits.append(M.mirror_logits(logits_of, images, mirror_tta).numpy())
        labels.append(batch_labels.numpy())
    return np.concatenate(logits), np.concatenate(labels)


def fit_decision(model: keras.Model, eval_ds: tf.data.Dataset, opts: TrainerOptions):
    """Temperature and operating threshold fitted on the eval split (on the served logits:
    mirror-averaged with `mirror_tta`); with a report of both."""
    logits, labels = dataset_logits(model, eval_ds, opts.mirror_tta)
    temperature = calibration.fit_temperature(logits, labels) if opts.calibrate else 1.0
    positive = calibration.calibrated_positive(logits, temperature, C.POSITIVE_LABEL)
    is_positive = (labels == C.POSITIVE_LABEL).astype(int)
    threshold = calibration.robust_threshold(
        is_positive,
        positive,
        OperatingPoint(opts.operating_point),
        opts.operating_target,
        opts.threshold_method,
        seed=opts.seed,
    )
    raw = calibration.calibrated_positive(logits, 1.0, C.POSITIVE_LABEL)
    called = positive >= threshold
    report = {
        "temperature": temperature,
        "threshold": threshold,
        "threshold_method": opts.threshold_method,
        "eval_sensitivity": float(called[is_positive == 1].mean()),
        "eval_specificity": float((~called)[is_positive == 0].mean()),
        "eval_ece_before": calibration.expected_calibration_error(is_positive, raw)["ece"],
        "eval_ece_after": calibration.expected_calibration_error(is_positive, positive)["ece"],
    }
    log.info(
        "eval split: temperature %.3f, threshold %.4f (%s >= %.2f): sensitivity %.3f, "
        "specificity %.3f; ECE %.3f -> %.3f",
        temperature,
        threshold,
        opts.operating_point,
        opts.operating_target,
        report["eval_sensitivity"],
        report["eval_specificity"],
        report["eval_ece_before"],
        report["eval_ece_after"],
    )
    decision = M.Decision(temperature=temperature, threshold=threshold, mirror_tta=opts.mirror_tta)
    return decision, report


def _serving_signatures(
    model: keras.Model,
    segmenter: keras.Model | None,
    tf_transform_output: tft.TFTransformOutput,
    opts: TrainerOptions,
    decision: M.Decision,
) -> dict[str, Any]:
    """Signatures exported with the model. All share one graph path: parse -> Transform graph
    (or the same `prepare_images` for raw bytes) -> ROI (given, or the segmenter's) ->
    classifier (mirror-averaged with `opts.mirror_tta`) -> Grad-CAM."""
    decision = dataclasses.replace(decision, mirror_tta=opts.mirror_tta)
    model.tft_layer = tf_transform_output.transform_features_layer()
    if segmenter is not None:
        model.segmenter = segmenter  # tracked, so its variables are saved with the model
    cam = M.GradCam(model)
    post = S.postprocess_of(opts)
    mask_size = opts.segmenter_size or C.ROI_MASK_SIZE
    crop_margin = S.crop_margin_of(opts.roi_mode, opts.roi_margin)

    def roi_inputs(serialized, ignore_masks: bool):
        transformed, given = transformed_requests(model, serialized, ignore_masks)
        images = decode_images(transformed[C.IMAGE], opts.image_size)
        if segmenter is None:
            return S.choose_roi(None, post, images, images, given, _no_masks(images))
        full = decode_images(transformed[C.FULL_IMAGE], opts.image_size)
        masks = decode_masks(transformed[C.LESION_MASK], mask_size)
        return S.choose_roi(segmenter, post, images, full, given, masks, crop_margin)

    def answer(predict, images, source, roi_mask, boxes):
        outputs = predict(cam, images, decision)
        if crop_margin is not None and C.GRADCAM in outputs:  # the crop's map, placed
            outputs[C.GRADCAM] = roi_crop.to_whole_frame(outputs[C.GRADCAM], boxes)
        return {**outputs, C.ROI_SOURCE: source, C.ROI_MASK: roi_mask}

    @tf.function(autograph=False, input_signature=[EXAMPLES])
    def serve_examples(serialized):
        return answer(M.predict_with_gradcam, *roi_inputs(serialized, ignore_masks=False))

    @tf.function(autograph=False, input_signature=[EXAMPLES])
    def serve_predict_only(serialized):
        return answer(M.predict_only, *roi_inputs(serialized, ignore_masks=False))

    @tf.function(autograph=False, input_signature=[EXAMPLES])
    def serve_no_mask(serialized):
        return answer(M.predict_only, *roi_inputs(serialized, ignore_masks=True))

    @tf.function(autograph=False, input_signature=IMAGE_BYTES)
    def serve_images(image_bytes, mask_bytes):
        prepared = prepare_images(
            image_bytes,
            mask_bytes,
            opts.image_size,
            opts.roi,
            opts.max_pixels,
            mask_size,
            opts.roi_mode,
            opts.roi_margin,
        )
        roi = tf.cast(prepared.image, tf.float32)
        full = tf.cast(prepared.full_image, tf.float32)
        given = tf.strings.length(mask_bytes) > 0
        return answer(
            M.predict_with_gradcam,
            *S.choose_roi(segmenter, post, roi, full, given, prepared.mask, crop_margin),
        )

    return {
        C.SERVING_DEFAULT: serve_examples.get_concrete_function(),
        C.PREDICT_IMAGES: serve_images.get_concrete_function(),
        C.PREDICT_ONLY: serve_predict_only.get_concrete_function(),
        C.PREDICT_NO_MASK: serve_no_mask.get_concrete_function(),
        C.TRANSFORM_FEATURES: transform_features_signature(model, tf_transform_output),
    }


def _no_masks(images: tf.Tensor) -> tf.Tensor:
    return tf.zeros([tf.shape(images)[0], C.ROI_MASK_SIZE, C.ROI_MASK_SIZE], tf.uint8)


def train_labels(file_patterns: list[str], feature: str = C.LABEL) -> np.ndarray:
    """One int64 feature (the labels: class weights, steps per epoch) over one pass of a
    split."""
    spec = {feature: tf.io.FixedLenFeature([], tf.int64)}
    ds = transformed_records(file_patterns, None).batch(256)
    ds = ds.map(lambda r: tf.io.parse_example(r, spec)[feature])
    batches = [b.numpy() for b in ds]
    return np.concatenate(batches) if batches else np.zeros([0], np.int64)


def recipe_of(opts: TrainerOptions) -> recipe.Recipe:
    return recipe.Recipe(
        epochs=opts.epochs,
        learning_rate=opts.learning_rate,
        batch_size=opts.batch_size,
        **opts.recipe,
    )


def train_classifier(
    opts: TrainerOptions,
    train_files: list[str],
    eval_files: list[str],
    callbacks: list[keras.callbacks.Callback] | None = None,
) -> tuple[recipe.FitResult, tf.data.Dataset]:
    """Builds the configured backbone (or, with `architecture = joint`, the joint network)
    and trains it with the configured recipe on transformed examples; returns the fit
    (model with the kept epoch's weights) and the eval dataset. What `run_fn` and
    bench/recipe.py both run."""
    if is_joint(opts):
        return _train_joint(opts, train_files, eval_files, callbacks)
    keras.utils.set_random_seed(opts.seed)
    plan = recipe_of(opts)
    size, batch = opts.image_size, opts.batch_size
    train_ds = input_dataset(train_files, size, batch, shuffle_seed=opts.seed)
    train_ds = recipe.augmented(train_ds, opts.seed, plan.augment)
    eval_ds = input_dataset(eval_files, size, batch)
    model = M.build_model(
        len(opts.classes), size, opts.weights, opts.backbone, dropout=plan.head_dropout
    )
    fit = recipe.fit_classifier(
        model, plan, train_ds, eval_ds, train_labels(train_files), callbacks
    )
    return fit, eval_ds


def is_joint(opts: TrainerOptions) -> bool:
    return Architecture(opts.architecture) is Architecture.JOINT


def _train_joint(
    opts: TrainerOptions,
    train_files: list[str],
    eval_files: list[str],
    callbacks: list[keras.callbacks.Callback] | None,
) -> tuple[recipe.FitResult, tf.data.Dataset]:
    """The joint network: class loss + `mask_loss_weight` x (Dice + BCE) of its lesion map
    on the images that have a mask; class weights as sample weights."""
    keras.utils.set_random_seed(opts.seed)
    plan = recipe_of(opts)
    size, batch, side = opts.image_size, opts.batch_size, J.mask_side(opts.image_size)
    labels = train_labels(train_files)
    mask_report(labels, train_labels(train_files, C.HAS_MASK), opts.classes)
    weights = recipe.class_weights(labels, len(opts.classes)) if plan.class_weight else None
    train_ds = joint_dataset(train_files, size, side, batch, weights, shuffle_seed=opts.seed)
    train_ds = joint_augmented(train_ds, opts.seed, plan.augment)
    eval_ds = joint_dataset(eval_files, size, side, batch)
    model = J.build_joint_model(
        len(opts.classes), size, opts.weights, opts.backbone, dropout=plan.head_dropout
    )
    fit = recipe.fit_classifier(
        model, plan, train_ds, eval_ds, labels, callbacks, opts.mask_loss_weight
    )
    return fit, eval_ds


# TFX Trainer will call this function.
def run_fn(fn_args: tfx.components.FnArgs) -> None:
    """Trains, then exports the SavedModel with every serving signature and its model info."""
    opts = from_custom_config(TrainerOptions, fn_args.custom_config)
    tensorboard = keras.callbacks.TensorBoard(log_dir=fn_args.model_run_dir, update_freq="epoch")
    fit, eval_ds = train_classifier(opts, fn_args.train_files, fn_args.eval_files, [tensorboard])
    model, train_seconds = fit.model, fit.train_seconds

    decision, decision_report = fit_decision(model, eval_ds, opts)
    tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)
    segmenter = (
        load_segmenter(fn_args.base_model, opts.image_size, opts.segmenter_size)
        if opts.segmenter_size and not is_joint(opts)
        else None
    )
    if is_joint(opts):
        signatures = joint_signatures(model, tf_transform_output, opts, decision)
    else:
        signatures = _serving_signatures(model, segmenter, tf_transform_output, opts, decision)
    model.save(fn_args.serving_model_dir, save_format="tf", signatures=signatures)
    for batch in eval_ds.take(1):  # two real eval images, re-encoded as PNG; TF Serving
        images, _ = recipe.images_and_labels(batch)  # runs them on the version it loads,
        warm = tf.cast(images[:2], tf.uint8).numpy()
        write_warmup_requests(fn_args.serving_model_dir, warm, model_name="")  # any name
    info = os.path.join(fn_args.serving_model_dir, C.MODEL_INFO)
    tf.io.gfile.makedirs(os.path.dirname(info))
    with tf.io.gfile.GFile(info, "w") as f:
        json.dump(
            {
                **{k: v for k, v in dataclasses.asdict(opts).items() if k != "code"},
                "weights_source": backbone(opts.backbone).weights_source(opts.weights),
                "explanation": EXPLANATION_METHOD if is_joint(opts) else GRADCAM_METHOD,
                "train_seconds": round(train_seconds, 1),
                "kept_epoch_index": fit.kept_epoch,
                "best_eval_auc": fit.best_eval_auc,
                "decision": decision_report,
                "history": fit.history,
            },
            f,
            indent=2,
        )
    log.info(
        "trained %d epochs in %.0f s (kept epoch %d); exported %s",
        len(fit.history.get("loss", [])),
        train_seconds,
        fit.kept_epoch,
        fn_args.serving_model_dir,
    )
