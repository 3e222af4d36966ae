"""`lesionlens report`: the grid it plans, and the report it renders from real pipeline runs
(the shared demo run and the three-class run, collected as grid variants)."""

import json
import os

import numpy as np
import pytest

from lesionlens.report import grid, render, run_variant
from lesionlens.report.grid import Variant
from modules import contract as C


def test_grid_is_the_papers_ablation_with_seeds_outermost():
    variants = grid.plan(["grouped", "paper"], [2, 3], [True, False], [True, False], 3)
    assert len(variants) == 48 and len(set(variants)) == 48
    assert [v.seed for v in variants[:16]] == [42] * 16  # a stopped report has whole seeds
    cfg = grid.profile_config("report-cpu", variants[0], "/tmp/r")
    assert (cfg.image_size, cfg.epochs, cfg.weights, cfg.train_roi.value) == (
        160,
        16,
        "imagenet",
        "mask",
    )
    assert (cfg.backbone, cfg.segmenter_encoder, cfg.kept_epoch) == (
        "efficientnet-lite0",
        "efficientnet-lite0",
        "best_eval_auc",
    )
    assert cfg.classes == ("benign", "malignant") and cfg.thresholds == {}
    assert cfg.data_root == "/tmp/r/records/grouped-2c"
    off = grid.profile_config("paper", Variant("paper", 3, False, False, 43), "/tmp/r")
    assert (off.image_size, off.roi, off.smote.value, off.seed) == (299, False, "none", 43)
    assert off.classes == ("benign", "malignant", "normal")


