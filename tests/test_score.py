"""`lesionlens score`: the Beam batch-scoring job against the demo pipeline's pushed model, on
the DirectRunner and on a local dask.distributed cluster (Beam's DaskRunner); what needs no
trained model (one image as SRC, progress, overlay names, the audit log) against the toy
model of tests/serving_toy_model.py, in seconds."""

import glob
import hashlib
import json
import os
import re
import shutil
import time

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import bomb_png, read_raw_examples
from PIL import Image

from lesionlens.cli import main
from lesionlens.score import gallery, sinks
from modules import contract as C
from modules import image_io
from modules.raw_examples import build_raw_example
from serving import overlay

HOSTILE = '"><img src=x onerror=alert(1)>.png'  # a file name that is also HTML


@pytest.fixture(scope="module")
def model(demo_pipeline):
    """(Pusher base folder, the newest version loaded with tf.saved_model.load)."""
    import tensorflow as tf

    _, pushed, records = demo_pipeline
    return os.path.dirname(pushed), tf.saved_model.load(pushed), records


def served(loaded, examples: list[bytes], signature: str = C.SERVING_DEFAULT) -> dict:
    import tensorflow as tf

    out = loaded.signatures[signature](examples=tf.constant(examples))
    return {k: v.numpy() for k, v in out.items()}


