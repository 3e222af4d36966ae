"""Synthetic datasets: layouts, determinism, and the synth -> ingest round trip."""

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lesionlens import synth
from lesionlens.cli import main
from lesionlens.ingest.job import IngestConfig, run

N = 10  # per class: benign (5), benign (10) and malignant (7) have a second mask
SIZE = 32
LABEL_OF = {"benign": 0, "malignant": 1, "healthy": 0, "sick": 1}


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _expected_union(*mask_paths: Path) -> np.ndarray:
    union = None
    for p in mask_paths:
        m = np.asarray(Image.open(p).convert("L")) > 0
        union = m if union is None else union | m
    return union


def _decode_mask(data: bytes) -> np.ndarray:
    img = Image.open(io.BytesIO(data))
    assert img.format == "PNG"
    assert img.mode == "L", "mask must be a single-channel PNG"
    return np.asarray(img)


# --------------------------------------------------------------------------- generator


def test_busi_layout_files_and_counts(tmp_path):
    summary = synth.generate(tmp_path, layout="busi", n=N, size=SIZE, seed=3)
    assert summary["counts"] == {"benign": N, "malignant": N, "normal": N}
    assert summary["images"] == 3 * N
    for label in synth.BUSI_CLASSES:
        for i in range(1, N + 1):
            img = Image.open(tmp_path / label / f"{label} ({i}).png")
            assert img.format == "PNG" and img.mode == "RGB"
            assert img.size == (SIZE, round(SIZE * 0.8))
            mask = Image.open(tmp_path / label / f"{label} ({i})_mask.png")
            assert mask.size == img.size
            expected_mode = "RGB" if label == "normal" else synth.MASK_MODES[(i - 1) % 3]
            assert mask.mode == expected_mode
            extra = (label == "benign" and i % 5 == 0) or (label == "malignant" and i % 7 == 0)
            assert (tmp_path / label / f"{label} ({i})_mask_1.png").exists() == extra
            union = _expected_union(*sorted((tmp_path / label).glob(f"{label} ({i})_mask*.png")))
            if label == "normal":
                assert not union.any(), "normal masks are empty"
            else:
                assert union.sum() > 0, f"{label} ({i}) has an empty lesion mask"
    marker = json.loads((tmp_path / synth.MARKER).read_text())
    assert marker["generator"] == "lesionlens.synth"
    assert marker["layout"] == "busi" and marker["n"] == N and marker["seed"] == 3
    assert marker["counts"] == summary["counts"]


def test_busi_split_masks_are_disjoint_halves(tmp_path):
    synth.generate(tmp_path, layout="busi", n=5, size=SIZE, seed=0)
    first = np.asarray(Image.open(tmp_path / "benign" / "benign (5)_mask.png").convert("L")) > 0
    second = np.asarray(Image.open(tmp_path / "benign" / "benign (5)_mask_1.png").convert("L")) > 0
    assert first.any() and second.any()
    assert not (first & second).any()
    assert abs(int(first.sum()) - int(second.sum())) <= 1


def test_generate_is_deterministic(tmp_path):
    a = synth.generate(tmp_path / "a", layout="busi", n=4, size=SIZE, seed=5)
    b = synth.generate(tmp_path / "b", layout="busi", n=4, size=SIZE, seed=5)
    c = synth.generate(tmp_path / "c", layout="busi", n=4, size=SIZE, seed=6)
    assert a["counts"] == b["counts"] == c["counts"]
    fa, fb, fc = _files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")
    assert fa == fb
    assert fa.keys() == fc.keys()
    assert fa["benign/benign (1).png"] != fc["benign/benign (1).png"]
    # each image has its own stream: a larger n leaves the first images unchanged
    synth.generate(tmp_path / "d", layout="busi", n=6, size=SIZE, seed=5)
    fd = _files(tmp_path / "d")
    assert all(fd[k] == v for k, v in fa.items() if k != synth.MARKER)


