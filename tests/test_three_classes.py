"""The paper's three-class setting (benign / malignant / normal, its Table 7) end to end on
generated data: three outputs, the exported threshold still decides the malignant call,
multi-class metrics in TFMA and, with intervals, in BootstrapIntervals, and the empty-mask
shortcut measured beside the model."""

import json
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_model_analysis as tfma
from conftest import THREE_CLASS_RUN, THREE_CLASSES, read_raw_examples
from ml_metadata import metadata_store

from modules import contract as C
from pipeline.local import metadata_connection


def test_records_and_config_must_agree_on_the_classes(three_class_run, installed):
    """Two-class flags on three-class records stop before any component runs."""
    root = three_class_run[3]
    args = [a for a in THREE_CLASS_RUN if a not in ("--classes", THREE_CLASSES)] + [
        "--output-root",
        "out2",
    ]
    proc = subprocess.run(
        [sys.executable, *args], cwd=root, env=installed[1], capture_output=True, text=True
    )
    assert proc.returncode == 2
    said = proc.stdout + proc.stderr
    assert "manifest.json: the records hold classes benign, malignant, normal" in said
    assert "--classes benign,malignant,normal" in said
    assert not (root / "out2").exists()


def test_served_model_has_three_outputs_and_the_threshold_decides_malignant(three_class_run):
    cfg, res, _, root = three_class_run
    model = tf.saved_model.load(res["pushed_destination"])
    records = read_raw_examples(root / "records", "test")
    out = model.signatures[C.PREDICT_ONLY](**{C.EXAMPLES: tf.constant(records)})
    probs, class_id = out[C.PROBABILITIES].numpy(), out[C.CLASS_ID].numpy()
    threshold = float(out[C.THRESHOLD].numpy()[0])
    assert probs.shape == (len(records), 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(out[C.POSITIVE_PROBABILITY].numpy(), probs[:, 1])
    masked = np.where(np.arange(3) == C.POSITIVE_LABEL, -1.0, probs)
    expected = np.where(probs[:, 1] >= threshold, 1, masked.argmax(axis=1))
    np.testing.assert_array_equal(class_id, expected)
    np.testing.assert_array_equal(out[C.CLASS_ONE_HOT].numpy(), np.eye(3)[class_id])
    info = json.loads((tf.io.gfile.GFile(f"{res['pushed_destination']}/{C.MODEL_INFO}")).read())
    assert info["classes"] == ["benign", "malignant", "normal"]


def test_multiclass_metrics_in_tfma_and_with_intervals(three_class_run):
    cfg, res, out, _ = three_class_run
    report = res["multiclass"]
    assert report["classes"] == ["benign", "malignant", "normal"]
    overall = report["slices"]["overall"]
    n = overall["example_count"]
    matrix = np.array(overall["confusion_matrix"])
    assert matrix.shape == (3, 3) and matrix.sum() == n
    assert overall["metrics"]["accuracy"] == pytest.approx(np.trace(matrix) / n)
    for k, name in enumerate(report["classes"]):
        assert overall["metrics"][f"sensitivity/{name}"] == pytest.approx(
            matrix[k, k] / matrix[k].sum()
        )
        lo, hi = overall["intervals"][f"auc/{name}"]
        assert lo <= overall["metrics"][f"auc/{name}"] <= hi
    aucs = [overall["metrics"][f"auc/{name}"] for name in report["classes"]]
    assert overall["metrics"]["macro_auc"] == pytest.approx(np.mean(aucs))
    assert "oracle_slices" in report and "label=2" in report["slices"]
    per_image = res["per_image"]
    argmax = np.asarray(per_image["deployable"]["probabilities"]).argmax(axis=1)
    assert report["argmax"]["deployable"]["metrics"]["accuracy"] == pytest.approx(
        (argmax == np.asarray(per_image["label"])).mean()
    )
    # TFMA computed the same served call's per-class metrics (the `decision` output) and
    # the per-class AUCs (the `probabilities` output)
    store = metadata_store.MetadataStore(metadata_connection(cfg))
    evaluation = max(store.get_artifacts_by_type("ModelEvaluation"), key=lambda a: a.id)
    result = tfma.load_eval_result(evaluation.uri)
    overall_tfma = dict(result.slicing_metrics)[()]
    decision = overall_tfma[C.CLASS_ONE_HOT]
    for k, name in enumerate(report["classes"]):
        recall = decision[f"classId:{k}"]["recall"]["doubleValue"]
        assert recall == pytest.approx(overall["metrics"][f"sensitivity/{name}"], abs=1e-6)
    assert "classId:2" in overall_tfma[C.PROBABILITIES]
    # the binary metrics are malignant against the rest, at the exported threshold
    assert res["metrics"]["overall"]["example_count"] == n
    assert "three classes, without masks (deployable): accuracy" in out


def test_empty_mask_shortcut_is_measured_beside_the_model(three_class_run):
    """Generated `normal` images, like BUSI's, are the ones without a lesion mask: the mask
    alone finds every normal image, and the report says what that rule scores."""
    _, res, out, _ = three_class_run
    report = res["multiclass"]
    counts = np.array(report["slices"]["overall"]["confusion_matrix"]).sum(axis=1)
    shortcut = report["shortcuts"]["empty_mask_is_normal"]
    assert shortcut["metrics"]["sensitivity/normal"] == 1.0
    assert shortcut["metrics"]["specificity/normal"] == 1.0
    # normal where the mask is empty, the commonest other class elsewhere
    assert shortcut["metrics"]["accuracy"] == pytest.approx(
        (counts[2] + counts[:2].max()) / counts.sum()
    )
    assert "no_roi_found_is_normal" in report["shortcuts"]
    assert '"empty mask => normal" (ORACLE' in out
