"""The training recipe (modules/recipe.py): the kept epoch is the best one on eval, the
augmentation only touches training batches, frozen layers stay frozen."""

import argparse

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from modules import model as M
from modules import recipe as R
from modules.options import Augment
from pipeline.config import PipelineConfig
from pipeline.flags import add_model_flags, config_from_flags

SIZE = 32


def plan(**changes) -> R.Recipe:
    base = dict(
        epochs=3,
        learning_rate=1e-3,
        batch_size=8,
        optimizer="adamw",
        weight_decay=1e-4,
        schedule="cosine",
        warmup_epochs=1,
        head_epochs=0,
        head_learning_rate=1e-3,
        freeze_bn=True,
        augment="none",
        class_weight=False,
        kept_epoch="best_eval_auc",
        head_dropout=0.0,
    )
    return R.Recipe(**{**base, **changes})


def data(n: int = 16, seed: int = 0):
    """Bright squares are class 1, dark ones class 0: learnable in a few steps."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    images = rng.uniform(0, 60, (n, SIZE, SIZE, 3)).astype("float32")
    images[labels == 1, 8:24, 8:24] += 150
    ds = tf.data.Dataset.from_tensor_slices((images, labels)).batch(8)
    return ds, labels


def tiny_model() -> keras.Model:
    """A conv, a BatchNorm and the classifier's head names: seconds, not minutes."""
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Conv2D(4, 3, name="stem_conv")(x)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.ReLU(name=M.LAST_CONV_LAYER)(x)  # the backbone ends here
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    logits = keras.layers.Dense(2, name=M.LOGITS_LAYER)(x)
    return keras.Model(inputs, keras.layers.Softmax()(logits))


class WorseFrom(keras.callbacks.Callback):
    """At the end of epoch `epoch` (0-based) and later, before the epoch is scored on eval,
    negates the logits layer: those epochs rank eval images upside down."""

    def __init__(self, epoch: int):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch >= self.epoch:
            layer = self.model.get_layer(M.LOGITS_LAYER)
            layer.set_weights([-w for w in layer.get_weights()])


def test_the_best_eval_epoch_is_the_one_kept():
    keras.utils.set_random_seed(1)
    train, labels = data()
    model = tiny_model()
    fit = R.fit_classifier(model, plan(), train, train, labels, callbacks=[WorseFrom(2)])
    aucs = fit.history["eval_auc"]
    assert aucs[2] < max(aucs[:2]), aucs  # the sabotaged epoch scored worse
    assert fit.kept_epoch == 1 + int(np.argmax(aucs[:2])), (fit.kept_epoch, aucs)
    assert fit.best_eval_auc == pytest.approx(max(aucs))
    assert R.positive_auc(fit.model, train) == pytest.approx(fit.best_eval_auc)


def test_the_last_epoch_is_kept_when_asked():
    train, labels = data()
    model = tiny_model()
    fit = R.fit_classifier(model, plan(epochs=2, kept_epoch="last"), train, train, labels)
    assert fit.kept_epoch == 2 and len(fit.history["loss"]) == 2


def test_kept_epoch_counts_head_epochs_too():
    keras.utils.set_random_seed(1)
    train, labels = data()
    model = tiny_model()
    fit = R.fit_classifier(
        model, plan(epochs=2, head_epochs=2), train, train, labels, [WorseFrom(3)]
    )
    aucs = fit.history["eval_auc"]
    assert len(aucs) == 4 and aucs[3] < max(aucs[:3]), aucs
    assert fit.kept_epoch == 1 + int(np.argmax(aucs)), (fit.kept_epoch, aucs)


