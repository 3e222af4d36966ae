"""The served model without a radiologist's mask: the pipeline's segmenter draws the ROI in
the same graph, `roi_source` says where each ROI came from, a given mask still takes the
paper's path, and inputs the segmenter cannot use get a defined answer."""

import io
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from conftest import read_raw_examples
from PIL import Image

from modules import contract as C
from modules.raw_examples import without_mask
from pipeline.local import metadata_connection
from pipeline.results import latest_results


@pytest.fixture(scope="module")
def served(demo_pipeline):
    return tf.saved_model.load(demo_pipeline[1])


def field(record: bytes, name: str) -> bytes:
    return tf.train.Example.FromString(record).features.feature[name].bytes_list.value[0]


def small(mask_png: bytes) -> np.ndarray:
    m = np.asarray(Image.open(io.BytesIO(mask_png)).convert("L")) > 0
    img = Image.fromarray(m.astype(np.uint8) * 255).resize((C.ROI_MASK_SIZE,) * 2, Image.BOX)
    return np.asarray(img) >= 128


def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def test_segmenter_finds_the_synthetic_lesion(demo_pipeline):
    """Trained in the pipeline, scored on the test split against baselines that ignore the
    image, and recorded in MLMD (the run would have stopped below min_dice)."""
    cfg = demo_pipeline[0]
    seg = latest_results(metadata_connection(cfg))["segmentation"]
    overall = seg["slices"]["overall"]
    dice, (lower, upper) = overall["metrics"]["dice"], overall["intervals"]["dice"]
    assert overall["example_count"] == 4  # the test split's images, each with a lesion mask
    assert lower <= dice <= upper
    assert dice >= cfg.min_dice
    assert dice > seg["baselines_dice"]["centre_disk"] + 0.1, seg
    assert dice > seg["baselines_dice"]["all_foreground"] + 0.3, seg


def test_without_a_mask_the_segmenter_draws_the_roi(demo_pipeline, served):
    records = read_raw_examples(demo_pipeline[2], "train")[:8]
    images = tf.constant([field(r, C.IMAGE) for r in records])
    out = served.signatures[C.PREDICT_IMAGES](
        image_bytes=images, mask_bytes=tf.constant([b""] * len(records))
    )
    sources = [s.decode() for s in out[C.ROI_SOURCE].numpy()]
    assert set(sources) <= {C.ROI_PREDICTED, C.ROI_NONE}
    assert sources.count(C.ROI_PREDICTED) >= 6, sources
    for record, source, roi in zip(records, sources, out[C.ROI_MASK].numpy(), strict=True):
        truth = small(field(record, C.MASK))
        if source == C.ROI_PREDICTED:  # the ROI covers most of the radiologist's lesion
            assert roi[truth].mean() >= 0.6 and roi.mean() < 0.9, (roi.mean(), truth.mean())
        else:
            assert roi.all()
    np.testing.assert_allclose(out[C.PROBABILITIES].numpy().sum(axis=1), 1.0, atol=1e-5)
    with_masks = served.signatures[C.PREDICT_IMAGES](
        image_bytes=images, mask_bytes=tf.constant([field(r, C.MASK) for r in records])
    )
    assert set(with_masks[C.ROI_SOURCE].numpy().tolist()) == {b"given"}


def test_predict_no_mask_is_serving_default_without_masks(demo_pipeline, served):
    records = read_raw_examples(demo_pipeline[2], "test")
    ignored = served.signatures[C.PREDICT_NO_MASK](examples=tf.constant(records))
    stripped = served.signatures[C.SERVING_DEFAULT](
        examples=tf.constant([without_mask(r) for r in records])
    )
    # two signatures, two graphs: probabilities up to float rounding, the discrete outputs equal
    np.testing.assert_allclose(
        ignored[C.PROBABILITIES].numpy(), stripped[C.PROBABILITIES].numpy(), rtol=1e-5, atol=1e-6
    )
    for name in (C.CLASS_ID, C.ROI_SOURCE, C.ROI_MASK):
        np.testing.assert_array_equal(ignored[name].numpy(), stripped[name].numpy())
    assert b"given" not in ignored[C.ROI_SOURCE].numpy().tolist()


def test_a_given_mask_takes_the_papers_path(demo_pipeline, served):
    """With the mask: calibrated softmax of the classifier on Transform's ROI image, as
    before the segmenter existed."""
    import tf_keras

    _, model_dir, records = demo_pipeline
    recs = read_raw_examples(records, "test")
    out = served.signatures[C.SERVING_DEFAULT](examples=tf.constant(recs))
    transformed = served.signatures[C.TRANSFORM_FEATURES](examples=tf.constant(recs))
    images = tf.cast(
        tf.stack([tf.io.parse_tensor(s, tf.uint8) for s in transformed[C.IMAGE]]), tf.float32
    )
    keras_model = tf_keras.models.load_model(model_dir, compile=False)
    logits = tf_keras.Model(keras_model.inputs, keras_model.get_layer("logits").output)
    with open(os.path.join(model_dir, C.MODEL_INFO)) as f:
        temperature = json.load(f)["decision"]["temperature"]
    expected = tf.nn.softmax(logits(images, training=False) / temperature).numpy()
    np.testing.assert_allclose(out[C.PROBABILITIES].numpy(), expected, atol=1e-5)


