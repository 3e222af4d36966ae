"""Ingestion: splits, near-duplicate groups, bad inputs, the CLI and the real BUSI data."""

import gzip
import io
import json
import re
import shutil
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from conftest import bomb_png
from PIL import Image

from lesionlens import synth
from lesionlens.cli import main
from lesionlens.ingest import splits
from lesionlens.ingest.job import IngestConfig, IngestError, run
from modules import contract as C

SPLITS = C.SPLITS
FRACTIONS = (0.70, 0.15, 0.15)


def _per_class_split(rows: dict) -> dict[str, Counter]:
    """class folder -> Counter(split -> n), from TFRecord rows."""
    out: dict[str, Counter] = defaultdict(Counter)
    for image_id, row in rows.items():
        out[Path(image_id).parent.name.lower()][row["split"]] += 1
    return out


def _membership(rows: dict) -> dict[str, str]:
    return {image_id: row["split"] for image_id, row in rows.items()}


def _assert_groups_in_one_split(rows: dict) -> dict[str, set]:
    split_of_group: dict[str, set] = defaultdict(set)
    for row in rows.values():
        split_of_group[row["group_id"].decode()].add(row["split"])
    spanning = {g: s for g, s in split_of_group.items() if len(s) > 1}
    assert not spanning, f"near-duplicate groups in several splits: {spanning}"
    return split_of_group


def _copy_case(pool: Path, src: Path, label: str, i: int, new: str | None = None) -> None:
    """Copies image `label (i)` and its masks from a synthetic pool, optionally renamed."""
    (src / label).mkdir(parents=True, exist_ok=True)
    stem = f"{label} ({i})"
    for f in sorted((pool / label).glob(f"{stem}*.png")):
        if f.stem == stem or f.stem.startswith(f"{stem}_mask"):
            target = f.name if new is None else f.name.replace(stem, new, 1)
            shutil.copy(f, src / label / target)


@pytest.fixture(scope="module")
def pool(tmp_path_factory) -> Path:
    """A synthetic BUSI pool to copy cases from."""
    root = tmp_path_factory.mktemp("pool")
    synth.generate(root, layout="busi", n=12, size=32, seed=21)
    return root


# --------------------------------------------------------------------------- splits.py units


def _hex(x: int) -> str:
    return f"{x:016x}"


def test_near_duplicate_groups_distances_and_transitivity():
    items = [
        splits.Item("a", 0, _hex(0)),
        splits.Item("b", 0, _hex(0)),  # distance 0 to a
        splits.Item("c", 1, _hex(0b111)),  # distance 3 to a
        splits.Item("d", 0, _hex(0x7F)),  # distance 7 to a, 4 to c: joins through c
        splits.Item("e", 1, _hex(0xFE << 56)),  # >= 7 from everyone above
        splits.Item("f", 0, _hex(0xFFFF_FFFF_FFFF_FFFF)),  # top bit set: uint64 edge
        splits.Item("g", 1, _hex(0xFFFF_FFFF_FFFF_FFF0)),  # distance 4 to f
    ]
    groups = splits.near_duplicate_groups(items, max_distance=6)
    assert groups == {"a": "a", "b": "a", "c": "a", "d": "a", "e": "e", "f": "f", "g": "f"}
    # d is 7 bits from a: without c in between it stays alone
    no_c = [it for it in items if it.image_id != "c"]
    assert splits.near_duplicate_groups(no_c, 6)["d"] == "d"
    assert splits.near_duplicate_groups(items, 2) == {
        "a": "a",
        "b": "a",
        "c": "c",
        "d": "d",
        "e": "e",
        "f": "f",
        "g": "g",
    }
    assert set(splits.near_duplicate_groups(items, 0).values()) == {"a", "c", "d", "e", "f", "g"}
    # the group id is the smallest member id, whatever the input order
    assert splits.near_duplicate_groups(list(reversed(items)), 6) == groups


