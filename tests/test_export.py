"""The pushed SavedModel as TF Serving sees it: plain TensorFlow, documented signatures, and
a Grad-CAM output equal to an independent eager computation."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from conftest import read_raw_examples

CLASS_OUTPUTS = {
    "probabilities": ("DT_FLOAT", "(-1, 2)"),
    "class_id": ("DT_INT64", "(-1)"),
    "positive_probability": ("DT_FLOAT", "(-1)"),
    "threshold": ("DT_FLOAT", "(-1)"),
    "decision_score": ("DT_FLOAT", "(-1)"),
    "class_one_hot": ("DT_FLOAT", "(-1, 2)"),
    "roi_source": ("DT_STRING", "(-1)"),
    "roi_mask": ("DT_UINT8", "(-1, 24, 24)"),
}
EXAMPLES = {"examples": ("DT_STRING", "(-1)")}
GRADCAM = {"gradcam": ("DT_FLOAT", "(-1, 2, 2)")}  # h = w = 2 at 64 px
CONTRACT = {  # signature -> (inputs, outputs) as {name: (dtype, shape)}
    "serving_default": (EXAMPLES, {**CLASS_OUTPUTS, **GRADCAM}),
    "predict_images": (
        {"image_bytes": ("DT_STRING", "(-1)"), "mask_bytes": ("DT_STRING", "(-1)")},
        {**CLASS_OUTPUTS, **GRADCAM},
    ),
    "predict_only": (EXAMPLES, CLASS_OUTPUTS),
    "predict_no_mask": (EXAMPLES, CLASS_OUTPUTS),
}

FRESH = r"""
import json, sys
import tensorflow as tf
m = tf.saved_model.load(sys.argv[1])
recs = [bytes.fromhex(h) for h in json.loads(sys.stdin.read())]
out = {}
for name in ("serving_default", "predict_only"):
    res = m.signatures[name](examples=tf.constant(recs))
    out[name] = {k: v.numpy().tolist() for k, v in res.items() if k != "roi_source"}
    out[name]["roi_source"] = [x.decode() for x in res["roi_source"].numpy()]
