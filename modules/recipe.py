"""How the classifier is trained: augmentation, optimiser and schedule, head-only warm-up,
frozen BatchNorm, class weights and the choice of the kept epoch. The Trainer's `run_fn`
and bench/recipe.py both call `fit_classifier`, so the bench measures the Trainer itself.

Why these knobs: ~450 training images is the regime where a network memorises. From
random init the paper's recipe (Nadam 1e-4, no augmentation, last epoch) served AUC
0.62-0.68 with seed spread up to 0.15 (docs/RESULTS.md); a pretrained backbone fine-tuned
with augmentation, AdamW + cosine decay, BN statistics frozen and the best eval-AUC epoch
reached 0.90-0.94 outside the pipeline (design brief).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf
import tf_keras as keras
from sklearn.metrics import roc_auc_score

from modules import contract as C
from modules import model as M
from modules.joint.network import joint_losses
from modules.options import Augment, KeptEpoch, Optimizer, Schedule
from modules.training import Progress

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recipe:
    """The training knobs (all from PipelineConfig through TrainerOptions)."""

    epochs: int  # full fine-tuning epochs (after `head_epochs`)
    learning_rate: float
    batch_size: int
    optimizer: str  # an Optimizer value
    weight_decay: float  # AdamW only
    schedule: str  # a Schedule value
    warmup_epochs: int  # linear learning-rate warm-up (cosine schedule)
    head_epochs: int  # backbone frozen, only the head learns (pretrained backbones)
    head_learning_rate: float
    freeze_bn: bool  # BatchNorm in inference mode: keeps ImageNet statistics
    augment: str  # an Augment value: train-only B-mode ultrasound augmentation
    class_weight: bool  # weight the loss by inverse class frequency
    kept_epoch: str  # a KeptEpoch value
    head_dropout: float  # dropout before the linear head


@dataclass
class FitResult:
    model: keras.Model
    history: dict[str, list[float]] = field(default_factory=dict)
    kept_epoch: int = 0  # 1-based, over head + fine-tuning epochs
    best_eval_auc: float | None = None
    train_seconds: float = 0.0


# --------------------------------------------------------------------------- augmentation


def augmenter_parts(
    seed: int, level: Augment = Augment.FULL
) -> tuple[list[keras.layers.Layer], list[keras.layers.Layer]]:
    """(geometry, intensity) layers of `augmenter`: the geometry moves pixels (and must move a
    lesion mask with them, modules/joint/data.py), the intensity changes only values."""
    flip = [keras.layers.RandomFlip("horizontal", seed=seed)]
    if level == Augment.FLIP:
        return flip, []
    rotation, zoom, shift = (0.01, 0.05, 0.03) if level == Augment.MILD else (0.03, 0.1, 0.06)
    geometry = [
        keras.layers.RandomRotation(rotation, fill_mode="constant", seed=seed + 1),
        keras.layers.RandomZoom((-zoom, zoom), fill_mode="constant", seed=seed + 2),
        keras.layers.RandomTranslation(shift, shift, fill_mode="constant", seed=seed + 3),
    ]
    if level == Augment.MILD:
        return flip + geometry, []
    intensity = [
        keras.layers.RandomBrightness(0.1, value_range=(0.0, 255.0), seed=seed + 4),
        keras.layers.RandomContrast(0.2, seed=seed + 5),
    ]
    return flip + geometry, intensity


def augmenter(seed: int, level: Augment = Augment.FULL) -> keras.Sequential:
    """B-mode ultrasound augmentation: horizontal flip (left-right has no anatomical
    meaning in a breast scan; up-down does: depth runs top-down, so no vertical flip),
    small scale / shift / rotation (probe position), brightness / contrast (gain, dynamic
    range). Speckle-like multiplicative noise and gamma are in `augment_images`. `mild`
    keeps the flip and a third to a half of the geometry; `flip` only the flip."""
    geometry, intensity = augmenter_parts(seed, level)
    return keras.Sequential(geometry + intensity, name="train_augmentation")


def augment_images(
    layers: keras.Sequential, images: tf.Tensor, seed: int, level: Augment = Augment.FULL
) -> tf.Tensor:
    """images float [B, S, S, 3] in [0, 255] -> augmented, same range (train only)."""
    x = layers(images, training=True)
    return gamma_and_speckle(x, seed) if level == Augment.FULL else x


def gamma_and_speckle(x: tf.Tensor, seed: int) -> tf.Tensor:
    """The full level's last intensity changes: a random gamma and multiplicative noise."""
    batch = tf.shape(x)[0]
    gamma = tf.exp(tf.random.uniform([batch, 1, 1, 1], -0.2, 0.2, seed=seed + 6))
    x = 255.0 * tf.pow(tf.clip_by_value(x / 255.0, 0.0, 1.0), gamma)
    speckle = 1.0 + 0.08 * tf.random.normal(tf.shape(x)[:3], seed=seed + 7)[..., None]
    return tf.clip_by_value(x * speckle, 0.0, 255.0)