def test_near_duplicate_groups_many_blocks():
    """More items than one comparison block (1024): pairs across blocks still join."""
    rng = np.random.default_rng(0)
    base = rng.integers(0, 2**63, size=1500, dtype=np.int64).astype(np.uint64)
    base |= np.uint64(1) << np.uint64(63)
    items = [splits.Item(f"x{i:04d}", 0, _hex(int(h))) for i, h in enumerate(base)]
    items.append(splits.Item("y", 0, _hex(int(base[1400]) ^ 0b1)))  # near x1400 (block 2)
    items.append(splits.Item("z", 0, _hex(int(base[3]) ^ 0b11)))  # near x0003 (block 1)
    groups = splits.near_duplicate_groups(items, 6)
    assert groups["y"] == "x1400" and groups["z"] == "x0003"
    # random 64-bit hashes are ~32 bits apart: nothing else is grouped
    assert sum(1 for k, g in groups.items() if k != g) == 2


def _grouped_fixture() -> tuple[list, dict]:
    items, groups = [], {}
    rng = np.random.default_rng(3)
    k = 0
    for label, n_groups in ((0, 40), (1, 20)):
        for _ in range(n_groups):
            size = int(rng.choice([1, 1, 1, 2, 3, 5]))
            gid = f"{label}-{k:03d}-0"
            for m in range(size):
                iid = f"{label}-{k:03d}-{m}"
                items.append(splits.Item(iid, label, "0" * 16))
                groups[iid] = gid
            k += 1
    # one mixed-label group: two benign and one malignant member
    for m, label in enumerate((0, 0, 1)):
        iid = f"mix-{m}"
        items.append(splits.Item(iid, label, "0" * 16))
        groups[iid] = "mix-0"
    return items, groups


def test_grouped_split_keeps_groups_whole_and_near_targets():
    items, groups = _grouped_fixture()
    out = splits.grouped_split(items, groups, FRACTIONS, seed=5)
    assert set(out) == {it.image_id for it in items}
    assert set(out.values()) == set(SPLITS)
    split_of_group = defaultdict(set)
    for iid, s in out.items():
        split_of_group[groups[iid]].add(s)
    assert all(len(s) == 1 for s in split_of_group.values()), split_of_group
    # per class, every split is within the largest group size (5) of its target
    by_class = defaultdict(Counter)
    for it in items:
        by_class[it.label][out[it.image_id]] += 1
    for label, counts in by_class.items():
        n = sum(counts.values())
        for s, f in zip(SPLITS, FRACTIONS, strict=True):
            assert abs(counts[s] - f * n) <= 5, (label, dict(counts), n)
    assert splits.grouped_split(items, groups, FRACTIONS, seed=5) == out
    assert splits.grouped_split(items, groups, FRACTIONS, seed=6) != out


def test_label_conflicts_finds_mixed_groups_only():
    items, groups = _grouped_fixture()
    conflicts = splits.label_conflicts(items, groups)
    assert conflicts == [{"group_id": "mix-0", "members": {"mix-0": 0, "mix-1": 0, "mix-2": 1}}]
    pure = [it for it in items if not it.image_id.startswith("mix")]
    assert splits.label_conflicts(pure, groups) == []


def test_leakage_counts_held_out_images_with_a_twin_in_train():
    groups = {"a": "a", "a2": "a", "a3": "a", "b": "b", "b2": "b", "c": "c", "d": "d", "d2": "d"}
    assignment = {
        "a": "train", "a2": "test", "a3": "test",  # twins in train: both test images count
        "b": "eval", "b2": "test",  # spans eval/test, nothing in train
        "c": "test",
        "d": "train", "d2": "eval",
    }  # fmt: skip
    assert splits.leakage(assignment, groups) == {
        "groups_spanning_splits": 3,
        "eval_with_duplicate_in_train": 1,
        "test_with_duplicate_in_train": 2,
    }
    items, fixture_groups = _grouped_fixture()
    grouped = splits.grouped_split(items, fixture_groups, FRACTIONS, seed=5)
    assert set(splits.leakage(grouped, fixture_groups).values()) == {0}