def test_unusable_inputs_get_a_defined_answer(demo_pipeline, served):
    """An all-black image: nothing to segment, so the whole image (roi_source none); a mask
    of another size: INVALID_ARGUMENT naming it; the model keeps answering."""
    black = png(np.zeros((64, 64, 3), np.uint8))
    predict = served.signatures[C.PREDICT_IMAGES]
    out = predict(image_bytes=tf.constant([black]), mask_bytes=tf.constant([b""]))
    assert out[C.ROI_SOURCE].numpy().tolist() == [b"none"]
    assert out[C.ROI_MASK].numpy().all()
    assert np.isfinite(out[C.PROBABILITIES].numpy()).all()
    with pytest.raises(tf.errors.InvalidArgumentError, match="mask size differs"):
        predict(
            image_bytes=tf.constant([black]),
            mask_bytes=tf.constant([png(np.zeros((32, 32), np.uint8))]),
        )
    record = read_raw_examples(demo_pipeline[2], "test")[0]
    again = predict(
        image_bytes=tf.constant([field(record, C.IMAGE)]), mask_bytes=tf.constant([b""])
    )
    assert again[C.ROI_SOURCE].numpy().tolist() == [b"predicted"]


def test_warmup_requests_parse_and_serve_dev_replays_them(demo_pipeline):
    """TF Serving's warm-up file: PredictionLogs for every predict signature, both ROI paths;
    serve-dev replays them when it loads the version."""
    from pathlib import Path

    from modules.warmup import read_warmup_requests
    from serving.dev.model_store import Servable

    model_dir = demo_pipeline[1]
    logs = read_warmup_requests(model_dir)
    names = [log.predict_log.request.model_spec.signature_name for log in logs]
    assert sorted(set(names)) == sorted(C.PREDICT_SIGNATURES)
    masks = [
        tf.make_ndarray(log.predict_log.request.inputs[C.MASK_BYTES]).tolist()
        for log in logs
        if log.predict_log.request.model_spec.signature_name == C.PREDICT_IMAGES
    ]
    assert [all(m == b"" for m in ms) for ms in masks] == [True, False]  # without / with
    servable = Servable("lesionlens", 1, Path(model_dir))
    assert servable.warmup_requests == len(logs) == 5


def test_a_run_imports_the_segmenter_another_run_trained(installed, demo_pipeline, served):
    """`--segmenter-model`: a run that differs from another only after the segmenter (here
    SMOTE off) imports its trained segmenter instead of training it again: no segmenter
    Trainer in the run, the same test Dice, the same ROI for every request without a mask."""
    from conftest import DEMO_RUN, run_python
    from ml_metadata import metadata_store

    from lesionlens.report.run_variant import newest_model

    cfg, _, records = demo_pipeline
    segmenter = newest_model(cfg.pipeline_root, "segmenter_trainer")
    argv = [*DEMO_RUN, "--smote", "none", "--segmenter-model", segmenter]
    argv[argv.index("out")] = "out_imported"
    out = run_python(installed[1], records.parent, *argv)
    assert "[pipeline] segmenter_importer done" in out and "pushed model:" in out, out[-2000:]

    imported = cfg.replace(output_root=str(records.parent / "out_imported"), smote="none")
    store = metadata_store.MetadataStore(metadata_connection(imported))
    nodes = {c.name.split(".")[-1] for c in store.get_contexts_by_type("node")}
    assert "segmenter_importer" in nodes and "segmenter_trainer" not in nodes, nodes
    res = latest_results(metadata_connection(imported))
    assert res["segmentation"] == latest_results(metadata_connection(cfg))["segmentation"]

    requests = tf.constant([without_mask(r) for r in read_raw_examples(records)])
    ours = served.signatures[C.SERVING_DEFAULT](examples=requests)
    theirs = tf.saved_model.load(res["pushed_destination"]).signatures[C.SERVING_DEFAULT](
        examples=requests
    )
    for key in (C.ROI_SOURCE, C.ROI_MASK):
        np.testing.assert_array_equal(ours[key].numpy(), theirs[key].numpy())


def test_a_wrong_segmenter_model_is_refused_before_the_run(tmp_path):
    from pipeline.config import PipelineConfig

    with pytest.raises(ValueError, match=f"segmenter_model {tmp_path}: no Format-Serving/"):
        PipelineConfig(segmenter_model=str(tmp_path))
    with pytest.raises(ValueError, match="ROI is off"):
        PipelineConfig(roi=False, segmenter_model=str(tmp_path))


def test_a_segmenter_for_other_sizes_is_refused_by_name(demo_pipeline):
    from tfx.utils import path_utils

    from lesionlens.report.run_variant import newest_model
    from modules.segmenter.trainer import SegmenterMismatchError, load_segmenter

    cfg = demo_pipeline[0]
    folder = path_utils.serving_model_path(newest_model(cfg.pipeline_root, "segmenter_trainer"))
    assert load_segmenter(folder, cfg.image_size, cfg.segmenter_size).input_shape[1] == 64
    with pytest.raises(SegmenterMismatchError, match=f"{folder} .*image 64 px, not 96"):
        load_segmenter(folder, 96)
    with pytest.raises(SegmenterMismatchError, match=f"mask {cfg.segmenter_size} px, not 48"):
        load_segmenter(folder, 64, 48)