def test_mri_layout_flat_and_split(tmp_path):
    flat = synth.generate(tmp_path / "flat", layout="mri", n=N, size=SIZE, seed=1)
    assert flat["counts"] == {"Healthy": N, "Sick": N}
    for label in synth.MRI_CLASSES:
        for i in range(1, N + 1):
            img = Image.open(tmp_path / "flat" / label / f"{label.lower()}_{i:03d}.jpg")
            assert img.format == "JPEG" and img.size == (SIZE, SIZE)
            assert img.mode == ("RGB" if i % 2 == 0 else "L")
    assert not list((tmp_path / "flat").rglob("*mask*"))

    split = synth.generate(
        tmp_path / "split", layout="mri", n=N, size=SIZE, seed=1, mri_splits=True
    )
    assert split["counts"] == {  # 70/15/15 of 10 by index: 7 / 2 / 1
        "test/Healthy": 1,
        "test/Sick": 1,
        "train/Healthy": 7,
        "train/Sick": 7,
        "validation/Healthy": 2,
        "validation/Sick": 2,
    }
    for rel, count in split["counts"].items():
        assert len(list((tmp_path / "split" / rel).glob("*.jpg"))) == count
    # same seed, same pixels whether or not the files are put under split folders
    assert (tmp_path / "flat/Sick/sick_001.jpg").read_bytes() == (
        tmp_path / "split/train/Sick/sick_001.jpg"
    ).read_bytes()


@pytest.mark.parametrize("n", [1, 2, 3, 10, 40, 101])
def test_mri_split_sizes(n):
    sizes = synth._split_sizes(n)
    assert sum(sizes) == n and min(sizes) >= 0
    if n >= 3:
        assert sizes[1] >= 1 and sizes[2] >= 1
    if n >= 20:
        assert all(abs(s - f * n) <= 1 for s, f in zip(sizes, (0.7, 0.15, 0.15), strict=True))


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"layout": "ct"}, "unknown layout"),
        ({"n": 0}, "n (images per class)"),
        ({"size": 8}, "size"),
        ({"seed": -1}, "seed"),
    ],
)
def test_generate_rejects_bad_arguments(tmp_path, kwargs, words):
    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
        synth.generate(tmp_path, **kwargs)