def test_paper_split_counts_and_determinism():
    items = [splits.Item(f"b{i:02d}", 0, "0" * 16) for i in range(40)]
    items += [splits.Item(f"m{i:02d}", 1, "0" * 16) for i in range(21)]
    out = splits.paper_split(items, FRACTIONS, seed=1)
    counts = {lab: Counter(out[it.image_id] for it in items if it.label == lab) for lab in (0, 1)}
    # 61 images: ceil(18.3) = 19 held out, 42 train = 27.54 + 14.46 -> 28 + 14; the 19 held out
    # (12 + 7) give eval ceil(9.5) = 10 = 6.32 + 3.68 -> 6 + 4, test 6 + 3 (scikit-learn's counts)
    assert counts[0] == {"train": 28, "eval": 6, "test": 6}
    assert counts[1] == {"train": 14, "eval": 4, "test": 3}
    assert splits.paper_split(list(reversed(items)), FRACTIONS, seed=1) == out
    other = splits.paper_split(items, FRACTIONS, seed=2)
    assert other != out
    assert Counter(other.values()) == Counter(out.values())
    eighty = splits.paper_split(items, (0.8, 0.1, 0.1), seed=1)
    assert Counter(eighty[f"b{i:02d}"] for i in range(40)) == {"train": 31, "eval": 5, "test": 4}
    assert Counter(eighty[f"m{i:02d}"] for i in range(21)) == {"train": 17, "eval": 2, "test": 2}


# --------------------------------------------------------------------------- split fractions


@pytest.fixture(scope="module")
def split_runs(tmp_path_factory, read_examples):
    """Synthetic BUSI, 40 per class, ingested with several protocols and seeds."""
    root = tmp_path_factory.mktemp("split_runs")
    src = root / "src"
    synth.generate(src, layout="busi", n=40, size=32, seed=2)
    out = {}
    for name, protocol, seed in [
        ("paper7", "paper", 7),
        ("paper7b", "paper", 7),
        ("paper8", "paper", 8),
        ("grouped7", "grouped", 7),
        ("grouped7b", "grouped", 7),
        ("grouped8", "grouped", 8),
    ]:
        manifest = run(IngestConfig(str(src), str(root / name), protocol=protocol, seed=seed))
        out[name] = (manifest, read_examples(root / name))
    return out


@pytest.mark.parametrize("name, slack", [("paper7", 1), ("paper8", 1), ("grouped7", 2)])
def test_split_fractions_per_class(split_runs, name, slack):
    manifest, rows = split_runs[name]
    assert manifest["examples"] == len(rows) == 80
    per_class = _per_class_split(rows)
    assert set(per_class) == {"benign", "malignant"}
    for cls, counts in per_class.items():
        assert sum(counts.values()) == 40
        for s, f in zip(SPLITS, FRACTIONS, strict=True):
            assert abs(counts[s] - f * 40) <= slack, (name, cls, dict(counts))
            assert manifest["counts"][s][cls] == counts[s]


@pytest.mark.parametrize("protocol", ["paper", "grouped"])
def test_split_membership_is_deterministic(split_runs, protocol):
    _, first = split_runs[f"{protocol}7"]
    _, again = split_runs[f"{protocol}7b"]
    _, other = split_runs[f"{protocol}8"]
    assert _membership(first) == _membership(again)
    assert set(_membership(first)) == set(_membership(other))
    assert _membership(first) != _membership(other)
    # the examples themselves are identical too
    assert {k: r["image"] for k, r in first.items()} == {k: r["image"] for k, r in again.items()}


def test_rerun_into_same_folder_replaces_shards(tmp_path, pool, read_examples):
    for i in range(1, 5):
        _copy_case(pool, tmp_path / "src", "benign", i)
    run(IngestConfig(str(pool), str(tmp_path / "out"), protocol="paper"))
    manifest = run(IngestConfig(str(tmp_path / "src"), str(tmp_path / "out"), protocol="paper"))
    rows = read_examples(tmp_path / "out")
    assert manifest["examples"] == len(rows) == 4


# --------------------------------------------------------------------------- duplicates


