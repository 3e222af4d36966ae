"""Mirror test-time averaging (`mirror_tta`): an image and its left-right mirror get the same
answer (up to float rounding) and mirrored Grad-CAMs; off, the outputs are those of the plain
classifier; the option travels from the flag to the exported signatures. Tiny images, random
init."""

import argparse
import dataclasses
import io

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras
from PIL import Image

from modules import contract as C
from modules import model as M
from modules.model_card.card import build_card, render_markdown
from modules.trainer import _serving_signatures, dataset_logits, fit_decision
from modules.transform import encode_images, prepare_images
from pipeline.config import PipelineConfig
from pipeline.flags import add_model_flags, config_from_flags
from pipeline.pipeline import trainer_options

SIZE = 64  # Lite0's last feature map is 2x2 here: enough to see a left-right flip
# An image and its mirror sit at different positions of the [x, flip(x)] batch, and a CPU's
# kernels may sum in a different order per position (AMD EPYC, oneDNN: relative 2e-6), so
# mirrored answers are compared with this tolerance, never bitwise.
FLOAT = dict(rtol=1e-5, atol=1e-6)
MIRROR = M.Decision(temperature=1.3, threshold=0.4, mirror_tta=True)
PLAIN = M.Decision(temperature=1.3, threshold=0.4)


@pytest.fixture(scope="module")
def model():
    """Random-init Lite0 with He-normal kernels: with its own initialisers the last feature
    map is ~1e-13 everywhere and every Grad-CAM is zero, which would test nothing."""
    keras.utils.set_random_seed(3)
    model = M.build_model(2, SIZE, "none", "efficientnet-lite0")
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if not isinstance(
            layer, keras.layers.Conv2D | keras.layers.DepthwiseConv2D | keras.layers.Dense
        ):
            continue
        weights = layer.get_weights()
        shape = weights[0].shape  # (kh, kw, in, out) | (kh, kw, in, multiplier) | (in, out)
        depthwise = isinstance(layer, keras.layers.DepthwiseConv2D)
        fan_in = np.prod(shape[:2]) if depthwise else np.prod(shape[:-1])
        weights[0] = rng.normal(0, np.sqrt(2 / fan_in), shape).astype("float32")
        layer.set_weights(weights)
    return model