def test_synth_cli(tmp_path, capsys):
    rc = main(["synth", str(tmp_path / "d"), "--layout", "mri", "--n", "3", "--size", "16"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "total: 6 images (mri)" in out
    assert len(list((tmp_path / "d").rglob("*.jpg"))) == 6


# --------------------------------------------------------------------------- round trip


@pytest.fixture(scope="module")
def busi_round_trip(tmp_path_factory, read_examples):
    root = tmp_path_factory.mktemp("busi_rt")
    src = root / "src"
    synth.generate(src, layout="busi", n=N, size=SIZE, seed=11)
    manifest = run(IngestConfig(src=str(src), out=str(root / "out"), protocol="paper", seed=1))
    return src, manifest, read_examples(root / "out")


@pytest.fixture(scope="module", params=[False, True], ids=["mri-flat", "mri-splits"])
def mri_round_trip(request, tmp_path_factory, read_examples):
    root = tmp_path_factory.mktemp("mri_rt")
    src = root / "src"
    summary = synth.generate(src, layout="mri", n=N, size=SIZE, seed=12, mri_splits=request.param)
    manifest = run(IngestConfig(src=str(src), out=str(root / "out"), protocol="paper", seed=1))
    return src, summary, manifest, read_examples(root / "out")


def _class_totals(manifest: dict) -> dict[str, int]:
    totals: dict[str, int] = {}
    for per_class in manifest["counts"].values():
        for name, count in per_class.items():
            totals[name] = totals.get(name, 0) + count
    return totals


def _split_counts(rows: dict) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    for image_id, row in rows.items():
        name = Path(image_id).parent.name.lower()
        counts.setdefault(row["split"], {}).setdefault(name, 0)
        counts[row["split"]][name] += 1
    return counts


def test_busi_round_trip_manifest(busi_round_trip):
    src, manifest, rows = busi_round_trip
    assert manifest["layout"] == "busi"
    assert manifest["modality"] == "ultrasound"
    assert manifest["dataset"] == "synthetic"
    assert manifest["classes"] == {"benign": 0, "malignant": 1}
    assert manifest["examples"] == 2 * N == len(rows)
    assert _class_totals(manifest) == {"benign": N, "malignant": N}
    assert manifest["excluded_classes"] == {"normal": N}
    assert manifest["skipped"] == []
    # paper protocol: 6 of 20 held out, halved 3 / 3; the odd image per half goes by class order
    assert manifest["counts"] == {
        "train": {"benign": 7, "malignant": 7},
        "eval": {"benign": 2, "malignant": 1},
        "test": {"benign": 1, "malignant": 2},
    }
    assert _split_counts(rows) == manifest["counts"]
    assert json.loads((Path(manifest["source"]).parent / "out" / "manifest.json").read_text()) == (
        manifest
    )


def test_busi_round_trip_examples(busi_round_trip):
    src, _, rows = busi_round_trip
    expected_ids = {f"{c}/{c} ({i}).png" for c in ("benign", "malignant") for i in range(1, N + 1)}
    assert set(rows) == expected_ids
    for image_id, row in rows.items():
        prefix = Path(image_id).name.split(" ")[0]
        assert row["label"] == LABEL_OF[prefix], image_id
        assert row["modality"] == b"ultrasound"
        assert row["dataset"] == b"synthetic"
        assert row["group_id"].decode() in expected_ids
        assert row["image"] == (src / image_id).read_bytes(), f"{image_id}: image bytes changed"
        mask = _decode_mask(row["mask"])
        stem = Path(image_id).with_suffix("")
        expected = _expected_union(*sorted(src.glob(f"{stem}_mask*.png")))
        assert mask.shape == expected.shape
        assert set(np.unique(mask)) <= {0, 255}
        np.testing.assert_array_equal(mask, expected.astype(np.uint8) * 255)


def test_busi_mask_union_of_two_masks(busi_round_trip):
    src, _, rows = busi_round_trip
    first, second = src / "benign" / "benign (5)_mask.png", src / "benign" / "benign (5)_mask_1.png"
    assert first.exists() and second.exists()
    expected = _expected_union(first, second)
    assert expected.sum() > _expected_union(first).sum() > 0
    assert expected.sum() > _expected_union(second).sum() > 0
    mask = _decode_mask(rows["benign/benign (5).png"]["mask"])
    np.testing.assert_array_equal(mask, np.where(expected, 255, 0).astype(np.uint8))


def test_mri_round_trip(mri_round_trip):
    src, summary, manifest, rows = mri_round_trip
    assert manifest["layout"] == "mri"
    assert manifest["modality"] == "mri"
    assert manifest["dataset"] == "synthetic"
    assert manifest["classes"] == {"healthy": 0, "sick": 1}
    assert manifest["skipped"] == []
    assert manifest["examples"] == summary["images"] == 2 * N == len(rows)
    assert _class_totals(manifest) == {"healthy": N, "sick": N}
    assert _split_counts(rows) == manifest["counts"]
    assert manifest["counts"] == {  # the paper split's rounding, as for BUSI above
        "train": {"healthy": 7, "sick": 7},
        "eval": {"healthy": 2, "sick": 1},
        "test": {"healthy": 1, "sick": 2},
    }
    generated = {str(p.relative_to(src)) for p in src.rglob("*.jpg")}
    assert set(rows) == generated
    for image_id, row in rows.items():
        prefix = Path(image_id).name.split("_")[0]
        assert row["label"] == LABEL_OF[prefix], image_id
        assert Path(image_id).parent.name.lower() == prefix
        assert row["modality"] == b"mri"
        assert row["dataset"] == b"synthetic"
        assert row["mask"] == b"", "MRI has no masks: mask must be empty bytes"
        assert row["image"] == (src / image_id).read_bytes(), f"{image_id}: image bytes changed"
        assert row["group_id"].decode() in generated


def test_handcrafted_mask_union(tmp_path, read_examples):
    src = tmp_path / "src"
    (src / "benign").mkdir(parents=True)
    h, w = 6, 8
    Image.fromarray(np.full((h, w, 3), 90, dtype=np.uint8)).save(src / "benign" / "case.png")
    a = np.zeros((h, w), dtype=bool)
    a[1:4, 1:4] = True  # 1-bit mask, top left block
    Image.fromarray(a).convert("1").save(src / "benign" / "case_mask.png")
    b = np.zeros((h, w, 3), dtype=np.uint8)
    b[3:5, 3:7] = (255, 255, 255)  # overlaps a at (3, 3)
    b[0, 7] = (128, 0, 0)  # dim red: still lesion after reducing to one channel
    Image.fromarray(b).save(src / "benign" / "case_mask_1.png")
    assert Image.open(src / "benign" / "case_mask.png").mode == "1"
    assert Image.open(src / "benign" / "case_mask_1.png").mode == "RGB"
    expected = np.zeros((h, w), dtype=np.uint8)
    expected[1:4, 1:4] = 255
    expected[3:5, 3:7] = 255
    expected[0, 7] = 255
    assert (expected > 0).sum() == 9 + 8 - 1 + 1

    manifest = run(IngestConfig(src=str(src), out=str(tmp_path / "out"), layout="busi"))
    assert manifest["examples"] == 1
    assert manifest["dataset"] == "busi", "no synth marker: dataset comes from the layout"
    row = read_examples(tmp_path / "out")["benign/case.png"]
    np.testing.assert_array_equal(_decode_mask(row["mask"]), expected)
    assert row["label"] == 0 and row["group_id"] == b"benign/case.png"