@pytest.fixture(scope="module")
def dup_runs(tmp_path_factory, pool, read_examples):
    """Synthetic BUSI with exact copies: a 3-member benign group and a benign/malignant pair."""
    root = tmp_path_factory.mktemp("dups")
    src = root / "src"
    for label in ("benign", "malignant"):
        for i in range(1, 11):
            _copy_case(pool, src, label, i)
    _copy_case(pool, src, "benign", 1, new="benign (11)")
    _copy_case(pool, src, "benign", 1, new="benign (12)")
    _copy_case(pool, src, "benign", 2, new="malignant (11)")
    (src / "benign" / "malignant (11).png").rename(src / "malignant" / "malignant (11).png")
    (src / "benign" / "malignant (11)_mask.png").rename(
        src / "malignant" / "malignant (11)_mask.png"
    )
    out = {}
    for drop in (False, True):
        o = root / f"out{int(drop)}"
        manifest = run(IngestConfig(str(src), str(o), protocol="grouped", drop_conflicts=drop))
        out[drop] = (manifest, read_examples(o))
    return out


def test_duplicates_grouped_and_conflicts_reported(dup_runs):
    manifest, rows = dup_runs[False]
    assert manifest["examples"] == len(rows) == 23
    assert manifest["duplicate_groups"] == [
        {
            "group_id": "benign/benign (1).png",
            "members": [
                "benign/benign (1).png",
                "benign/benign (11).png",
                "benign/benign (12).png",
            ],
        },
        {
            "group_id": "benign/benign (2).png",
            "members": ["benign/benign (2).png", "malignant/malignant (11).png"],
        },
    ]
    assert manifest["label_conflicts"] == [
        {
            "group_id": "benign/benign (2).png",
            "members": {"benign/benign (2).png": 0, "malignant/malignant (11).png": 1},
        }
    ]
    split_of_group = _assert_groups_in_one_split(rows)
    assert len(split_of_group) == 23 - 2 - 1
    for image_id in ("benign/benign (11).png", "benign/benign (12).png"):
        assert rows[image_id]["group_id"] == b"benign/benign (1).png"
        assert rows[image_id]["split"] == rows["benign/benign (1).png"]["split"]
    assert rows["malignant/malignant (11).png"]["label"] == 1
    assert rows["malignant/malignant (11).png"]["group_id"] == b"benign/benign (2).png"
    singles = [
        k for k in rows if k not in {m for g in manifest["duplicate_groups"] for m in g["members"]}
    ]
    assert all(rows[k]["group_id"].decode() == k for k in singles)
    assert not manifest["conflicts_dropped"] and manifest["skipped"] == []


def test_drop_conflicts_removes_conflict_members(dup_runs):
    manifest, rows = dup_runs[True]
    dropped = {"benign/benign (2).png", "malignant/malignant (11).png"}
    assert manifest["conflicts_dropped"]
    assert manifest["examples"] == len(rows) == 21
    assert not dropped & set(rows)
    skipped = {s["path"]: s["reason"] for s in manifest["skipped"]}
    assert set(skipped) == dropped
    assert all("label conflict" in r for r in skipped.values())
    assert sum(sum(c.values()) for c in manifest["counts"].values()) == 21
    _assert_groups_in_one_split(rows)


# --------------------------------------------------------------------------- bad inputs


