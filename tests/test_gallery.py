"""OUT/index.html of `lesionlens score --overlays`, rendered in headless Chromium: a row per
scored image, sorting and filtering, the summary's intervals, hostile names kept as text,
and the time a 10,000-row page takes to open."""

import io
import time

import numpy as np
import pytest
from chromium import browser_or_skip
from PIL import Image

from lesionlens.score import gallery
from modules import contract as C
from modules.intervals.bootstrap import stratified_bootstrap

HOSTILE = '"><img src=x onerror=alert(1)>.png'


@pytest.fixture(scope="module")
def browser():
    with browser_or_skip() as chromium:
        yield chromium


def _rows(n: int, seed: int = 0, thumbs_in=None) -> list[dict]:
    """Score rows as the job writes them; every third one without a label."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        p = float(rng.random())
        called = int(p >= 0.4)
        truth = ("benign", "malignant")[int(rng.random() < 0.5)]
        overlay = f"overlays/{('benign', 'malignant')[i % 2]}/img{i:05d}_x_gradcam.png"
        rows.append(
            {
                "image_id": f"{('benign', 'malignant')[i % 2]}/img{i:05d}.png",
                "path": f"/data/img{i:05d}.png",
                "label": None if i % 3 == 2 else truth,
                "probabilities": [1 - p, p],
                "class_id": called,
                "class_name": ("benign", "malignant")[called],
                "threshold": 0.4,
                "positive_probability": p,
                "roi_source": ("predicted", "given")[i % 2],
                "gradcam_overlay": overlay,
            }
        )
    return rows


def _write_thumbs(out, rows):
    for r in rows:
        thumb = out / gallery.thumbnail_name(r["gradcam_overlay"])
        thumb.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        Image.new("RGB", (40, 30), (200, 40, 40)).save(buffer, format="JPEG")
        thumb.write_bytes(buffer.getvalue())


@pytest.fixture(scope="module")
def page(browser, tmp_path_factory):
    out = tmp_path_factory.mktemp("gallery")
    rows = _rows(23)
    hostile = dict(rows[0], image_id=f"benign/{HOSTILE}", label=HOSTILE, class_name="benign")
    hostile["gradcam_overlay"] = "overlays/benign/_img src_x onerror_alert(1)__benign_gradcam.png"
    rows[0] = hostile
    _write_thumbs(out, rows)
    rejected = [
        {"path": f"/data/{HOSTILE}", "reason": f"/data/{HOSTILE}: not a readable image <b>"},
        {"path": "/data/empty.png", "reason": "/data/empty.png: empty file"},
    ]
    summary = {"source": f"/data/{HOSTILE}", "model": "m/1", "signature": "serving_default"}
    summary["rejected"] = len(rejected)
    gallery.write_index(str(out), rows, rejected, summary, ("benign", "malignant"))
    loaded = browser.open((out / gallery.INDEX).as_uri())
    loaded.wait_for("document.body.dataset.renderedMs")
    loaded.screenshot(out / "gallery.png")
    return loaded, rows, out


def _column(page, cls: str) -> list[str]:
    return page.evaluate(
        f"[...document.querySelectorAll('#rows tbody td.{cls}')]" ".map(td => td.textContent)"
    )


def test_every_scored_image_has_a_row_and_its_thumbnail_loads(page):
    loaded, rows, out = page
    assert sorted(_column(loaded, "id")) == sorted(r["image_id"] for r in rows)
    sizes = loaded.wait_for(
        "(() => { const imgs = [...document.querySelectorAll('#rows img')];"
        " return imgs.every(i => i.complete) && imgs.map(i => i.naturalWidth); })()"
    )
    assert sizes == [40] * len(rows)  # every thumbnail is a file found by its relative link
    links = loaded.evaluate(
        "[...document.querySelectorAll('#rows a')].map(a => a.getAttribute('href'))"
    )
    assert "overlays/benign/_img%20src_x%20onerror_alert%281%29__benign_gradcam.png" in links
    assert all(not link.startswith(("/", "file:", "http")) for link in links)  # relative
    assert loaded.exceptions == []
    assert (out / "gallery.png").stat().st_size > 10_000


def test_sorting_by_p_malignant_orders_the_rows(page):
    loaded, rows, _ = page
    loaded.evaluate("document.querySelector('th[data-key=p]').click()")
    first = [float(v) for v in _column(loaded, "p")]
    assert first == sorted(first, reverse=True) and len(first) == len(rows)
    assert (
        loaded.evaluate("document.querySelector('th[data-key=p]').getAttribute('aria-sort')")
        == "descending"
    )
    loaded.evaluate("document.querySelector('th[data-key=p]').click()")
    second = [float(v) for v in _column(loaded, "p")]
    assert second == sorted(second) == sorted(first)


def test_filters_by_class_and_correctness(page):
    loaded, rows, _ = page
    set_value = (
        "(id, v) => { const e = document.getElementById(id); e.value = v;"
        " e.dispatchEvent(new Event('change')); }"
    )
    loaded.evaluate(f"({set_value})('f-class', 'malignant')")
    ids = _column(loaded, "id")
    assert sorted(ids) == sorted(r["image_id"] for r in rows if r["class_name"] == "malignant")
    loaded.evaluate(f"({set_value})('f-right', 'wrong')")
    wrong = [
        r
        for r in rows
        if r["class_name"] == "malignant" and r["label"] and r["label"] != r["class_name"]
    ]
    assert sorted(_column(loaded, "id")) == sorted(r["image_id"] for r in wrong)
    loaded.evaluate(f"({set_value})('f-class', ''); ({set_value})('f-right', 'unknown')")
    assert sorted(_column(loaded, "id")) == sorted(
        r["image_id"] for r in rows if r["label"] is None
    )
    loaded.evaluate(f"({set_value})('f-right', '')")
    assert len(_column(loaded, "id")) == len(rows)


def test_hostile_names_stay_text(page):
    loaded, _, _ = page
    assert loaded.evaluate("document.querySelectorAll('img[src=\"x\"], [onerror]').length") == 0
    assert loaded.evaluate("document.querySelectorAll('#rejected b').length") == 0  # reason
    assert loaded.evaluate("window.__dialogs") == []
    ids = _column(loaded, "id")
    assert f"benign/{HOSTILE}" in ids
    rejected = loaded.evaluate(
        "[...document.querySelectorAll('#rejected td')].map(td => td.textContent)"
    )
    assert (
        f"/data/{HOSTILE}" in rejected and f"/data/{HOSTILE}: not a readable image <b>" in rejected
    )
    assert loaded.evaluate("document.title") == f"LesionLens scores: /data/{HOSTILE}"
    # every thumbnail's alt text is the name, as text: no element came from it
    assert loaded.evaluate("document.querySelectorAll('#rows img').length") == 23


def test_summary_states_the_bootstrap_intervals(page):
    loaded, rows, _ = page
    known = sorted((r for r in rows if r["label"] in C.LABELS), key=lambda r: r["image_id"])
    labels = np.array([C.LABELS[r["label"]] for r in known])
    called = np.array([r["class_id"] for r in known])
    scores = called + 0.0  # above 0.5 exactly when called malignant
    bounds = stratified_bootstrap(labels, scores, 1000, 42, 0.95)
    cells = loaded.evaluate(
        "[...document.querySelectorAll('table.metrics tr')]"
        ".map(tr => [...tr.cells].map(c => c.textContent))"
    )
    table = {row[0]: row[1:] for row in cells[1:]}
    accuracy = float(np.mean(called == labels))
    lo, hi = bounds["binary_accuracy"]
    assert table["accuracy"] == [f"{accuracy:.3f}", f"[{lo:.3f}, {hi:.3f}]"]
    lo, hi = bounds["recall"]
    assert table["sensitivity"][1] == f"[{lo:.3f}, {hi:.3f}]"
    text = loaded.evaluate("document.querySelector('.stats').textContent")
    assert f"{len(rows)}images scored" in text and "2rejected" in text


def test_natural_key_orders_numbers_as_numbers():
    names = ["malignant (10).png", "Malignant (3).png", "malignant (2).png", "benign (1).png"]
    names += ["malignant (2)_b.png", "malignant.png", "a10b2", "a10b10", "a9"]
    assert sorted(names, key=gallery.natural_key) == [
        "a9",
        "a10b2",
        "a10b10",
        "benign (1).png",
        "malignant (2).png",
        "malignant (2)_b.png",
        "Malignant (3).png",
        "malignant (10).png",
        "malignant.png",
    ]


def test_names_sort_naturally_and_the_notice_shows(browser, tmp_path):
    """BUSI's names in the page: "malignant (2)" before "malignant (10)", on load and when
    the image column is clicked (then reversed); the research-use notice above all else."""
    rows = _rows(12)
    for i, r in enumerate(rows):
        r["image_id"] = f"malignant/malignant ({(i * 7) % 12 + 1}).png"
        r["gradcam_overlay"] = f"overlays/malignant/malignant ({(i * 7) % 12 + 1})_x_gradcam.png"
    _write_thumbs(tmp_path, rows)
    gallery.write_index(str(tmp_path), rows, [], {"rejected": 0}, ("benign", "malignant"))
    loaded = browser.open((tmp_path / gallery.INDEX).as_uri())
    loaded.wait_for("document.body.dataset.renderedMs")
    want = [f"malignant/malignant ({n}).png" for n in range(1, 13)]
    assert _column(loaded, "id") == want
    loaded.evaluate("document.querySelector('th[data-key=id]').click()")  # same key: reverse
    assert _column(loaded, "id") == want[::-1]
    loaded.evaluate("document.querySelector('th[data-key=id]').click()")
    assert _column(loaded, "id") == want
    notice = loaded.evaluate("document.getElementById('notice').textContent")
    assert notice.startswith("Research use only, not for diagnosis.")
    first = loaded.evaluate("document.body.firstElementChild.id")
    assert first == "notice" and loaded.exceptions == []


def test_a_10000_row_gallery_opens_quickly(browser, tmp_path):
    rows = _rows(10_000, seed=1)
    t0 = time.perf_counter()
    gallery.write_index(
        str(tmp_path), rows, [], {"source": "s", "rejected": 0}, ("benign", "malignant")
    )
    written = time.perf_counter() - t0
    size_mb = (tmp_path / gallery.INDEX).stat().st_size / 1e6
    t0 = time.perf_counter()
    loaded = browser.open((tmp_path / gallery.INDEX).as_uri())
    rendered_ms = float(loaded.wait_for("document.body.dataset.renderedMs"))
    wall = time.perf_counter() - t0
    assert (
        loaded.evaluate("document.querySelectorAll('#rows tbody tr').length")
        == gallery.DEFAULT_PAGE_SIZE
    )
    assert "of 10000" in loaded.evaluate("document.getElementById('status').textContent")
    t0 = time.perf_counter()
    loaded.evaluate("document.querySelector('th[data-key=p]').click()")
    sort_ms = 1000 * (time.perf_counter() - t0)
    print(
        f"\n10,000-row gallery: {size_mb:.1f} MB written in {written:.1f} s; first page "
        f"drawn {rendered_ms:.0f} ms after navigation ({wall:.2f} s to load in all); "
        f"sort {sort_ms:.0f} ms"
    )
    assert rendered_ms < 3000, rendered_ms