@pytest.fixture(scope="module")
def source(model, tmp_path_factory):
    """Seven good images (two with masks beside them, one named like HTML) and five bad
    files, BUSI-style."""
    _, _, records = model
    raw = records.parent / "raw"
    src = tmp_path_factory.mktemp("score_src")
    good = []
    for cls in ("benign", "malignant"):
        (src / cls).mkdir()
        names = sorted(p for p in os.listdir(raw / cls) if "_mask" not in p)[:3]
        for name in names:
            shutil.copy(raw / cls / name, src / cls / name)
            good.append(f"{cls}/{name}")
        stem = os.path.splitext(names[0])[0]
        for mask in glob.glob(str(raw / cls / f"{stem}_mask*.png")):
            shutil.copy(mask, src / cls)
    shutil.copy(raw / good[2], src / "benign" / HOSTILE)
    good.append(f"benign/{HOSTILE}")
    bad = src / "benign"
    (bad / "not_an_image.png").write_bytes(b"this is text")
    (bad / "empty.png").write_bytes(b"")
    data = (raw / good[0]).read_bytes()
    (bad / "truncated.png").write_bytes(data[: len(data) // 2])
    (bad / "bomb.png").write_bytes(bomb_png())
    shutil.copy(raw / good[1], bad / "badmask.png")  # its mask is 5x5, the image is not
    Image.new("L", (5, 5), 255).save(bad / "badmask_mask.png")
    return src, good


def rows_by_id(out) -> dict[str, dict]:
    rows = [json.loads(line) for f in sorted(out.glob("predictions-*.jsonl")) for line in open(f)]
    return {r["image_id"]: r for r in rows}


@pytest.fixture(scope="module")
def direct_run(model, source, tmp_path_factory):
    base, _, _ = model
    src, _ = source
    out = tmp_path_factory.mktemp("score_direct")
    rc = main(["score", base, str(src), str(out), "--overlays", "--batch-size", "4"])
    return rc, out


def test_every_good_image_scored_as_serving_default_scores_it(model, source, direct_run):
    _, loaded, _ = model
    src, good = source
    rc, out = direct_run
    assert rc == 0
    rows = rows_by_id(out)
    assert sorted(rows) == sorted(good)
    examples = []
    for image_id in good:
        path = src / image_id
        masks, mask = image_io.sibling_masks(str(path)), b""
        if masks:
            size = Image.open(path).size
            mask = image_io.mask_feature(masks, size)
        examples.append(build_raw_example(path.read_bytes(), mask))
    want = served(loaded, examples)
    got = np.array([rows[i]["probabilities"] for i in good])
    np.testing.assert_allclose(got, want[C.PROBABILITIES], atol=1e-5)
    assert [rows[i]["class_id"] for i in good] == want[C.CLASS_ID].tolist()
    sources = [rows[i]["roi_source"] for i in good]
    assert sources == [s.decode() for s in want[C.ROI_SOURCE]]
    assert sources.count(C.ROI_GIVEN) == 2  # the two images with masks beside them
    for image_id in good:
        r = rows[image_id]
        assert r["label"] == image_id.split("/")[0]
        assert r["class_name"] in ("benign", "malignant")
        assert r["positive_probability"] == pytest.approx(r["probabilities"][1], abs=1e-6)
        assert 0.0 < r["threshold"] < 1.0
        stem = image_id.rsplit(".", 1)[0]
        if image_id != f"benign/{HOSTILE}":
            assert r["gradcam_overlay"] == f"overlays/{stem}_{r['class_name']}_gradcam.png"
        else:  # a name made safe for every file system; the row keeps the real one
            digest = hashlib.sha256(image_id.encode()).hexdigest()[: sinks.HASH_HEX]
            want = f"overlays/benign/_img src_x onerror_alert(1)_~{digest}_{r['class_name']}"
            assert r["gradcam_overlay"] == want + "_gradcam.png"
        with Image.open(out / r["gradcam_overlay"]) as drawn, Image.open(src / image_id) as image:
            left = drawn.crop(overlay.panel_boxes(image.size)[0])  # the original, full size
            assert np.array_equal(np.asarray(left), overlay.to_rgb(image))
        thumb = out / gallery.thumbnail_name(r["gradcam_overlay"])
        assert thumb.stat().st_size < 20_000 and Image.open(thumb).format == "JPEG"
    table = pq.read_table(glob.glob(str(out / "predictions-*.parquet"))).to_pylist()
    assert {r["image_id"]: r["probabilities"] for r in table}.keys() == rows.keys()
    for r in table:
        np.testing.assert_allclose(r["probabilities"], rows[r["image_id"]]["probabilities"])


def test_bad_files_are_rejected_with_their_reason(direct_run):
    rc, out = direct_run
    rejected = {
        os.path.basename(r["path"]): r["reason"]
        for f in out.glob("rejected-*.jsonl")
        for r in map(json.loads, open(f))
    }
    assert set(rejected) == {
        "not_an_image.png",
        "empty.png",
        "truncated.png",
        "bomb.png",
        "badmask.png",
    }
    assert "empty" in rejected["empty.png"]
    assert "not a readable image" in rejected["not_an_image.png"]
    assert "pixel budget" in rejected["bomb.png"]
    assert "badmask_mask.png" in rejected["badmask.png"]
    for path, reason in rejected.items():
        assert path in reason
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["scored"], summary["rejected"]) == (7, 5)
    assert summary["signature"] == C.SERVING_DEFAULT
    assert summary["outputs"]["gallery"] == str(out / "index.html")


def test_raw_tfrecords_scored_in_full(model, tmp_path):
    base, loaded, records = model
    out = tmp_path / "out"
    pattern = os.path.join(str(records), "test", C.SHARD_GLOB)
    assert main(["score", base, pattern, str(out), "--batch-size", "3"]) == 0
    examples = read_raw_examples(records)
    rows = rows_by_id(out)
    assert len(rows) == len(examples)
    want = served(loaded, examples)
    ids = [
        __import__("tensorflow")
        .train.Example.FromString(e)
        .features.feature[C.IMAGE_ID]
        .bytes_list.value[0]
        .decode()
        for e in examples
    ]
    got = np.array([rows[i]["probabilities"] for i in ids])
    np.testing.assert_allclose(got, want[C.PROBABILITIES], atol=1e-5)
    assert all(rows[i]["gradcam_overlay"] is None for i in ids)  # predict_only: no Grad-CAM


def test_unusable_model_or_source_exits_2(model, source, tmp_path, capsys):
    base, _, _ = model
    src, _ = source
    assert main(["score", str(tmp_path / "nope"), str(src), str(tmp_path / "o")]) == 2
    assert "no such model folder" in capsys.readouterr().err
    assert main(["score", base, str(tmp_path / "missing"), str(tmp_path / "o")]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    only_bad = tmp_path / "bad"
    only_bad.mkdir()
    (only_bad / "x.png").write_bytes(b"nope")
    assert main(["score", base, str(only_bad), str(tmp_path / "o")]) == 2
    assert "no image" in capsys.readouterr().err
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["rejected"] == 1


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """(Pusher-style base folder of the toy model with the real signatures, loaded version):
    for what does not need a trained model."""
    import tensorflow as tf
    from serving_toy_model import save_toy_model

    base = tmp_path_factory.mktemp("toy_models") / "toy"
    return str(base), tf.saved_model.load(str(save_toy_model(base, version=3)))


@pytest.fixture(scope="module")
def toy_images(tmp_path_factory):
    """benign/a.png with its mask beside it, malignant/b.jpg without: 48 x 40."""
    src = tmp_path_factory.mktemp("toy_src")
    rng = np.random.default_rng(5)
    for cls, name in (("benign", "a.png"), ("malignant", "b.jpg")):
        (src / cls).mkdir()
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(src / cls / name)
    mask = np.zeros((40, 48), np.uint8)
    mask[10:30, 12:36] = 255
    Image.fromarray(mask).save(src / "benign" / "a_mask.png")
    return src


def test_a_single_image_file_is_scored(toy, toy_images, tmp_path):
    """SRC may be one image (it was read as a text list of paths: UnicodeDecodeError); its
    mask beside it is used, its class folder is its label, its id is its file name."""
    base, loaded = toy
    image = toy_images / "benign" / "a.png"
    out = tmp_path / "one"
    assert main(["score", base, str(image), str(out), "--overlays"]) == 0
    rows = rows_by_id(out)
    assert list(rows) == ["a.png"]
    row = rows["a.png"]
    mask = image_io.mask_feature(image_io.sibling_masks(str(image)), (48, 40))
    want = served(loaded, [build_raw_example(image.read_bytes(), mask)])
    np.testing.assert_allclose(row["probabilities"], want[C.PROBABILITIES][0], atol=1e-6)
    assert (row["label"], row["roi_source"], row["class_id"]) == (
        "benign",
        C.ROI_GIVEN,
        int(want[C.CLASS_ID][0]),
    )
    assert row["gradcam_overlay"] == f"overlays/a_{row['class_name']}_gradcam.png"
    assert (out / row["gradcam_overlay"]).is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["scored"], summary["rejected"]) == (1, 0)


def test_progress_lines_and_the_wall_time_of_the_run(toy, toy_images, tmp_path, capsys):
    """One progress line at least, the last one every input done (scored or rejected);
    the summary's time is the command's wall time, the pipeline's share inside it."""
    base, _ = toy
    src = tmp_path / "src"
    shutil.copytree(toy_images, src)
    (src / "benign" / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "out"
    t0 = time.time()
    assert main(["score", base, str(src), str(out), "--batch-size", "1"]) == 0
    elapsed = time.time() - t0
    printed = capsys.readouterr().out
    lines = re.findall(r"^\[score\] (\d+)/(\d+) images \((\d+) %\)", printed, re.MULTILINE)
    assert lines and lines[-1] == ("3", "3", "100")
    assert all(int(done) <= 3 for done, _, _ in lines)
    assert not (out / "_progress").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["scored"], summary["rejected"]) == (2, 1)
    assert summary["pipeline_seconds"] <= summary["wall_seconds"] <= elapsed
    rate = 2 / summary["wall_seconds"]  # of the rounded time: within rounding of the rate
    assert summary["wall_images_per_second"] == pytest.approx(rate, abs=0.01 + rate * 0.01)
    last = printed.strip().splitlines()[-2]  # then the "wrote ..." line
    assert last.startswith(f"scored 2, rejected 1 in {summary['wall_seconds']} s (")


def test_overlay_names_are_distinct_for_distinct_ids():
    """Ids that clean to one name (unsafe characters, another extension, `..`) get a hash
    of the whole id; a safe `.png` id keeps its name; no name is shared."""
    ids = [
        "benign/benign (1).png",
        "benign/benign (10).png",
        "a<b.png",
        "a>b.png",
        "a_b.png",
        "x.png",
        "x.jpg",
        "x.jpeg",
        "x",
        "x.PNG",
        "../x.png",
        "./x.png",
        "dir/x.png",
        "dir//x.png",
        "dir_x.png",
        "x~" + hashlib.sha256(b"x").hexdigest()[: sinks.HASH_HEX] + ".png",  # looks hashed
        HOSTILE,
        "",
    ]
    names = [sinks.overlay_name(i, "benign") for i in ids]
    assert len(set(names)) == len(ids), sorted(names)
    thumbs = {gallery.thumbnail_name(n) for n in names}
    assert len(thumbs) == len(ids)
    assert names[0] == "overlays/benign/benign (1)_benign_gradcam.png"
    assert names[5] == "overlays/x_benign_gradcam.png"
    assert names[12] == "overlays/dir/x_benign_gradcam.png"
    digest = hashlib.sha256(b"x.jpg").hexdigest()[: sinks.HASH_HEX]
    assert names[6] == f"overlays/x.jpg~{digest}_benign_gradcam.png"
    for name in names:  # always below OUT/overlays, never a folder up
        assert name.startswith("overlays/") and ".." not in name.split("/")


def test_two_inputs_cleaning_to_one_name_keep_both_overlays(toy, toy_images, tmp_path):
    """`a<b.png` and `a>b.png` were both written as overlays/a_b_..._gradcam.png, the second
    over the first; each now has its own overlay and thumbnail, each of its own image."""
    base, _ = toy
    src = tmp_path / "src"
    src.mkdir()
    rng = np.random.default_rng(9)
    pictures = {}
    for name, value in (("a<b.png", 30), ("a>b.png", 220)):
        pictures[name] = np.full((24, 32, 3), value, np.uint8)
        pictures[name][::2] = rng.integers(0, 256, (12, 32, 3), dtype=np.uint8)
        Image.fromarray(pictures[name]).save(src / name)
    out = tmp_path / "out"
    assert main(["score", base, str(src), str(out), "--overlays"]) == 0
    rows = rows_by_id(out)
    assert sorted(rows) == ["a<b.png", "a>b.png"]
    overlays = {i: r["gradcam_overlay"] for i, r in rows.items()}
    assert len(set(overlays.values())) == 2
    for image_id, name in overlays.items():
        with Image.open(out / name) as drawn:
            left = drawn.crop(overlay.panel_boxes((32, 24))[0])
            assert np.array_equal(np.asarray(left), pictures[image_id])  # its own image
        assert (out / gallery.thumbnail_name(name)).is_file()
    assert len(list((out / sinks.OVERLAYS).iterdir())) == 2


def test_a_binary_file_that_is_no_image_is_a_clear_error(toy, tmp_path, capsys):
    base, _ = toy
    blob = tmp_path / "scan.bin"
    blob.write_bytes(bytes(range(256)) * 4)  # not UTF-8, not an image extension
    assert main(["score", base, str(blob), str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert f"{blob}: neither an image file" in err and "Traceback" not in err


def test_dask_cluster_gives_the_same_outputs(model, source, direct_run, tmp_path):
    """Beam's DaskRunner on a local dask.distributed cluster of two worker processes."""
    from distributed import LocalCluster

    from lesionlens.score import job

    base, _, _ = model
    src, _ = source
    _, direct_out = direct_run
    out = tmp_path / "dask"
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster:
        assert len(cluster.workers) == 2
        cfg = job.ScoreConfig(base, str(src), str(out), batch_size=4, overlays=True)
        summary = job.run(
            cfg,
            [
                "--runner=apache_beam.runners.dask.dask_runner.DaskRunner",
                f"--dask_client_address={cluster.scheduler_address}",
            ],
        )
    assert (summary["scored"], summary["rejected"]) == (7, 5)
    dask_rows, direct_rows = rows_by_id(out), rows_by_id(direct_out)
    assert dask_rows.keys() == direct_rows.keys()
    for image_id, row in dask_rows.items():
        want = direct_rows[image_id]
        np.testing.assert_allclose(row["probabilities"], want["probabilities"], atol=1e-6)
        assert {k: v for k, v in row.items() if k != "probabilities"} == {
            k: v for k, v in want.items() if k != "probabilities"
        }
        assert (out / row["gradcam_overlay"]).is_file()
    reasons = lambda d: sorted(  # noqa: E731
        json.loads(line)["reason"] for f in d.glob("rejected-*.jsonl") for line in open(f)
    )
    assert reasons(out) == reasons(direct_out)


def test_the_gallery_shows_every_scored_image_in_a_browser(direct_run, tmp_path):
    """OUT/index.html in headless Chromium: a row and a thumbnail per scored image, the
    rejected inputs with their reasons, rows sorted by P(malignant) on a click, and the
    file named like HTML shown as its name (no element, no script run)."""
    from chromium import browser_or_skip

    _, out = direct_run
    rows = rows_by_id(out)
    with browser_or_skip() as browser:
        page = browser.open((out / "index.html").as_uri())
        page.wait_for("document.body.dataset.renderedMs")
        page.screenshot(tmp_path / "gallery.png")
        ids = page.evaluate("[...document.querySelectorAll('#rows td.id')].map(t => t.textContent)")
        assert sorted(ids) == sorted(rows)
        assert f"benign/{HOSTILE}" in ids
        loaded = page.wait_for(
            "(() => { const i = [...document.querySelectorAll('#rows img')];"
            " return i.every(x => x.complete) && i.filter(x => x.naturalWidth > 0).length; })()"
        )
        assert loaded == len(rows)  # every thumbnail found by its relative link
        page.evaluate("document.querySelector('th[data-key=p]').click()")
        shown = page.evaluate(
            "[...document.querySelectorAll('#rows td.p')].map(t => t.textContent)"
        )
        want = sorted((r["positive_probability"] for r in rows.values()), reverse=True)
        assert [float(v) for v in shown] == [float(f"{p:.3f}") for p in want]
        reasons = page.evaluate("[...document.querySelectorAll('#rejected tr')].length")
        assert reasons == 1 + 5  # the header and one row per rejected file
        assert page.evaluate("document.querySelectorAll('img[src=\"x\"], [onerror]').length") == 0
        assert page.evaluate("window.__dialogs") == [] and page.exceptions == []


def test_the_audit_log_of_a_run_has_every_input_once(toy, toy_images, tmp_path):
    """OUT/audit.jsonl: one line per input, scored or rejected, with the image's SHA-256,
    the model's name and version, the decision; no path, no name."""
    base, loaded = toy
    src = tmp_path / "src"
    shutil.copytree(toy_images, src)
    (src / "benign" / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "out"
    assert main(["score", base, str(src), str(out)]) == 0
    text = (out / sinks.AUDIT_FILE).read_text()
    lines = [json.loads(line) for line in text.splitlines()]
    files = {
        hashlib.sha256(p.read_bytes()).hexdigest(): p
        for p in src.rglob("*")
        if p.is_file() and "_mask" not in p.name
    }
    assert sorted(line["images"][0]["sha256"] for line in lines) == sorted(files)
    assert len({line["request_id"] for line in lines}) == 3
    rows = rows_by_id(out)
    for line in lines:
        assert (line["protocol"], line["model"], line["version"]) == ("score", "toy", 3)
        assert line["signature"] == C.PREDICT_ONLY
        (image,) = line["images"]
        path = files[image["sha256"]]
        if path.name == "broken.png":
            assert line["outcome"] == "REJECTED" and "class_id" not in image
            continue
        row = rows[str(path.relative_to(src))]
        assert line["outcome"] == "OK" and line["latency_ms"] > 0
        assert image["class_id"] == row["class_id"]
        assert image["positive_probability"] == pytest.approx(row["probabilities"][1], abs=1e-6)
    assert "benign" not in text and "a.png" not in text and str(src) not in text
    assert not list(out.glob("audit-*"))  # the shard was folded into audit.jsonl