def augmented(ds: tf.data.Dataset, seed: int, level: str | bool = Augment.FULL) -> tf.data.Dataset:
    """(images, labels) batches with the train-only augmentation applied (`level`: an
    Augment value; none returns `ds`)."""
    level = Augment.of(level)
    if level == Augment.NONE:
        return ds
    layers = augmenter(seed, level)
    return ds.map(
        lambda images, labels: (augment_images(layers, images, seed, level), labels),
        num_parallel_calls=tf.data.AUTOTUNE,
    )


# --------------------------------------------------------------------------- kept epoch


def images_and_labels(batch) -> tuple[tf.Tensor, tf.Tensor]:
    """A batch of the classifier's (images, labels) or of the joint network's (images,
    targets by output, sample weights) -> (images, labels)."""
    images, targets = batch[0], batch[1]
    return images, targets[C.PROBABILITIES] if isinstance(targets, dict) else targets


def classifier_view(model: keras.Model) -> keras.Model:
    """images -> probabilities, whatever else the model outputs (the joint lesion map)."""
    if not isinstance(model.output, list | tuple | dict):
        return model
    return keras.Model(model.inputs, model.get_layer(C.PROBABILITIES).output)


def positive_scores(model: keras.Model, ds: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """(P(positive), labels) over a dataset of (images, labels) or joint batches."""
    classify = classifier_view(model)
    scores, labels = [], []
    for batch in ds:
        images, batch_labels = images_and_labels(batch)
        scores.append(classify(images, training=False).numpy()[:, C.POSITIVE_LABEL])
        labels.append(batch_labels.numpy())
    return np.concatenate(scores), np.concatenate(labels)


def positive_auc(model: keras.Model, ds: tf.data.Dataset) -> float:
    """ROC AUC of P(positive) for positive vs every other class (nan with one class)."""
    scores, labels = positive_scores(model, ds)
    is_positive = labels == C.POSITIVE_LABEL
    if is_positive.all() or not is_positive.any():
        return float("nan")
    return float(roc_auc_score(is_positive, scores))


class EvalAuc(keras.callbacks.Callback):
    """Adds `eval_auc` to each epoch's logs and keeps the weights of the best epoch (epochs
    counted over every phase: each `fit` starts at `initial_epoch`)."""

    def __init__(self, eval_ds: tf.data.Dataset):
        super().__init__()
        self.eval_ds = eval_ds
        self.best_auc, self.best_epoch, self.best_weights = -np.inf, 0, None

    def on_epoch_end(self, epoch, logs=None):
        auc = positive_auc(self.model, self.eval_ds)
        if logs is not None:
            logs["eval_auc"] = auc
        if np.isfinite(auc) and auc > self.best_auc:
            self.best_auc, self.best_epoch = auc, epoch + 1
            self.best_weights = self.model.get_weights()


# --------------------------------------------------------------------------- optimiser


def _optimizer(recipe: Recipe, learning_rate, weight_decay: float):
    if Optimizer(recipe.optimizer) is Optimizer.ADAMW:
        return keras.optimizers.AdamW(learning_rate=learning_rate, weight_decay=weight_decay)
    return keras.optimizers.Nadam(learning_rate=learning_rate)


def _learning_rate(recipe: Recipe, steps_per_epoch: int):
    if Schedule(recipe.schedule) is Schedule.CONSTANT:
        return recipe.learning_rate
    warmup = recipe.warmup_epochs * steps_per_epoch
    total = max(recipe.epochs * steps_per_epoch - warmup, 1)
    if warmup:
        return keras.optimizers.schedules.CosineDecay(
            0.0, total, warmup_target=recipe.learning_rate, warmup_steps=warmup
        )
    return keras.optimizers.schedules.CosineDecay(recipe.learning_rate, total)


def _set_trainable(model: keras.Model, backbone: bool, freeze_bn: bool) -> None:
    """Everything after the backbone (the head; a joint network's decoder) always trainable;
    the backbone as asked; its BatchNorm frozen (inference mode in tf_keras when not
    trainable) when `freeze_bn`."""
    trunk = M.backbone_layers(model)
    for layer in model.layers:
        if layer.name not in trunk:
            layer.trainable = True
        elif isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = backbone and not freeze_bn
        else:
            layer.trainable = backbone


def class_weights(labels: np.ndarray, classes: int) -> dict[int, float]:
    counts = np.bincount(labels, minlength=classes).astype(float)
    return {c: float(len(labels) / (classes * max(n, 1.0))) for c, n in enumerate(counts)}


# --------------------------------------------------------------------------- fit


def fit_classifier(
    model: keras.Model,
    recipe: Recipe,
    train_ds: tf.data.Dataset,
    eval_ds: tf.data.Dataset,
    train_labels: np.ndarray,
    callbacks: list[keras.callbacks.Callback] | None = None,
    mask_loss_weight: float | None = None,
) -> FitResult:
    """Trains `model` (built by `modules.model.build_model`, or the joint network of
    `modules.joint.network` with a `mask_loss_weight`) with the recipe; returns it holding
    the kept epoch's weights. `train_ds` yields (images, labels) batches (joint: (images,
    targets, sample weights), class weights already in them), already augmented if the
    recipe asks; `train_labels`: the labels of one pass (class weights, steps per epoch)."""
    joint = mask_loss_weight is not None
    classes = classifier_view(model).output_shape[-1]
    steps = max(int(np.ceil(len(train_labels) / recipe.batch_size)), 1)
    wanted = recipe.class_weight and not joint
    class_weight = class_weights(train_labels, classes) if wanted else None
    keep_best = KeptEpoch(recipe.kept_epoch) is KeptEpoch.BEST_EVAL_AUC
    total = recipe.head_epochs + recipe.epochs
    history: dict[str, list[float]] = {}
    loss_weights = None
    if joint:
        loss, loss_weights = joint_losses(mask_loss_weight)
    else:
        loss = keras.losses.SparseCategoricalCrossentropy()
    progress = Progress(total, log)
    t0 = time.time()
    tracker = EvalAuc(eval_ds)
    phases = []
    if recipe.head_epochs:
        phases.append(("head", recipe.head_epochs, recipe.head_learning_rate, False))
    if recipe.epochs:
        phases.append(("full", recipe.epochs, None, True))
    done = 0
    for name, epochs, lr, backbone in phases:
        _set_trainable(model, backbone=backbone, freeze_bn=recipe.freeze_bn)
        rate = lr if lr is not None else _learning_rate(recipe, steps)
        wd = recipe.weight_decay if backbone else 0.0
        accuracy = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]  # new per
        model.compile(  # compile: a reused one is renamed again by a multi-output model
            optimizer=_optimizer(recipe, rate, wd),
            loss=loss,
            loss_weights=loss_weights,
            metrics={C.PROBABILITIES: accuracy} if joint else accuracy,
        )
        log.info(
            "%s phase: %d epochs (%s trainable weights)",
            name,
            epochs,
            sum(int(np.prod(w.shape)) for w in model.trainable_weights),
        )
        fit = model.fit(
            train_ds,
            validation_data=eval_ds,
            initial_epoch=done,
            epochs=done + epochs,
            verbose=0,
            class_weight=class_weight,
            callbacks=[*(callbacks or []), tracker, progress],  # theirs first: scored after
        )
        for k, v in fit.history.items():
            history.setdefault(k, []).extend(float(x) for x in v)
        done += epochs
    _set_trainable(model, backbone=True, freeze_bn=recipe.freeze_bn)
    kept = total
    if keep_best and tracker.best_weights is not None:
        model.set_weights(tracker.best_weights)
        kept = tracker.best_epoch
    best = tracker.best_auc if np.isfinite(tracker.best_auc) else None
    log.info(
        "kept epoch %d of %d (best eval AUC %s)",
        kept,
        total,
        f"{best:.4f}" if best is not None else "n/a",
    )
    return FitResult(model, history, kept, best, time.time() - t0)
