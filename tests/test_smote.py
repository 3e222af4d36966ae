"""SMOTE component executor: class counts, untouched eval/test, determinism."""

import glob
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from tfx.types import artifact_utils, standard_artifacts

from modules import contract as C
from modules.smote.executor import Executor
from modules.smote.resample import SmoteMemoryError, smote_images

SIZE = 8


def transformed_example(image: np.ndarray, label: int) -> bytes:
    ex = tf.train.Example()
    f = ex.features.feature
    f[C.IMAGE].bytes_list.value.append(tf.io.serialize_tensor(tf.constant(image)).numpy())
    f[C.LABEL].int64_list.value.append(label)
    f[C.MODALITY].bytes_list.value.append(b"ultrasound")
    f[C.DATASET].bytes_list.value.append(b"synthetic")
    f[C.HAS_MASK].int64_list.value.append(1)
    return ex.SerializeToString()


def write_split(root: str, split: str, counts: dict[int, int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, f"Split-{split}"))
    path = os.path.join(root, f"Split-{split}", "transformed_examples-00000-of-00001.gz")
    with tf.io.TFRecordWriter(path, options="GZIP") as w:
        for label, n in counts.items():
            for _ in range(n):
                img = rng.integers(0, 100, (SIZE, SIZE, 3)) + 120 * label
                w.write(transformed_example(img.astype(np.uint8), label))


def read_labels(split_dir: str) -> list[int]:
    files = glob.glob(os.path.join(split_dir, "*"))
    return [
        tf.train.Example.FromString(r.numpy()).features.feature["label"].int64_list.value[0]
        for r in tf.data.TFRecordDataset(files, compression_type="GZIP")
    ]


def run_executor(tmp_path, name: str, method: str = "pixel", seed: int = 7):
    src = standard_artifacts.Examples()
    src.uri = str(tmp_path / "in")
    src.split_names = artifact_utils.encode_split_names(["train", "eval", "test"])
    if not os.path.exists(src.uri):
        write_split(src.uri, "train", {0: 30, 1: 12}, 0)
        write_split(src.uri, "eval", {0: 5, 1: 2}, 1)
        write_split(src.uri, "test", {0: 5, 1: 3}, 2)
    dst = standard_artifacts.Examples()
    dst.uri = str(tmp_path / name)
    props = {
        "method": method,
        "k_neighbors": 5,
        "seed": seed,
        "target_ratio": 1.0,
        "max_memory_gb": 1.0,
        "resample_splits": '["train"]',
        "code_version": "test",
    }
    Executor().Do({"examples": [src]}, {"resampled_examples": [dst]}, props)
    return src, dst


def split_files(artifact, split):
    d = artifact_utils.get_split_uri([artifact], split)
    return {os.path.basename(p): open(p, "rb").read() for p in glob.glob(os.path.join(d, "*"))}


def test_train_rebalanced_to_parity_eval_test_copied_byte_for_byte(tmp_path):
    src, dst = run_executor(tmp_path, "out")
    labels = read_labels(artifact_utils.get_split_uri([dst], "train"))
    assert labels.count(0) == 30 and labels.count(1) == 30
    for split in ("eval", "test"):
        assert split_files(dst, split) == split_files(src, split)
    assert artifact_utils.decode_split_names(dst.split_names) == ["train", "eval", "test"]
    stats = json.loads(dst.get_string_custom_property("smote_class_counts"))
    assert stats["train"] == {"before": {"0": 30, "1": 12}, "after": {"0": 30, "1": 30}}


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    _, a = run_executor(tmp_path, "a", seed=7)
    _, b = run_executor(tmp_path, "b", seed=7)
    _, c = run_executor(tmp_path, "c", seed=8)
    assert split_files(a, "train") == split_files(b, "train")
    assert split_files(a, "train") != split_files(c, "train")


def test_method_none_copies_train_unchanged(tmp_path):
    _, dst = run_executor(tmp_path, "none", method="none")
    labels = read_labels(artifact_utils.get_split_uri([dst], "train"))
    assert labels.count(0) == 30 and labels.count(1) == 12


def test_synthetic_images_interpolate_between_minority_samples():
    rng = np.random.default_rng(0)
    images = np.concatenate([np.zeros((10, 4, 4, 3)), np.full((4, 4, 4, 3), 200.0)])
    images[10:] += rng.integers(0, 20, (4, 4, 4, 3))
    labels = np.array([0] * 10 + [1] * 4)
    new, new_labels = smote_images(
        images.astype(np.uint8), labels, k_neighbors=5, seed=1, target_ratio=1.0, max_memory_gb=1
    )
    assert new.shape == (6, 4, 4, 3) and new.dtype == np.uint8
    assert set(new_labels.tolist()) == {1}
    assert new.min() >= 200 and new.max() <= 220  # inside the minority class's pixel range


def test_memory_budget_is_enforced():
    images = np.zeros((20, 64, 64, 3), np.uint8)
    labels = np.array([0] * 15 + [1] * 5)
    with pytest.raises(SmoteMemoryError, match="max_memory_gb"):
        smote_images(images, labels, k_neighbors=5, seed=1, target_ratio=1.0, max_memory_gb=1e-4)


def test_unknown_method_fails_when_the_pipeline_is_built(tmp_path):
    from pipeline.config import profile

    with pytest.raises(ValueError, match="'pixels' is not a valid SmoteMethod"):
        profile("demo", smote="pixels")


def test_synthetic_examples_carry_no_mask(tmp_path):
    """A blend of two images has no outline of its own: the joint network must not train a
    template's mask on it (it reads has_mask = 0 as "class loss only")."""
    _, dst = run_executor(tmp_path, "out")
    files = glob.glob(os.path.join(artifact_utils.get_split_uri([dst], "train"), "*"))
    flags = [
        tf.train.Example.FromString(r.numpy()).features.feature[C.HAS_MASK].int64_list.value[0]
        for r in tf.data.TFRecordDataset(files, compression_type="GZIP")
    ]
    assert flags.count(1) == 42 and flags.count(0) == 18  # the real ones, then 18 new
