"""A pipeline run with `--architecture joint` on generated data, from the installed package:
no segmenter is trained, the pushed model honours the serving contract in one network
(`lesion_probability` beside `gradcam`, the no-mask path drawing its own ROI), and its
`lesionlens.json` and card say which architecture and which explanation."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
from conftest import DEMO_RUN, read_raw_examples, run_python
from ml_metadata import metadata_store

from modules import contract as C
from pipeline.local import metadata_connection
from pipeline.results import latest_results

pytestmark = pytest.mark.pipeline

JOINT = ["--architecture", "joint", "--backbone", "efficientnet-lite0", "--weights", "imagenet"]
JOINT += ["--head-epochs", "1", "--freeze-bn", "--kept-epoch", "best_eval_auc"]
JOINT += ["--min-dice", "0"]  # one epoch of 64 px: the map's gate is tested, not its quality


@pytest.fixture(scope="module")
def joint_run(installed, demo_pipeline, tmp_path_factory):
    cfg, _, records = demo_pipeline
    argv = [*DEMO_RUN, *JOINT]
    argv[argv.index("out")] = "out_joint"
    env = {**installed[1], "LESIONLENS_CACHE_DIR": str(tmp_path_factory.mktemp("cache"))}
    out = run_python(env, records.parent, *argv)
    assert "pushed model:" in out, out[-2000:]
    joint = cfg.replace(
        output_root=str(records.parent / "out_joint"),
        architecture="joint",
        roi=False,
        backbone="efficientnet-lite0",
    )
    return joint, latest_results(metadata_connection(joint)), records


def test_no_segmenter_is_trained_and_the_lesion_map_is_scored(joint_run):
    cfg, res, _ = joint_run
    store = metadata_store.MetadataStore(metadata_connection(cfg))
    nodes = {c.name.split(".")[-1] for c in store.get_contexts_by_type("node")}
    assert "Trainer" in nodes and not any("segmenter" in n.lower() for n in nodes), nodes
    assert "lesion_map_evaluation" in nodes
    overall = res["segmentation"]["slices"]["overall"]
    assert overall["example_count"] > 0 and 0.0 <= overall["metrics"]["dice"] <= 1.0


def test_the_pushed_joint_model_honours_the_serving_contract(joint_run):
    _, res, records = joint_run
    model = tf.saved_model.load(res["pushed_destination"])
    raw = read_raw_examples(records)
    n = len(raw)
    full = model.signatures[C.SERVING_DEFAULT](examples=tf.constant(raw))
    assert set(C.PREDICT_OUTPUTS) | {C.LESION_PROBABILITY} == set(full)
    assert full[C.GRADCAM].shape == (n, 2, 2) and full[C.LESION_PROBABILITY].shape == (n, 16, 16)
    assert set(full[C.ROI_SOURCE].numpy().tolist()) == {b"given"}  # the records carry masks
    no_mask = model.signatures[C.PREDICT_NO_MASK](examples=tf.constant(raw))
    assert set(no_mask) == set(C.CLASS_OUTPUTS)
    assert {s.decode() for s in no_mask[C.ROI_SOURCE].numpy()} <= {C.ROI_PREDICTED, C.ROI_NONE}
    images = [
        tf.train.Example.FromString(r).features.feature[C.IMAGE].bytes_list.value[0] for r in raw
    ]
    by_bytes = model.signatures[C.PREDICT_IMAGES](
        image_bytes=tf.constant(images), mask_bytes=tf.constant([b""] * n)
    )
    # two graphs, one network: the same answer up to float rounding
    np.testing.assert_allclose(
        by_bytes[C.PROBABILITIES].numpy(), no_mask[C.PROBABILITIES].numpy(), atol=1e-5
    )
    heat = by_bytes[C.GRADCAM].numpy()
    assert heat.min() >= 0.0 and heat.max() <= 1.0 + 1e-6


def test_the_run_records_architecture_and_explanation(joint_run):
    _, res, _ = joint_run
    pushed = res["pushed_destination"]
    with open(os.path.join(pushed, C.MODEL_INFO)) as f:
        info = json.load(f)
    assert info["architecture"] == "joint" and info["mask_loss_weight"] == 1.0
    assert info["explanation"].startswith("HiResCAM of the decided class")
    assert "lesion_probability_loss" in info["history"]
    card = open(os.path.join(pushed, "assets.extra", "model_card.md")).read()
    assert "EfficientNet-Lite0 + joint lesion map + HiResCAM" in card
    assert "Architecture: joint (shared encoder" in card
    assert "Dice" in card  # the lesion map's test Dice, from lesion_map_evaluation