def test_head_epochs_train_only_the_head_and_frozen_bn_keeps_its_statistics():
    train, labels = data()
    model = tiny_model()
    stem = model.get_layer("stem_conv").get_weights()[0].copy()
    bn = [w.copy() for w in model.get_layer("stem_bn").get_weights()]
    head = model.get_layer(M.LOGITS_LAYER).get_weights()[0].copy()
    R.fit_classifier(model, plan(epochs=0, head_epochs=2), train, train, labels)
    np.testing.assert_array_equal(model.get_layer("stem_conv").get_weights()[0], stem)
    assert not np.array_equal(model.get_layer(M.LOGITS_LAYER).get_weights()[0], head)
    R.fit_classifier(model, plan(epochs=1, head_epochs=0), train, train, labels)
    assert not np.array_equal(model.get_layer("stem_conv").get_weights()[0], stem)
    for before, after in zip(bn, model.get_layer("stem_bn").get_weights(), strict=True):
        np.testing.assert_array_equal(before, after)  # frozen: gamma, beta, mean, variance


def test_augmentation_changes_training_batches_only_within_range():
    images = np.random.default_rng(0).uniform(0, 255, (4, SIZE, SIZE, 3)).astype("float32")
    ds = tf.data.Dataset.from_tensor_slices((images, np.zeros(4, "int64"))).batch(4)
    ((augmented, labels),) = list(R.augmented(ds, seed=3))
    assert augmented.shape == images.shape and labels.shape == (4,)
    assert not np.allclose(augmented.numpy(), images)
    assert float(tf.reduce_min(augmented)) >= 0.0 and float(tf.reduce_max(augmented)) <= 255.0
    # the model itself has no augmentation: the same input gives the same answer twice
    model = M.build_model(2, SIZE, "none", "efficientnet-lite0")
    np.testing.assert_array_equal(model(images, training=False), model(images, training=False))
    assert not any("random" in layer.name for layer in model.layers)


@pytest.mark.parametrize("level", ["flip", "mild", "full"])
def test_no_vertical_flip_depth_runs_top_down(level):
    layers = R.augmenter(0, Augment(level)).layers
    flips = [layer for layer in layers if isinstance(layer, keras.layers.RandomFlip)]
    assert [f.mode for f in flips] == ["horizontal"]


def test_augmentation_levels():
    """flip: a mirror or the image itself; mild: geometry only (no gain / contrast / gamma /
    speckle); none: the batches untouched; a flag without a level means full."""
    levels = (Augment.FLIP, Augment.MILD, Augment.FULL)
    kinds = {level: {type(x).__name__ for x in R.augmenter(0, level).layers} for level in levels}
    geometry = {"RandomRotation", "RandomZoom", "RandomTranslation"}
    assert kinds[Augment.FLIP] == {"RandomFlip"}
    assert kinds[Augment.MILD] == {"RandomFlip", *geometry}
    assert kinds[Augment.FULL] == {"RandomFlip", *geometry, "RandomBrightness", "RandomContrast"}
    images = np.random.default_rng(1).uniform(0, 255, (8, SIZE, SIZE, 3)).astype("float32")
    ds = tf.data.Dataset.from_tensor_slices((images, np.zeros(8, "int64"))).batch(8)
    ((flipped, _),) = list(R.augmented(ds, seed=3, level="flip"))
    for got, image in zip(flipped.numpy(), images, strict=True):
        assert np.array_equal(got, image) or np.array_equal(got, image[:, ::-1])
    assert R.augmented(ds, seed=3, level="none") is ds
    assert Augment.of(True) == Augment.FULL and Augment.of(False) == Augment.NONE
    p = argparse.ArgumentParser()
    add_model_flags(p, "demo")
    for argv, level in (([], "none"), (["--augment"], "full"), (["--augment", "mild"], "mild")):
        assert config_from_flags(p.parse_args(argv)).augment == level
    assert (
        config_from_flags(p.parse_args(["--profile", "busi-cpu", "--no-augment"])).augment == "none"
    )
    assert PipelineConfig(augment=True).augment == "full"
    with pytest.raises(ValueError, match="augment must be one of none, flip, mild, full"):
        PipelineConfig(augment="strong")


def test_class_weights_balance_the_loss():
    weights = R.class_weights(np.array([0, 0, 0, 1]), 2)
    assert weights[1] == pytest.approx(3 * weights[0])