def _png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def bad_run(tmp_path_factory, pool, read_examples):
    root = tmp_path_factory.mktemp("bad")
    src = root / "src"
    b = src / "benign"
    for i in range(1, 5):  # the good ones
        _copy_case(pool, src, "benign", i)
    # a BMP: not in the PNG/JPEG contract, re-encoded losslessly to PNG
    Image.open(pool / "benign" / "benign (11).png").save(b / "benign (11).bmp")
    shutil.copy(pool / "benign" / "benign (11)_mask.png", b / "benign (11)_mask.png")
    # truncated image (its mask is fine)
    _copy_case(pool, src, "benign", 6)
    data = (b / "benign (6).png").read_bytes()
    (b / "benign (6).png").write_bytes(data[: len(data) // 2])
    # not an image at all, by extension and by content
    (b / "notes.txt").write_text("radiologist notes\n")
    (b / "fake.png").write_text("this is not a PNG\n")
    shutil.copy(pool / "benign" / "benign (1)_mask.png", b / "fake_mask.png")
    # a mask of the wrong size
    _copy_case(pool, src, "benign", 7)
    Image.open(b / "benign (7)_mask.png").resize((20, 20)).save(b / "benign (7)_mask.png")
    # an image without its mask, and a mask without its image
    shutil.copy(pool / "benign" / "benign (8).png", b / "benign (8).png")
    shutil.copy(pool / "benign" / "benign (9)_mask.png", b / "benign (9)_mask.png")
    # a decompression bomb (20000 x 20000 in a few dozen KB) with a mask of its size
    (b / "benign (12).png").write_bytes(bomb_png())
    (b / "benign (12)_mask.png").write_bytes(bomb_png())
    (b / "benign (13).png").write_bytes(bomb_png(5000, 4000))  # under Pillow's own limit
    (b / "benign (13)_mask.png").write_bytes(bomb_png(5000, 4000))
    # an unreadable mask
    _copy_case(pool, src, "benign", 10)
    (b / "benign (10)_mask.png").write_text("not a mask either\n")
    # an unexpected sub-folder, an unknown class folder, an empty class folder, a stray file
    (b / "extra").mkdir()
    (src / "cats").mkdir()
    shutil.copy(pool / "benign" / "benign (1).png", src / "cats" / "cat (1).png")
    (src / "malignant").mkdir()
    (src / "readme.txt").write_text("hello\n")
    # an excluded class
    _copy_case(pool, src, "normal", 1)
    _copy_case(pool, src, "normal", 2)
    manifest = run(IngestConfig(str(src), str(root / "out"), protocol="paper"))
    return src, manifest, read_examples(root / "out")


GOOD = {f"benign/benign ({i}).png" for i in range(1, 5)} | {"benign/benign (11).bmp"}


@pytest.mark.parametrize(
    "path, words",
    [
        ("benign/benign (6).png", ["truncated"]),
        ("benign/notes.txt", ["not an image"]),
        ("benign/fake.png", ["not a readable image"]),
        ("benign/benign (7).png", ["benign (7)_mask.png", "differs from image size"]),
        ("benign/benign (8).png", ["mask missing"]),
        ("benign/benign (9)_mask.png", ["mask without image"]),
        ("benign/benign (10).png", ["benign (10)_mask.png", "not a readable image"]),
        ("benign/benign (12).png", ["above the pixel budget of 16000000", "400000000 pixels"]),
        ("benign/benign (13).png", ["5000x4000 pixels, above the pixel budget of 16000000"]),
        ("benign/extra", ["unexpected folder"]),
        ("cats", ["unknown class folder"]),
        ("malignant", ["empty class folder"]),
        ("readme.txt", ["outside any class folder"]),
    ],
)
def test_bad_input_reported(bad_run, path, words):
    _, manifest, _ = bad_run
    reasons = [s["reason"] for s in manifest["skipped"] if s["path"] == path]
    assert len(reasons) == 1, (path, manifest["skipped"])
    for w in words:
        assert w in reasons[0], (path, reasons[0])


def test_bad_inputs_do_not_stop_good_ones(bad_run):
    src, manifest, rows = bad_run
    assert set(rows) == GOOD
    assert manifest["examples"] == len(GOOD)
    assert len(manifest["skipped"]) == 13  # the 11 kinds above plus two oversized images
    assert manifest["excluded_classes"] == {"normal": 2}
    assert manifest["classes"] == {"benign": 0, "malignant": 1}
    for image_id in GOOD - {"benign/benign (11).bmp"}:
        assert rows[image_id]["image"] == (src / image_id).read_bytes()
    bmp = Image.open(io.BytesIO(rows["benign/benign (11).bmp"]["image"]))
    assert bmp.format == "PNG"
    np.testing.assert_array_equal(
        np.asarray(bmp), np.asarray(Image.open(src / "benign" / "benign (11).bmp"))
    )


# --------------------------------------------------------------------------- CLI


def test_cli_ingest_ok(tmp_path, pool, capsys):
    rc = main(["ingest", str(pool), str(tmp_path / "out"), "--protocol", "paper", "--seed", "3"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "wrote" in out and "normal" not in out.split("near-duplicate")[0]
    assert (tmp_path / "out" / "manifest.json").exists()
    # progress: the last line counts every image read (24: 12 benign, 12 malignant)
    done = re.findall(r"^\[ingest\] (\d+)/(\d+) images \((\d+) %\)", out, re.MULTILINE)
    assert done and done[-1] == ("24", "24", "100")
    assert not (tmp_path / "out" / "_work").exists()  # the progress marks are cleared


def test_cli_max_pixels_skips_larger_images(tmp_path, pool, capsys):
    """The pool's images are 32 x 26 = 832 px: a budget of 800 skips every one of them."""
    rc = main(["ingest", str(pool), str(tmp_path / "out"), "--max-pixels", "800"])
    assert rc == 2  # nothing valid remains
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["skipped"] and all(
        "above the pixel budget of 800" in s["reason"] for s in manifest["skipped"]
    )
    assert "no valid images remain" in capsys.readouterr().err


def test_cli_missing_source_with_layout(tmp_path, capsys):
    rc = main(["ingest", str(tmp_path / "nope"), str(tmp_path / "out"), "--layout", "busi"])
    assert rc == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_missing_source_auto_layout(tmp_path, capsys):
    rc = main(["ingest", str(tmp_path / "nope"), str(tmp_path / "out")])
    assert rc == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_unknown_layout(tmp_path, capsys):
    (tmp_path / "src" / "cats").mkdir(parents=True)
    rc = main(["ingest", str(tmp_path / "src"), str(tmp_path / "out")])
    assert rc == 2
    assert "cannot tell the layout" in capsys.readouterr().err


def test_cli_all_images_bad(tmp_path, pool, capsys):
    src = tmp_path / "src"
    _copy_case(pool, src, "benign", 1)
    data = (src / "benign" / "benign (1).png").read_bytes()
    (src / "benign" / "benign (1).png").write_bytes(data[: len(data) // 2])
    (src / "benign" / "notes.txt").write_text("x")
    rc = main(["ingest", str(src), str(tmp_path / "out"), "--layout", "busi"])
    assert rc == 2
    assert "no valid images remain" in capsys.readouterr().err
    with pytest.raises(IngestError, match="no valid images remain"):
        run(IngestConfig(str(src), str(tmp_path / "out2")))


def test_cli_no_candidates(tmp_path, pool, capsys):
    src = tmp_path / "src"
    (src / "benign").mkdir(parents=True)
    shutil.copy(pool / "benign" / "benign (1).png", src / "benign" / "benign (1).png")
    rc = main(["ingest", str(src), str(tmp_path / "out")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "no images of classes benign, malignant" in err and "mask missing" in err


# --------------------------------------------------------------------------- real BUSI


@pytest.fixture(scope="module")
def real_runs(busi_dir, tmp_path_factory, read_examples):
    root = tmp_path_factory.mktemp("real")
    out = {}
    for name, protocol, drop in [
        ("paper", "paper", False),
        ("grouped", "grouped", False),
        ("drop", "grouped", True),
    ]:
        manifest = run(
            IngestConfig(str(busi_dir), str(root / name), protocol=protocol, drop_conflicts=drop)
        )
        out[name] = (manifest, read_examples(root / name))
    return out


def test_real_busi_paper_protocol(real_runs, busi_dir):
    manifest, rows = real_runs["paper"]
    assert manifest["examples"] == len(rows) == 647
    assert manifest["dataset"] == "busi" and manifest["modality"] == "ultrasound"
    assert manifest["excluded_classes"] == {"normal": 133}
    assert manifest["skipped"] == []
    per_class = _per_class_split(rows)
    # the paper's 452 / 98 / 97, per class exactly as scikit-learn's stratified splits count
    expected = {"benign": (305, 66, 66), "malignant": (147, 32, 31)}
    for cls, target in expected.items():
        got = tuple(per_class[cls][s] for s in SPLITS)
        assert got == target, (cls, got)
        assert got == tuple(manifest["counts"][s][cls] for s in SPLITS)
    # the paper's split leaks near-duplicates into the held-out splits; the manifest says so
    leak = manifest["leakage"]
    assert leak["groups_spanning_splits"] > 0 and leak["test_with_duplicate_in_train"] > 0
    twins_in_train = {
        g["group_id"] for g in manifest["duplicate_groups"]
        if any(rows[m]["split"] == "train" for m in g["members"])
    }  # fmt: skip
    assert leak["test_with_duplicate_in_train"] == sum(
        r["split"] == "test" and r["group_id"].decode() in twins_in_train for r in rows.values()
    )
    for image_id, row in rows.items():
        assert row["label"] == {"benign": 0, "malignant": 1}[image_id.split("/")[0]]
        assert row["dataset"] == b"busi" and row["modality"] == b"ultrasound"
    # benign (195) has three masks: the stored mask is their union
    masks = sorted((busi_dir / "benign").glob("benign (195)_mask*.png"))
    assert len(masks) == 3
    union = np.zeros_like(np.asarray(Image.open(masks[0]).convert("L")), dtype=bool)
    for m in masks:
        union |= np.asarray(Image.open(m).convert("L")) > 0
    row = rows["benign/benign (195).png"]
    assert row["image"] == (busi_dir / "benign" / "benign (195).png").read_bytes()
    got = np.asarray(Image.open(io.BytesIO(row["mask"])))
    np.testing.assert_array_equal(got, union.astype(np.uint8) * 255)


def test_real_busi_grouped_protocol(real_runs):
    manifest, rows = real_runs["grouped"]
    assert manifest["examples"] == len(rows) == 647
    _assert_groups_in_one_split(rows)
    assert set(manifest["leakage"].values()) == {0}
    assert manifest["duplicate_groups"], "BUSI has near-duplicates"
    for g in manifest["duplicate_groups"]:
        assert len(g["members"]) > 1 and g["group_id"] == min(g["members"])
        assert all(rows[m]["group_id"].decode() == g["group_id"] for m in g["members"])
    assert manifest["label_conflicts"], "BUSI has near-duplicates with different labels"
    for c in manifest["label_conflicts"]:
        assert set(c["members"].values()) == {0, 1}
        assert all(rows[m]["label"] == lab for m, lab in c["members"].items())
    per_class = _per_class_split(rows)
    for cls, n in (("benign", 437), ("malignant", 210)):
        assert sum(per_class[cls].values()) == n
        for s, f in zip(SPLITS, FRACTIONS, strict=True):
            assert abs(per_class[cls][s] - f * n) <= 5, (cls, dict(per_class[cls]))


def test_real_busi_drop_conflicts(real_runs):
    grouped, _ = real_runs["grouped"]
    manifest, rows = real_runs["drop"]
    members = {m for c in grouped["label_conflicts"] for m in c["members"]}
    assert members
    assert not members & set(rows)
    assert manifest["examples"] == len(rows) == 647 - len(members)
    skipped = {s["path"]: s["reason"] for s in manifest["skipped"]}
    assert set(skipped) == members
    assert all("label conflict" in r for r in skipped.values())
    _assert_groups_in_one_split(rows)


# --------------------------------------------------------------------------- other runners


@pytest.mark.slow  # starts a local dask cluster
def test_dask_cluster_writes_the_same_records(tmp_path, pool, read_examples):
    """Beam's DaskRunner on a local dask.distributed cluster of two worker processes, with a
    bad file among the inputs: the same records, splits and skipped inputs as DirectRunner,
    byte for byte (shards are written sorted, so reruns and runners agree)."""
    from distributed import LocalCluster

    src = tmp_path / "src"
    shutil.copytree(pool, src)
    (src / "benign" / "broken.png").write_bytes(b"not an image")
    direct = run(IngestConfig(str(src), str(tmp_path / "direct"), protocol="grouped"))
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster:
        assert len(cluster.workers) == 2
        args = [
            "--runner=apache_beam.runners.dask.dask_runner.DaskRunner",
            f"--dask_client_address={cluster.scheduler_address}",
        ]
        dask = run(IngestConfig(str(src), str(tmp_path / "dask"), protocol="grouped"), args)
    assert dask["examples"] == direct["examples"] == len(read_examples(tmp_path / "dask"))
    for key in ("counts", "duplicate_groups", "leakage", "skipped"):
        assert dask[key] == direct[key], key
    assert [s["path"] for s in dask["skipped"]] == ["benign/broken.png"]
    for split in SPLITS:
        for f in (tmp_path / "direct" / split).glob("data-*"):
            other = tmp_path / "dask" / split / f.name
            assert gzip.decompress(other.read_bytes()) == gzip.decompress(f.read_bytes())