ex = [tf.train.Example.FromString(r) for r in recs]
img = [e.features.feature["image"].bytes_list.value[0] for e in ex]
msk = [e.features.feature["mask"].bytes_list.value[0] for e in ex]
res = m.signatures["predict_images"](image_bytes=tf.constant(img), mask_bytes=tf.constant(msk))
out["predict_images"] = {k: v.numpy().tolist() for k, v in res.items() if k != "roi_source"}
out["signatures"] = sorted(m.signatures)
print("RESULT" + json.dumps(out))
"""


def test_loads_in_fresh_process_with_tensorflow_alone(demo_pipeline):
    _, model_dir, records = demo_pipeline
    recs = read_raw_examples(records)
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    proc = subprocess.run(
        [sys.executable, "-c", FRESH, model_dir],
        input=json.dumps([r.hex() for r in recs]),
        capture_output=True,
        text=True,
        env=env,
        cwd="/",
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.split("RESULT", 1)[1])
    assert out["signatures"] == [
        "predict_images",
        "predict_no_mask",
        "predict_only",
        "serving_default",
        "transform_features",
    ]
    sd = out["serving_default"]
    probs = np.array(sd["probabilities"])
    assert probs.shape == (len(recs), 2)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    info = json.loads(open(os.path.join(model_dir, "assets.extra", "lesionlens.json")).read())
    threshold = info["decision"]["threshold"]
    np.testing.assert_allclose(sd["threshold"], threshold, rtol=1e-6)  # one per example
    positive = probs[:, 1]
    assert sd["class_id"] == (positive >= np.float32(threshold)).astype(int).tolist()
    decision = np.array(sd["decision_score"])  # above 0.5 exactly for the positive calls
    assert ((decision > 0.5) == (positive >= np.float32(threshold))).all()
    assert (np.argsort(decision) == np.argsort(positive)).all()  # same ranking as P
    cam = np.array(sd["gradcam"])
    assert cam.shape == (len(recs), 2, 2) and cam.min() >= 0 and cam.max() <= 1
    np.testing.assert_allclose(out["predict_only"]["probabilities"], probs, atol=1e-6)
    np.testing.assert_allclose(out["predict_images"]["probabilities"], probs, atol=1e-6)
    np.testing.assert_allclose(out["predict_images"]["gradcam"], cam, atol=1e-6)
    assert sd["roi_source"] == ["given"] * len(recs)  # the records carry their masks
    assert np.array(sd["roi_mask"]).shape == (len(recs), 24, 24)
    np.testing.assert_array_equal(out["predict_images"]["roi_mask"], sd["roi_mask"])


def parse_saved_model_cli(text: str) -> dict:
    sigs: dict = {}
    for block in re.split(r"\nsignature_def\['", text)[1:]:
        name = block.split("'", 1)[0]
        ins, _, outs = block.partition(
            "The given SavedModel SignatureDef contains the following output(s):"
        )
        parse = lambda part: {  # noqa: E731
            m[0]: (m[1], m[2])
            for m in re.findall(
                r"\['(\w+)'\] tensor_info:\s+dtype: (\w+)\s+shape: (\([^)]*\))", part
            )
        }
        sigs[name] = (parse(ins), parse(outs))
    return sigs


def test_saved_model_cli_matches_documented_contract(demo_pipeline):
    _, model_dir, _ = demo_pipeline
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    proc = subprocess.run(
        [cli, "show", "--dir", model_dir, "--all"], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    sigs = parse_saved_model_cli(proc.stdout)
    for name, (ins, outs) in CONTRACT.items():
        assert sigs[name] == (ins, outs), (name, sigs.get(name))
    assert sigs["transform_features"][0] == {"examples": ("DT_STRING", "(-1)")}
    assert {"image", "label", "modality", "dataset", "has_mask"} <= set(
        sigs["transform_features"][1]
    )


def independent_gradcam(keras_model, images: tf.Tensor, classes: np.ndarray) -> np.ndarray:
    """Textbook Grad-CAM of the given class of each image (the one the server decided; how it
    decides is tested above), with an eager GradientTape, one image at a time."""
    conv = keras_model.get_layer("top_activation").output
    logits = keras_model.get_layer("logits").output
    import tf_keras

    probe = tf_keras.Model(keras_model.inputs, [conv, logits])
    maps = []
    for img, c in zip(images, classes, strict=True):
        with tf.GradientTape() as tape:
            fmap, z = probe(img[None], training=False)
            score = z[0, int(c)]
        g = tape.gradient(score, fmap)[0].numpy()
        a = fmap[0].numpy()
        cam = np.maximum((a * g.mean(axis=(0, 1))).sum(axis=-1), 0)
        maps.append(cam / (cam.max() + 1e-8))
    return np.stack(maps)


@pytest.fixture(scope="module")
def loaded_models(demo_pipeline):
    """The pushed model as TF Serving loads it and as Keras does, loaded once."""
    import tf_keras

    _, model_dir, _ = demo_pipeline
    return tf.saved_model.load(model_dir), tf_keras.models.load_model(model_dir, compile=False)


@pytest.mark.parametrize("batch", [1, 4])
def test_gradcam_output_equals_independent_computation(demo_pipeline, loaded_models, batch):
    _, _, records = demo_pipeline
    recs = read_raw_examples(records, "train")[:batch]
    loaded, keras_model = loaded_models
    served = loaded.signatures["serving_default"](examples=tf.constant(recs))
    transformed = loaded.signatures["transform_features"](examples=tf.constant(recs))
    images = tf.cast(
        tf.stack([tf.io.parse_tensor(s, tf.uint8) for s in transformed["image"]]), tf.float32
    )
    expected = independent_gradcam(keras_model, images, served["class_id"].numpy())
    got = served["gradcam"].numpy()
    assert got.shape == expected.shape == (batch, 2, 2)
    assert np.abs(got - expected).max() <= 1e-4
