"""The mask-shape rule (how much of the ORACLE is the outline): its five numbers on shapes
whose values are known, the rule fitted on train and scored on test on a constructed case
with a known AUC, seeded intervals, and the rule beside the ORACLE in intervals.json, the run
summary, the model card and the report, all from dicts (no pipeline run)."""

import math

import numpy as np
import pytest

from modules import contract as C
from modules import image_io
from modules.intervals import mask_shape
from modules.raw_examples import build_raw_example, without_mask

SIDE = 96


def disc(radius: float, centre=(48, 48), side: int = SIDE) -> np.ndarray:
    rows, cols = np.mgrid[:side, :side]
    return (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= radius**2


def ellipse(a: float, b: float, side: int = SIDE) -> np.ndarray:
    rows, cols = np.mgrid[:side, :side]
    return ((rows - side / 2) / b) ** 2 + ((cols - side / 2) / a) ** 2 <= 1


def star(spikes: int, outer: float, inner: float, side: int = SIDE) -> np.ndarray:
    """A spiky star: radius alternating between `outer` (at the tips) and `inner`."""
    rows, cols = np.mgrid[:side, :side]
    y, x = rows - side / 2, cols - side / 2
    angle, r = np.arctan2(y, x), np.hypot(y, x)
    phase = np.abs(((angle * spikes / (2 * np.pi)) % 1.0) - 0.5) * 2  # 1 at tips, 0 between
    return r <= inner + (outer - inner) * phase**4


def feature(mask, name: str) -> float:
    return float(mask_shape.shape_features(mask)[mask_shape.FEATURES.index(name)])


def test_a_disc_is_solid_round_and_has_the_discs_perimeter():
    d = disc(30)
    assert feature(d, "solidity") > 0.98
    assert feature(d, "aspect") == pytest.approx(1.0, abs=0.02)
    assert feature(d, "extent") == pytest.approx(math.pi / 4, abs=0.04)  # pixel disc
    assert feature(d, "area_fraction") == pytest.approx(math.pi * 30**2 / SIDE**2, rel=0.02)
    # 4 pi for a true disc; scikit-image's perimeter estimate overshoots a pixel disc's by ~10 %
    assert feature(d, "perimeter2_per_area") == pytest.approx(4 * math.pi, rel=0.15)


def test_a_spiky_star_has_low_solidity_and_a_long_outline():
    s = star(9, 44, 12)
    assert feature(s, "solidity") < 0.6
    assert feature(s, "perimeter2_per_area") > 3 * 4 * math.pi
    assert feature(s, "aspect") == pytest.approx(1.0, abs=0.1)  # spiky, not elongated


def test_aspect_is_the_ellipses_elongation_in_any_orientation():
    wide, tall = ellipse(40, 20), ellipse(20, 40)
    assert feature(wide, "aspect") == pytest.approx(2.0, rel=0.03)
    assert feature(tall, "aspect") == pytest.approx(feature(wide, "aspect"))
    line = np.zeros((SIDE, SIDE), bool)
    line[40, 10:30] = True  # one pixel wide: a unit square each, no division by zero
    assert feature(line, "aspect") == pytest.approx(20.0)
    dot = np.zeros((SIDE, SIDE), bool)
    dot[5, 5] = True
    assert np.isfinite(mask_shape.shape_features(dot)).all()


def test_an_empty_mask_is_a_vanishing_disc():
    for empty in (None, np.zeros((SIDE, SIDE), bool)):
        assert mask_shape.shape_features(empty).tolist() == mask_shape.EMPTY.tolist()
    assert mask_shape.features_of([]).shape == (0, 5)
    assert "solidity 1" in mask_shape.EMPTY_NOTE


def test_masks_round_trip_through_the_records_png():
    d = disc(20)
    assert (mask_shape.mask_from_png(image_io.encode_mask(d)) == d).all()
    assert mask_shape.mask_from_png(b"") is None


def _shapes(n_benign: int, n_malignant: int, seed: int) -> tuple[list, np.ndarray]:
    """Benign: discs of random size and place; malignant: stars."""
    rng = np.random.default_rng(seed)
    benign = [disc(rng.uniform(10, 30), tuple(rng.integers(38, 58, 2))) for _ in range(n_benign)]
    malignant = [
        star(int(rng.integers(6, 12)), rng.uniform(30, 44), 10) for _ in range(n_malignant)
    ]
    return benign + malignant, np.array([0] * n_benign + [1] * n_malignant)


def _score(tests, seed=42, resamples=300):
    train, eval_ = _shapes(20, 10, 0), _shapes(10, 6, 1)
    return mask_shape.score_rule(
        (mask_shape.features_of(train[0]), train[1]),
        (mask_shape.features_of(eval_[0]), eval_[1]),
        tests,
        "sensitivity",
        0.95,
        "empirical",
        0,
        resamples,
        seed,
        0.95,
    )


def test_rule_fitted_on_train_scores_a_constructed_test_split_as_expected():
    """Test: 10 copies of one disc (benign), 5 stars and 5 copies of the same disc
    (malignant). The stars outrank every disc, the malignant discs tie with the benign
    ones: AUC = (5 x 10 + 5 x 10 / 2) / 100 = 0.75; at the threshold chosen on eval (where
    every malignant is a star), the stars are called and no disc: sensitivity 0.5,
    specificity 1."""
    d, stars = disc(22), _shapes(0, 5, 7)[0]
    masks = [d] * 10 + stars + [d] * 5
    labels = np.array([0] * 10 + [1] * 10)
    report, scores = _score({"constructed": (mask_shape.features_of(masks), labels)})
    entry = report["constructed"]
    assert entry["example_count"] == 20
    assert entry["metrics"]["auc"] == pytest.approx(0.75)
    assert entry["metrics"]["recall"] == pytest.approx(0.5)
    assert entry["metrics"]["specificity"] == pytest.approx(1.0)
    assert ((scores["constructed"] > 0.5) == np.array([0] * 10 + [1] * 5 + [0] * 5)).all()
    fit = report["fit"]
    assert fit["train_images"] == 30 and fit["eval_sensitivity"] == 1.0
    assert fit["coefficients"]["solidity"] < 0  # low solidity: malignant
    assert set(fit["coefficients"]) == {*mask_shape.FEATURES, "intercept"}


def test_intervals_are_seeded():
    masks, labels = _shapes(12, 8, 3)
    labels[[0, 1, 12]] = [1, 1, 0]  # some discs malignant, a star benign: not separable
    tests = {"t": (mask_shape.features_of(masks), labels)}
    a, b, c = _score(tests, seed=42), _score(tests, seed=42), _score(tests, seed=43)
    assert a[0]["t"] == b[0]["t"] and a[0]["t"]["intervals"] != c[0]["t"]["intervals"]
    lo, hi = a[0]["t"]["intervals"]["auc"]
    assert lo <= a[0]["t"]["metrics"]["auc"] <= hi


def test_three_classes_malignant_against_the_rest_with_empty_masks_for_normal():
    """With three classes the rule scores malignant against benign and normal; normal images
    have no mask (the vanishing disc's features) and learn a low score from train."""
    b, m = _shapes(10, 8, 11), _shapes(6, 5, 12)
    train = (mask_shape.features_of(b[0] + [None] * 8), np.concatenate([b[1], [2] * 8]))
    eval_ = (mask_shape.features_of(m[0] + [None] * 4), np.concatenate([m[1], [2] * 4]))
    t = _shapes(6, 6, 13)
    labels = np.concatenate([t[1], [2] * 6])
    report, scores = mask_shape.score_rule(
        train,
        eval_,
        {"t": (mask_shape.features_of(t[0] + [None] * 6), labels)},
        "sensitivity",
        0.95,
        "empirical",
        0,
        300,
        42,
        0.95,
    )
    entry = report["t"]
    assert entry["example_count"] == 18 and entry["metrics"]["auc"] == 1.0
    assert entry["metrics"]["specificity"] == 1.0  # benign and normal: not malignant
    assert (scores["t"][-6:] < 0.5).all() and np.isfinite(entry["intervals"]["auc"]).all()


def test_decision_scores_cross_one_half_at_the_threshold_and_keep_the_order():
    p = np.array([0.0, 0.1, 0.29, 0.3, 0.31, 0.9, 1.0])
    got = mask_shape.decision_scores(p, 0.3)
    assert ((got > 0.5) == (p >= 0.3)).all() and (np.diff(got) > 0).all()


def _records(split: str, seed: int, n_b: int, n_m: int) -> list[bytes]:
    """Raw records of `_shapes`: a black PNG image with each shape as its mask."""
    masks, labels = _shapes(n_b, n_m, seed)
    image = image_io.encode_mask(np.zeros((SIDE, SIDE), bool))  # any PNG of the mask's size
    return [
        build_raw_example(image, image_io.encode_mask(m), label=int(y), image_id=f"{split}/{i:02d}")
        for i, (m, y) in enumerate(zip(masks, labels, strict=True))
    ]


def test_report_from_records_fits_on_train_and_answers_in_image_id_order():
    """mask_shape_report on raw records (no model: ROI off): the ORACLE entry, the rule's
    description, and per-image scores in the test records' image-id order; without a mask
    in train there is nothing to learn from."""
    from modules.intervals.component import mask_shape_report

    splits = {"train": _records("train", 0, 20, 10), "eval": _records("eval", 1, 10, 6)}
    splits["test"] = _records("test", 2, 8, 6)[::-1]  # any order in, image-id order out
    info = {"operating_point": "sensitivity", "operating_target": 0.95, "seed": 42}
    report, scores = mask_shape_report(splits, info, 200, 42, 0.95)
    assert report["features"] == list(mask_shape.FEATURES)
    assert report["threshold_method"] == "empirical" and report["fit_split"] == "train"
    assert report["oracle"]["metrics"]["auc"] == 1.0 and report["oracle"]["example_count"] == 14
    assert "oracle_24px" not in report and "predicted" not in report  # no segmenter
    called = np.array(scores["oracle"]) > 0.5
    assert called.tolist() == [False] * 8 + [True] * 6  # ids test/00..13: 8 discs, 6 stars
    no_masks = {s: [without_mask(r) for r in rs] for s, rs in splits.items()}
    assert mask_shape_report(no_masks, info, 200, 42, 0.95) is None


def test_with_a_segmenter_the_rule_is_refitted_at_24_px_and_scored_on_its_outline():
    """With a segmenter: the masks reduced as the served graph reduces them (Transform's
    mask at the segmenter's size, then `small_mask`), the rule refitted on them, and scored
    on the outline the segmenter drew: the radiologist's own outline gives the same answers
    as `oracle_24px`; a segmenter that finds nothing (roi_source none) gives every image the
    empty outline, AUC 0.5."""
    from modules.intervals.component import mask_shape_report, served_small_masks

    splits = {"train": _records("train", 0, 20, 10), "eval": _records("eval", 1, 10, 6)}
    splits["test"] = _records("test", 2, 8, 6)
    small = served_small_masks(splits["test"], 48, C.DEFAULT_MAX_IMAGE_PIXELS)
    assert small.shape == (14, C.ROI_MASK_SIZE, C.ROI_MASK_SIZE) and small.max() == 1
    discs = _shapes(8, 0, 2)[0]  # the first 8 test images; the stars' spikes fill in
    for reduced, mask in zip(small[:8], discs, strict=True):
        assert reduced.mean() == pytest.approx(mask.mean(), abs=0.02)
    info = {"operating_point": "sensitivity", "operating_target": 0.95, "seed": 42}
    info["segmenter_size"] = 48
    drawn = (small, np.array([C.ROI_PREDICTED] * 14))
    report, scores = mask_shape_report(splits, info, 200, 42, 0.95, drawn)
    assert report["oracle_24px"]["metrics"] == report["predicted"]["metrics"]
    assert scores["predicted"] == scores["oracle_24px"] and len(scores["oracle"]) == 14
    assert report["oracle_24px"]["metrics"]["auc"] == 1.0  # stars stay stars at 24 px
    assert "24 px" in report["predicted"]["masks"]
    nothing = (np.ones_like(small), np.array([C.ROI_NONE] * 14))
    assert mask_shape_report(splits, info, 200, 42, 0.95, nothing)[0]["predicted"]["metrics"][
        "auc"
    ] == pytest.approx(0.5)
    alone = mask_shape_report(splits, info, 200, 42, 0.95)[0]  # no outline drawn: no entry
    assert "oracle_24px" in alone and "predicted" not in alone


# ------------------------------------------------------------------ beside the ORACLE


def _entry(auc: float, lo: float, hi: float) -> dict:
    metrics = {"auc": auc, "binary_accuracy": 0.9, "recall": 0.95, "specificity": 0.88}
    return {
        "example_count": 96,
        "metrics": {**metrics, "f1_score": 0.85, "precision": 0.8},
        "intervals": {
            "auc": [lo, hi],
            "binary_accuracy": [0.85, 0.95],
            "recall": [0.9, 1.0],
            "specificity": [0.8, 0.94],
            "f1_score": [0.8, 0.9],
            "precision": [0.7, 0.9],
        },
        "threshold": 0.39,
        "masks": "the radiologist's",
        "coefficients": {"solidity": -1.1, "intercept": -1.0},
    }


RULE = {
    "rule": mask_shape.RULE,
    "features": list(mask_shape.FEATURES),
    "operating_point": "sensitivity",
    "operating_target": 0.95,
    "threshold_method": "empirical",
    "oracle": _entry(0.969, 0.928, 0.998),
    "oracle_24px": _entry(0.951, 0.91, 0.99),
    "predicted": _entry(0.812, 0.72, 0.89),
}


def test_the_run_summary_prints_the_rule_under_the_oracle():
    from pipeline.results import format_decision

    res = {
        "metrics": {"overall": {"auc": 0.86}},
        "intervals": {"overall": {"auc": (0.78, 0.94)}},
        "oracle": {"metrics": {"auc": 0.97, "binary_accuracy": 0.93}, "intervals": {}},
        "mask_shape_rule": RULE,
    }
    lines = format_decision(res).splitlines()
    at = next(i for i, line in enumerate(lines) if "(ORACLE): AUC 0.970" in line)
    rule = lines[at + 1]
    assert (
        "mask's shape alone" in rule
        and "radiologist's outline (ORACLE) AUC 0.969 [0.93-1.00]" in rule
    )
    assert "sensitivity 0.950 [0.90-1.00], specificity 0.880 [0.80-0.94]" in rule
    assert "at 24 px 0.951 [0.91-0.99]" in rule
    assert "segmenter's outline (deployable) AUC 0.812 [0.72-0.89]" in rule
    assert "mask's shape" not in format_decision({**res, "mask_shape_rule": None})


def test_the_card_states_the_rule_beside_the_oracle_table():
    from test_model_card import INFO, INTERVALS

    from modules.model_card.card import build_card, render_markdown

    card = build_card(INFO, {**INTERVALS, "mask_shape_rule": RULE}, None, None, {}, "1")
    assert card["test_metrics"]["mask_shape_rule"]["oracle"]["metrics"]["auc"] == 0.969
    text = render_markdown(card)
    oracle = text.index("**ORACLE: each request with the radiologist's mask**")
    rule = text.index("**No pixel, the mask's shape alone")
    assert oracle < rule < text.index("## Limitations")
    assert "| radiologist's outline (ORACLE) | 96 | 0.969 [0.93, 1.00] | 0.900" in text
    assert "| segmenter's outline, 24 px (deployable) | 96 | 0.812 [0.72, 0.89]" in text
    plain = build_card(INFO, INTERVALS, None, None, {}, "1")
    assert "mask's shape alone" not in render_markdown(plain)


def _run(labels: np.ndarray, scores: np.ndarray, ids: list[str]) -> dict:
    """A report result (lesionlens.report.run_variant.collect) holding only the rule."""
    from modules.intervals.bootstrap import bootstrap_slices, rate_metrics

    own = bootstrap_slices(labels, (scores,), rate_metrics, {}, [], 1000, 42, 0.95)["overall"]
    per_image = {"image_id": ids, "label": labels.tolist()}
    return {
        "variant": {"seed": 42},
        "results": {
            "mask_shape_rule": {"oracle": own},
            "per_image": {**per_image, "mask_shape_rule": {"oracle": scores.tolist()}},
        },
    }


def test_the_report_states_the_rule_with_the_interval_of_its_mean_over_seeds():
    """One seed: the run's own interval; the same answers in another image order under a
    second seed: the same interval; the line beside the ORACLE table says it."""
    from lesionlens.report.render import _shape_rule_lines
    from lesionlens.report.seeds import shape_rule_intervals

    rng = np.random.default_rng(5)
    labels = np.array([0] * 30 + [1] * 14)
    scores = np.clip(rng.normal(0.35 + 0.3 * labels, 0.2), 0, 1)
    ids = [f"img{i:02d}" for i in range(len(labels))]
    one = _run(labels, scores, ids)
    own = one["results"]["mask_shape_rule"]["oracle"]
    alone = shape_rule_intervals([one], 1000, 42, 0.95)["oracle"]
    for metric in ("auc", "recall", "specificity", "binary_accuracy"):
        assert alone[metric] == pytest.approx(tuple(own["intervals"][metric]), abs=1e-12)
    again = _run(labels[::-1], scores[::-1], ids[::-1])
    assert shape_rule_intervals([one, again], 1000, 42, 0.95)["oracle"] == alone
    (line,) = _shape_rule_lines({"ROI on, SMOTE on": [one, again]})
    lo, hi = alone["auc"]
    auc = own["metrics"]["auc"]
    assert line.startswith("- ROI on, SMOTE on: radiologist's outline (ORACLE): AUC ")
    assert f"AUC {auc:.3f} ± 0.000 [{lo:.2f}, {hi:.2f}]" in line
    assert _shape_rule_lines({"ROI off": [{"variant": {"seed": 42}, "results": {}}]}) == []