def images(n: int, seed: int = 0) -> tf.Tensor:
    """Asymmetric images: noise plus a bright blob left of centre."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 255, (n, SIZE, SIZE, 3)).astype("float32") * 0.5
    x[:, 20:40, 5:25] += 120
    return tf.constant(x)


def flip(x) -> tf.Tensor:
    return tf.reverse(x, axis=[2])


def numpy(out: dict) -> dict:
    return {k: v.numpy() for k, v in out.items()}


@pytest.mark.parametrize("predict", [M.predict_with_gradcam, M.predict_only])
def test_an_image_and_its_mirror_get_the_same_answer(model, predict):
    cam, x = M.GradCam(model), images(3)
    own = numpy(predict(cam, x, MIRROR))
    mirrored = numpy(predict(cam, flip(x), MIRROR))
    for name in (C.PROBABILITIES, C.POSITIVE_PROBABILITY, C.DECISION_SCORE):
        np.testing.assert_allclose(own[name], mirrored[name], **FLOAT, err_msg=name)
    np.testing.assert_array_equal(own[C.CLASS_ID], mirrored[C.CLASS_ID])  # far from threshold
    if C.GRADCAM in own:
        assert own[C.GRADCAM].max() > 0  # a map, not zeros on both sides
        np.testing.assert_allclose(own[C.GRADCAM], flip(mirrored[C.GRADCAM]).numpy(), **FLOAT)
    # ... and within one batch holding both (other positions in the batch)
    both = numpy(predict(cam, tf.concat([x, flip(x)], axis=0), MIRROR))
    np.testing.assert_allclose(both[C.PROBABILITIES][:3], both[C.PROBABILITIES][3:], **FLOAT)


def test_mirror_answer_is_the_mean_of_the_two_logits(model):
    x = images(3, seed=1)
    logits_of = keras.Model(model.inputs, model.get_layer(M.LOGITS_LAYER).output)
    mean = (logits_of(x).numpy() + logits_of(flip(x)).numpy()) / 2
    got = M.predict_only(M.GradCam(model), x, MIRROR)[C.PROBABILITIES].numpy()
    np.testing.assert_allclose(got, tf.nn.softmax(mean / 1.3).numpy(), atol=1e-5)
    plain = M.predict_only(M.GradCam(model), x, PLAIN)[C.PROBABILITIES].numpy()
    assert np.abs(plain - got).max() > 1e-4  # the option changes the answer


def eager_gradcam(model, x: tf.Tensor, classes: np.ndarray, mirror: bool) -> np.ndarray:
    """Grad-CAM one image at a time with an eager tape: of the decided class's logit, or with
    `mirror` of its mirror-averaged logit over both feature maps (the mirror's flipped back)."""
    probe = keras.Model(
        model.inputs, [model.get_layer(M.LAST_CONV_LAYER).output, model.get_layer("logits").output]
    )
    maps = []
    for img, c in zip(x, classes, strict=True):
        views = [img, tf.reverse(img, axis=[1])] if mirror else [img]
        with tf.GradientTape() as tape:
            outs = [probe(v[None], training=False) for v in views]
            fmaps = [f for f, _ in outs]
            score = tf.add_n([z[0, int(c)] for _, z in outs]) / len(views)
        grads = tape.gradient(score, fmaps)
        sums = [
            (f[0].numpy() * g[0].numpy().mean(axis=(0, 1))).sum(axis=-1)
            for f, g in zip(fmaps, grads, strict=True)
        ]
        cam = np.maximum(sums[0] + (sums[1][:, ::-1] if mirror else 0), 0)
        maps.append(cam / (cam.max() + 1e-8))
    return np.stack(maps)


@pytest.mark.parametrize("decision", [PLAIN, MIRROR], ids=["off", "on"])
def test_gradcam_equals_an_eager_computation_per_example(model, decision):
    x = images(3, seed=2)
    out = numpy(M.predict_with_gradcam(M.GradCam(model), x, decision))
    expected = eager_gradcam(model, x, out[C.CLASS_ID], decision.mirror_tta)
    np.testing.assert_allclose(out[C.GRADCAM], expected, atol=1e-4)


def test_off_is_the_plain_classifier(model):
    x = images(2, seed=4)
    assert M.Decision(1.0, 0.5) == M.UNCALIBRATED and not M.UNCALIBRATED.mirror_tta
    logits = keras.Model(model.inputs, model.get_layer(M.LOGITS_LAYER).output)(x)
    expected = tf.nn.softmax(logits / 1.3).numpy()
    for predict in (M.predict_only, M.predict_with_gradcam):
        got = predict(M.GradCam(model), x, PLAIN)[C.PROBABILITIES].numpy()
        np.testing.assert_allclose(got, expected, atol=1e-6)


def options(mirror_tta: bool):
    cfg = PipelineConfig(
        image_size=SIZE,
        roi=False,
        backbone="efficientnet-lite0",
        weights="none",
        mirror_tta=mirror_tta,
    )
    return trainer_options(cfg, code="")


def test_decision_is_fitted_on_the_averaged_logits(model):
    """The eval split and its mirror image give the same temperature and threshold."""
    labels = tf.constant([0, 1, 0, 1, 1, 0], tf.int64)
    x = images(6, seed=5)
    fit = lambda v: fit_decision(  # noqa: E731
        model, tf.data.Dataset.from_tensors((v, labels)), options(True)
    )
    (decision, _), (mirrored, _) = fit(x), fit(flip(x))
    assert decision.mirror_tta and mirrored.mirror_tta
    # fitted on logits equal up to float rounding (FLOAT), so equal up to a little more
    assert decision.temperature == pytest.approx(mirrored.temperature, rel=1e-4)
    assert decision.threshold == pytest.approx(mirrored.threshold, rel=1e-4, abs=1e-6)
    plain, _ = fit_decision(model, tf.data.Dataset.from_tensors((x, labels)), options(False))
    assert not plain.mirror_tta and plain.temperature != decision.temperature


class _Transform:
    """A stand-in for the Transform output with ROI off: the whole image at SIZE px."""

    def transform_features_layer(self):
        def layer(parsed):
            flat = lambda t: tf.reshape(t, [-1])  # noqa: E731
            image = flat(parsed[C.IMAGE])
            mask = flat(parsed[C.MASK]) if C.MASK in parsed else tf.fill(tf.shape(image), "")
            prepared = prepare_images(image, mask, SIZE, False, C.DEFAULT_MAX_IMAGE_PIXELS)
            return {C.IMAGE: encode_images(prepared.image)}

        return layer

    def raw_feature_spec(self):
        return {C.IMAGE: tf.io.FixedLenFeature([], tf.string)}


def png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("mirror_tta", [True, False], ids=["on", "off"])
def test_the_option_reaches_the_serving_signatures(model, mirror_tta):
    """predict_images and serving_default on an image and its mirror, at the model's size."""
    pixels = np.round(images(1, seed=6).numpy()[0])
    encoded = tf.constant([png(pixels), png(pixels[:, ::-1])])
    sigs = _serving_signatures(model, None, _Transform(), options(mirror_tta), PLAIN)
    out = numpy(sigs[C.PREDICT_IMAGES](image_bytes=encoded, mask_bytes=tf.constant(["", ""])))
    examples = [
        tf.train.Example(
            features=tf.train.Features(
                feature={C.IMAGE: tf.train.Feature(bytes_list=tf.train.BytesList(value=[b]))}
            )
        ).SerializeToString()
        for b in encoded.numpy()
    ]
    served = numpy(sigs[C.SERVING_DEFAULT](examples=tf.constant(examples)))
    # two signatures, two graphs: the same answer up to float rounding
    np.testing.assert_allclose(served[C.PROBABILITIES], out[C.PROBABILITIES], **FLOAT)
    probs, cams = out[C.PROBABILITIES], out[C.GRADCAM]
    if mirror_tta:
        np.testing.assert_allclose(probs[0], probs[1], **FLOAT)
        np.testing.assert_allclose(cams[0], cams[1][:, ::-1], **FLOAT)
    else:
        assert np.abs(probs[0] - probs[1]).max() > 1e-4


def test_flag_sets_the_config():
    p = argparse.ArgumentParser()
    add_model_flags(p, "demo")
    assert config_from_flags(p.parse_args([])).mirror_tta is False
    assert config_from_flags(p.parse_args(["--mirror-tta"])).mirror_tta is True
    cfg = config_from_flags(p.parse_args(["--profile", "busi-cpu", "--no-mirror-tta"]))
    assert cfg.mirror_tta is False and trainer_options(cfg, code="").mirror_tta is False


def test_dataset_logits_are_the_served_ones(model):
    """What fit_decision and bench/recipe.py score: mirror-averaged logits with the option."""
    x, labels = images(4, seed=7), tf.constant([0, 1, 1, 0], tf.int64)
    ds = lambda v: tf.data.Dataset.from_tensor_slices((v, labels)).batch(3)  # noqa: E731
    on, got_labels = dataset_logits(model, ds(x), True)
    np.testing.assert_allclose(on, dataset_logits(model, ds(flip(x)), True)[0], **FLOAT)
    np.testing.assert_array_equal(got_labels, labels.numpy())
    plain = keras.Model(model.inputs, model.get_layer(M.LOGITS_LAYER).output)
    np.testing.assert_allclose(dataset_logits(model, ds(x), False)[0], plain(x), atol=1e-5)
    np.testing.assert_allclose(on, (plain(x) + plain(flip(x))) / 2, atol=1e-5)


def test_model_card_says_so():
    info = {
        **dataclasses.asdict(options(True)),
        "decision": {"temperature": 1.2, "threshold": 0.3},
        "train_seconds": 1.0,
    }
    info["decision"].update(eval_sensitivity=0.95, eval_specificity=0.5)
    card = build_card(info, None, None, None, {}, "1")
    assert card["model"]["mirror_tta"] is True
    assert "mean of the logits of the image and of its left-right mirror" in render_markdown(card)
    plain = build_card({**info, "mirror_tta": False}, None, None, None, {}, "1")
    assert "left-right mirror" not in render_markdown(plain)