@pytest.fixture(scope="module")
def report(demo_pipeline, three_class_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    runs = [
        (demo_pipeline[0], Variant("grouped", 2, True, True, 42)),
        (three_class_run[0], Variant("grouped", 3, True, True, 42)),
    ]
    for cfg, variant in runs:
        path = out / "runs" / variant.name / "result.json"
        path.parent.mkdir(parents=True)
        result = run_variant.collect(cfg, variant, 100.0, str(path.parent))
        path.write_text(json.dumps(result, default=list))

    # finished variants are read back, nothing is run again (a stopped report resumes)
    def fail(line):
        raise AssertionError(f"ran a finished variant: {line}")

    results = list(grid.run_all(str(out), "report-cpu", [v for _, v in runs], fail))
    md, html = render.render(results, str(out), "test report", 600.0)
    return out, results, open(md).read(), open(html).read()


def test_report_states_every_run_with_the_papers_row(report):
    out, results, text, html = report
    two, three = results
    assert "## grouped protocol, 2 classes" in text and "## grouped protocol, 3 classes" in text
    auc = two["results"]["metrics"]["overall"]["auc"]
    lo, hi = two["results"]["intervals"]["overall"]["auc"]
    row = next(line for line in text.splitlines() if line.startswith("| ROI on, SMOTE on | 1 |"))
    assert f"| {auc:.3f} [{lo:.2f}, {hi:.2f}] (paper 0.9995) |" in row  # Table 5, same row
    for published in ("0.9897", "0.9924", "0.9848", "0.9882"):
        assert f"(paper {published}) |" in row
    assert "(paper 0.9915) |" in text  # Table 7, three classes
    accuracy = three["results"]["multiclass"]["slices"]["overall"]["metrics"]["accuracy"]
    assert f"| ROI on, SMOTE on | 1 | {accuracy:.3f}" in text
    assert '"empty mask => normal" (ORACLE, no image) accuracy' in text
    assert "| *paper (one P100)* | | | 121 | 0.09 |" in text
    cal = two["results"]["calibration"]
    assert (
        f"- ROI on, SMOTE on: test ECE {cal['test_ece_calibrated']:.3f} (without temperature "
        f"scaling {cal['test_ece_uncalibrated']:.3f}), temperature {cal['temperature']:.3f}"
    ) in text
    assert "<table>" in html and html.count("<img") == text.count("![")


def test_report_figures_are_real_pngs(report):
    out, results, text, _ = report
    for name in ("roc", "reliability", "confusion", "training"):
        for setting in ("grouped_2c", "grouped_3c"):
            png = out / "report" / f"{name}_{setting}.png"
            assert f"]({png.name})" in text
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    for result in results:
        check_gallery(result, out)
    copied = list((out / "report").glob("gallery_*.png"))
    assert len(copied) == sum(len(r["gallery"]) for r in results) == text.count("P(malignant)")
    assert all(r["inference_s_per_image"] > 0 for r in results)


def _kind(label: int, called: int) -> str | None:
    if label == C.POSITIVE_LABEL:
        return "true positive" if called == C.POSITIVE_LABEL else "false negative"
    return "false positive" if called == C.POSITIVE_LABEL else None


def check_gallery(result: dict, out) -> None:
    """The run's Grad-CAM gallery: per kind, the first images of that kind by the run's own
    answers without a mask (every test split here has malignant images, so it is never
    empty), each drawn as a PNG in the run's folder."""
    per_image = result["results"]["per_image"]
    answers = (per_image["image_id"], per_image["label"], per_image["deployable"][C.CLASS_ID])
    expected: dict[str, list[str]] = {}
    for image_id, label, called in zip(*answers, strict=True):
        kind = _kind(label, called)
        if kind and len(expected.setdefault(kind, [])) < run_variant.GALLERY_PER_KIND:
            expected[kind].append(image_id)
    got: dict[str, list[str]] = {}
    for item in result["gallery"]:
        got.setdefault(item["kind"], []).append(item["image_id"])
        png = out / "runs" / Variant(**result["variant"]).name / "gallery" / item["file"]
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    assert result["gallery"] and got == expected


def test_finished_only_renders_what_has_run_and_runs_nothing(report, capsys):
    from lesionlens.cli import main

    out = report[0]
    argv = ["report", "no-such-src", str(out), "--seeds", "1", "--finished-only"]
    assert main([*argv, "--protocols", "grouped"]) == 0  # 8 planned, the 2 finished rendered
    assert "2 of 8 planned runs have finished" in capsys.readouterr().out
    assert "## grouped protocol, 3 classes" in (out / "report" / "report.md").read_text()
    assert main([*argv, "--protocols", "paper"]) == 2
    assert "none of the 8 planned runs has finished" in capsys.readouterr().err


def test_a_roi_run_reuses_the_segmenter_its_smote_sibling_trained(report, demo_pipeline):
    out, results, _, _ = report
    trained = Variant("grouped", 2, True, True, 42)  # the demo run, collected in `report`
    (out / "runs" / trained.name / "tfx").symlink_to(
        os.path.dirname(demo_pipeline[0].pipeline_root)
    )
    segmenter = run_variant.newest_model(demo_pipeline[0].pipeline_root, "segmenter_trainer")
    assert segmenter and segmenter.startswith(demo_pipeline[0].pipeline_root)
    sibling = Variant("grouped", 2, True, False, 42)
    found = run_variant.sibling_segmenter(str(out), "report-cpu", sibling)
    assert os.path.realpath(found) == os.path.realpath(segmenter)
    assert run_variant.sibling_segmenter(str(out), "report-cpu", trained) is None  # not run
    assert (
        run_variant.sibling_segmenter(
            str(out), "report-cpu", Variant("grouped", 2, False, False, 42)
        )
        is None
    )
    reused = {**results[0], "segmenter_model": segmenter}
    note = "\n".join(render._times([results[0], reused]))
    assert "1 of 2 ROI-on runs imported the segmenter that their SMOTE sibling had trained" in note


def test_the_interval_is_that_of_the_mean_over_seeds(report):
    """One seed: the run's own bootstrap interval. The same answers under a second seed, in
    another image order: the same interval (images are matched by id, the mean of equal
    metrics is that metric). Answers that differ: an interval around their mean."""
    from lesionlens.report.seeds import mean_intervals

    two = report[1][0]
    names = ["benign", "malignant"]
    own = two["results"]["intervals"]["overall"]
    alone = mean_intervals([two], names, False, 1000, 42, 0.95)
    for key in ("binary_accuracy", "auc", "recall", "specificity", "f1_score"):
        assert alone[key] == pytest.approx(own[key], abs=1e-9), key
    per_image = two["results"]["per_image"]
    backwards = {
        "image_id": per_image["image_id"][::-1],
        "label": per_image["label"][::-1],
        "deployable": {k: v[::-1] for k, v in per_image["deployable"].items()},
    }
    again = {**two, "results": {**two["results"], "per_image": backwards}}
    assert mean_intervals([two, again], names, False, 1000, 42, 0.95) == alone
    flipped = {k: list(v) for k, v in backwards["deployable"].items()}
    flipped["class_id"] = [1 - c for c in flipped["class_id"]]  # every call reversed
    other = {
        **two,
        "results": {**two["results"], "per_image": {**backwards, "deployable": flipped}},
    }
    mixed = mean_intervals([two, other], names, False, 1000, 42, 0.95)
    lo, hi = mixed["binary_accuracy"]
    assert lo == pytest.approx(0.5) and hi == pytest.approx(0.5)  # right on exactly one of two


def test_the_likeliest_class_and_shortcut_intervals_are_those_of_the_mean(report):
    """The lines beside the three-class model: one seed gives the run's own intervals; a
    second run that is always right on the likeliest class moves that interval to the
    midpoint of the first run's and 1 (every resample's mean accuracy is (a + 1) / 2)."""
    from lesionlens.report.seeds import rule_intervals

    three = report[1][1]
    names = ["benign", "malignant", "normal"]
    multi = three["results"]["multiclass"]
    alone = rule_intervals([three], names, 1000, 42, 0.95)
    assert {("argmax", "deployable"), ("shortcuts", "empty_mask_is_normal")} <= set(alone)
    for (section, key), bounds in alone.items():
        own = multi[section][key]["intervals"]["accuracy"]
        assert bounds == pytest.approx(tuple(own), abs=1e-9), (section, key)
    per_image = three["results"]["per_image"]
    right = {**per_image["deployable"], "probabilities": np.eye(3)[per_image["label"]].tolist()}
    perfect = {
        **three,
        "results": {**three["results"], "per_image": {**per_image, "deployable": right}},
    }
    both = rule_intervals([three, perfect], names, 1000, 42, 0.95)
    lo, hi = alone[("argmax", "deployable")]
    assert both[("argmax", "deployable")] == pytest.approx(((lo + 1) / 2, (hi + 1) / 2))
    # the empty-mask rule reads the same masks in both runs: the same interval
    empty = ("shortcuts", "empty_mask_is_normal")
    assert both[empty] == alone[empty]


def test_report_html_renders_in_a_browser(report, tmp_path):
    """report.html in headless Chromium: its tables, and every figure found by its relative
    link and decoded."""
    from chromium import browser_or_skip

    out, _, text, _ = report
    with browser_or_skip() as browser:
        page = browser.open((out / "report" / "report.html").as_uri())
        widths = page.wait_for(
            "(() => { const i = [...document.images];"
            " return i.every(x => x.complete) && i.map(x => x.naturalWidth); })()"
        )
        assert len(widths) == text.count("![") and min(widths) > 0
        assert page.evaluate("document.querySelectorAll('table').length") >= 4
        title = page.evaluate("document.title")
        assert title.startswith(("test report", "LesionLens ablation report"))  # rerendered
        assert title == page.evaluate("document.querySelector('h1').textContent")
        assert page.exceptions == []
        assert page.screenshot(tmp_path / "report.png").stat().st_size > 10_000
