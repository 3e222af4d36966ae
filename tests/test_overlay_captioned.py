"""The captioned Grad-CAM overlay (`serving.overlay.render`): the caption states the record,
the original sits beside the overlay at its own resolution, the ROI outline lies on the
`roi_mask` boundary and is smooth, the radiologist's mask has its own outline and legend."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import distance_transform_edt

from modules import contract as C
from serving import overlay

GREEN, MAGENTA = overlay.OUTLINE_COLOUR, overlay.MASK_COLOUR
M = C.ROI_MASK_SIZE


def _image(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(40, 200, (height, width), dtype=np.uint8))


def _record(**changes) -> dict:
    """A `lesionlens predict` record (the keys `score` rows share)."""
    record = {
        "class_id": 1,
        "class_name": "malignant",
        "classes": ["benign", "malignant"],
        "probabilities": [0.2731, 0.7269],
        C.POSITIVE_PROBABILITY: 0.7269,
        C.THRESHOLD: 0.4125,
        C.ROI_SOURCE: C.ROI_PREDICTED,
    }
    return {**record, **changes}


def _panels(png: bytes, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    picture = Image.open(io.BytesIO(png)).convert("RGB")
    left, right = overlay.panel_boxes(size)
    return np.asarray(picture.crop(left)), np.asarray(picture.crop(right))


def _stated(caption: str) -> dict:
    """What the caption says, read back with the words it uses."""
    p, side, t = re.search(r"P\(malignant\) ([\d.]+) (>=|<) threshold ([\d.]+)", caption).groups()
    return {
        "class_name": re.search(r"^predicted: (.+)$", caption, re.M).group(1),
        C.POSITIVE_PROBABILITY: float(p),
        C.THRESHOLD: float(t),
        "side": side,
        C.ROI_SOURCE: re.search(r"roi_source=(\w+)", caption).group(1),
        "called": re.search(r": (not called|called) malignant", caption).group(1),
    }


@pytest.mark.parametrize(
    "record",
    [
        _record(),
        _record(
            class_id=0,
            class_name="benign",
            probabilities=[0.9, 0.1],
            positive_probability=0.1,
            roi_source=C.ROI_GIVEN,
        ),
        _record(class_name="normal", positive_probability=0.05, roi_source=C.ROI_NONE),
    ],
)
def test_caption_states_the_records_class_probability_threshold_and_roi_source(record):
    cam = np.random.default_rng(1).random((10, 10)).astype(np.float32)
    prediction = overlay.Prediction.from_record(record, "lesionlens", "7")
    png, caption = overlay.render(_image(120, 90), cam, prediction)
    stated = _stated(caption)
    assert stated["class_name"] == record["class_name"]
    for key in (C.POSITIVE_PROBABILITY, C.THRESHOLD):  # as printed, to 3 decimals
        assert stated[key] == float(f"{record[key]:.3f}"), key
    assert stated[C.ROI_SOURCE] == record["roi_source"]
    above = record["positive_probability"] >= record["threshold"]
    assert (stated["side"], stated["called"]) == (
        (">=", "called") if above else ("<", "not called")
    )
    assert "model: lesionlens, version 7" in caption
    assert "Grad-CAM 0-1: where the classifier's evidence" in caption
    assert Image.open(io.BytesIO(png)).format == "PNG"


def test_the_original_sits_beside_the_overlay_at_its_own_resolution():
    image, cam = _image(300, 200), np.eye(5, dtype=np.float32)
    png, _ = overlay.render(image, cam, overlay.Prediction.from_record(_record(), "m", None))
    picture = Image.open(io.BytesIO(png))
    left, right = _panels(png, image.size)
    assert picture.width >= 2 * 300 and picture.height > 200
    assert np.array_equal(left, overlay.to_rgb(image))  # pixel for pixel
    # no ROI: the blend of the heat scaled by P(malignant) 0.7269, the decided class's
    assert np.array_equal(right, np.asarray(overlay.blend(image, cam * np.float32(0.7269))))


def test_heat_is_scaled_by_how_sure_the_call_is():
    """The server divides every map by its own maximum; the overlay multiplies it by
    P(decided class), so a weak call draws a faint map and the caption says by how much."""
    image, cam = _image(120, 90), np.eye(5, dtype=np.float32)
    sure = _record(probabilities=[0.01, 0.99], positive_probability=0.99)
    weak = _record(probabilities=[0.45, 0.55], positive_probability=0.55)
    drawn = {}
    for name, record in (("sure", sure), ("weak", weak)):
        png, caption = overlay.render(image, cam, overlay.Prediction.from_record(record, "m", "1"))
        right = _panels(png, image.size)[1].astype(int)
        drawn[name] = right[..., 0] - right[..., 2]  # red over blue: hot
        factor = record["probabilities"][1]
        assert f"scaled by P(malignant) = {factor:.2f}" in caption
    assert drawn["sure"].max() > drawn["weak"].max() + 40
    unknown = overlay.Prediction(class_name="malignant")  # a record without probabilities
    png, caption = overlay.render(image, cam, unknown)
    assert "each map scaled to its own maximum" in caption
    assert np.array_equal(_panels(png, image.size)[1], np.asarray(overlay.blend(image, cam)))
    benign = _p(class_id=0, class_name="benign", probabilities=[0.8, 0.2])
    assert overlay.scaled_heat(cam, benign)[0].max() == pytest.approx(0.8)


def test_the_caption_names_the_models_explanation_method():
    method = "HiResCAM of the decided class (logit margin), under the lesion attention"
    joint = overlay.Prediction.from_record(_record(), "m", "1", explanation=method)
    _, caption = overlay.render(_image(90, 60), np.eye(3, dtype=np.float32), joint)
    assert "right: HiResCAM over it" in caption and "HiResCAM 0-1: where" in caption
    _, caption = overlay.render(_image(90, 60), np.eye(3, dtype=np.float32), _p())
    assert "right: Grad-CAM over it" in caption  # a model that names no method


def test_the_caption_scales_with_the_image_and_the_font_is_named():
    assert overlay.font_size(40, 30) == 12  # never under 12 px
    assert overlay.font_size(560, 420) == 20
    assert overlay.font_size(4000, 3000) == 64
    small = Image.open(io.BytesIO(overlay.render(_image(40, 30), np.ones((2, 2)), _p())[0]))
    large = Image.open(io.BytesIO(overlay.render(_image(900, 600), np.ones((2, 2)), _p())[0]))
    assert small.width >= 36 * 12  # widened so that the caption keeps its size
    assert large.height - 600 > 2 * (small.height - 30)  # taller text on a larger image
    assert overlay.font_name().endswith("DejaVuSans.ttf") or overlay.font_name().startswith(
        "Pillow"
    )


def test_a_probability_next_to_the_threshold_gets_the_digits_that_tell_them_apart():
    caption = "\n".join(_p(positive_probability=0.412516, threshold=0.41254).caption_lines())
    assert "P(malignant) 0.41252 < threshold 0.41254: not called malignant" in caption


def _p(**changes) -> overlay.Prediction:
    return overlay.Prediction.from_record(_record(**changes), "m", "1")


def _staircase_edges(roi: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """bool [H, W]: pixels with a 4-neighbour on the other side of the nearest-neighbour
    upsampled mask's edge (the image border is no edge)."""
    kept = overlay.roi_boundary(roi, size, width=1)
    outside = overlay.roi_boundary(1 - np.asarray(roi), size, width=1)
    return kept | outside


def _drawn(png: bytes, size: tuple[int, int], colour) -> np.ndarray:
    _, right = _panels(png, size)
    return (right == colour).all(-1)


def _rois() -> list[np.ndarray]:
    rect = np.zeros((M, M), np.uint8)
    rect[6:15, 4:18] = 1
    ell = rect.copy()
    ell[6:11, 11:18] = 0  # an L: a concave corner
    edge = np.zeros((M, M), np.uint8)
    edge[:10, 12:] = 1  # touching the top and right borders
    yy, xx = np.mgrid[:M, :M]
    disk = (((yy - 11.5) ** 2 + (xx - 12.5) ** 2) < 7.5**2).astype(np.uint8)
    return [rect, ell, edge, disk]


@pytest.mark.parametrize("size", [(240, 240), (320, 180), (100, 150)])
@pytest.mark.parametrize("which", range(4))
def test_the_roi_outline_lies_on_the_roi_mask_boundary(size, which):
    roi = _rois()[which]
    png, caption = overlay.render(_image(*size), np.zeros((4, 4)), _p(), roi_mask=roi)
    green = _drawn(png, size, GREEN)
    edges = _staircase_edges(roi, size)
    cell = max(size[0], size[1]) / M  # the larger side of one roi_mask cell, in pixels
    line = max(2.5, overlay.font_size(*size) / 6)
    # every outline pixel is near the mask's edge: within the line's half width, plus the
    # corners' rounding (about a third of a cell)
    tolerance = 0.4 * cell + line / 2 + 1
    near = distance_transform_edt(~edges)
    assert green.sum() > 0 and near[green].max() <= tolerance
    # and every edge pixel has the outline near it: the whole boundary is drawn
    reach = distance_transform_edt(~green)
    assert reach[edges].max() <= tolerance
    # the image border is no edge: on the top row, only where the ROI's left side meets it
    if which == 2:
        assert np.ptp(np.nonzero(green[0])[0]) <= 2 * tolerance
    assert "ROI the model used" in caption


def test_the_roi_outline_is_smooth_not_staircased():
    """A roi_mask cut along the diagonal: its staircase boundary strays from the diagonal
    by up to a cell; the outline follows the straight line it stands for."""
    size = (480, 480)
    rows, cols = np.mgrid[:M, :M]
    below = (rows + cols <= M - 1).astype(np.uint8)
    png, _ = overlay.render(_image(*size), np.zeros((4, 4)), _p(), roi_mask=below)

    def across(pixels: np.ndarray) -> float:
        """Spread of the pixels' distance to the diagonal, away from the image's corners."""
        r, c = np.nonzero(pixels)
        middle = (r > 100) & (r < 380) & (c > 100) & (c < 380)
        return float(np.ptp((r[middle] + c[middle] + 1) / np.sqrt(2)))

    smooth = across(_drawn(png, size, GREEN))
    stairs = across(overlay.roi_boundary(below, size, width=1))
    assert smooth <= 3.0 and stairs >= 10.0, (smooth, stairs)


def test_no_roi_outline_for_the_whole_image():
    png, caption = overlay.render(_image(90, 60), np.zeros((4, 4)), _p(), roi_mask=np.ones((M, M)))
    assert not _drawn(png, (90, 60), GREEN).any() and "ROI the model used" not in caption


def test_the_radiologists_mask_has_its_own_outline_and_legend():
    size = (200, 160)
    mask = np.zeros((160, 200), np.uint8)
    yy, xx = np.mgrid[:160, :200]
    mask[((yy - 80) / 40) ** 2 + ((xx - 90) / 55) ** 2 < 1] = 255
    buffer = io.BytesIO()
    Image.fromarray(mask).save(buffer, format="PNG")
    roi = _rois()[0]
    png, caption = overlay.render(
        _image(*size), np.zeros((4, 4)), _p(), roi_mask=roi, given_mask=buffer.getvalue()
    )
    magenta = _drawn(png, size, MAGENTA)
    kept = mask > 0
    edge = kept ^ (distance_transform_edt(kept) > 1)  # the mask's own boundary pixels
    assert magenta.sum() > 100
    line = max(2.5, overlay.font_size(*size) / 6)  # drawn twice as wide as the ROI's
    assert distance_transform_edt(~edge)[magenta].max() <= line + 1
    assert "radiologist's mask" in caption and "ROI the model used" in caption
    picture = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    legend = picture[160:]  # the caption strip draws a line of each colour
    assert (legend == MAGENTA).all(-1).any() and (legend == GREEN).all(-1).any()
    given = overlay.render(_image(*size), np.zeros((4, 4)), _p(roi_source="given"), given_mask=mask)
    assert "radiologist's mask (the ROI's source)" in given[1]
    none = overlay.render(_image(*size), np.zeros((4, 4)), _p(), given_mask=b"")
    assert "radiologist" not in none[1] and not _drawn(none[0], size, MAGENTA).any()


@pytest.mark.parametrize(
    "roi_source, words",
    [
        ("predicted", "radiologist's mask: reference outline, not used by the model"),
        ("none", "radiologist's mask: reference outline, not used by the model"),
        ("given", "radiologist's mask (the ROI's source)"),
    ],
)
def test_a_mask_the_model_did_not_use_is_labelled_a_reference(roi_source, words):
    """With --sibling-masks and predict_no_mask (or ROI off) the model never saw the mask:
    its outline is still drawn, and the legend says what it is."""
    size = (120, 90)
    mask = np.zeros((90, 120), np.uint8)
    mask[20:70, 30:90] = 255
    png, caption = overlay.render(
        _image(*size), np.zeros((4, 4)), _p(roi_source=roi_source), given_mask=mask
    )
    assert words in caption.splitlines()
    assert _drawn(png, size, MAGENTA).any()
    if roi_source != "given":
        assert "the ROI's source" not in caption


def test_every_overlay_carries_the_research_use_notice():
    image, cam = _image(90, 60), np.eye(3, dtype=np.float32)
    png, caption = overlay.render(image, cam, _p())
    assert caption.splitlines()[0] == overlay.NOTICE == "Research use only, not for diagnosis."
    picture = Image.open(io.BytesIO(png))
    assert picture.text["Disclaimer"] == overlay.NOTICE
    drawn = np.asarray(picture.convert("RGB"))[60:]  # the caption strip
    assert (drawn == overlay.NOTICE_COLOUR).all(-1).sum() > 20  # the notice's own colour
    compact, _ = overlay.render(image, cam, _p(), style="compact")
    assert Image.open(io.BytesIO(compact)).text["Disclaimer"] == overlay.NOTICE


def test_the_compact_style_is_the_single_panel_overlay():
    image, cam, roi = _image(64, 48), np.eye(3, dtype=np.float32), _rois()[0]
    png, caption = overlay.render(image, cam, _p(), style="compact", roi_mask=roi, alpha=0.3)
    scaled = overlay.scaled_heat(cam, _p())[0]
    assert caption == "" and png == overlay.overlay_png(image, scaled, 0.3, roi)
    with pytest.raises(ValueError, match="overlay style"):
        overlay.render(image, cam, _p(), style="fancy")


def test_the_gallery_thumbnail_is_a_small_jpeg_of_the_image_beside_its_heat_map():
    image = _image(800, 600)
    small = overlay.thumbnail(image, np.eye(4), roi_mask=_rois()[1], given_mask=None)
    picture = Image.open(io.BytesIO(small))
    assert picture.format == "JPEG" and len(small) < 20_000
    assert picture.size == (2 * 160 + overlay.THUMB_GAP, 120)  # two panels of 160 x 120
    pixels = np.asarray(picture.convert("RGB")).astype(int)
    shrunk = Image.open(io.BytesIO(image)) if isinstance(image, bytes) else image
    shrunk = Image.fromarray(overlay.to_rgb(shrunk))
    shrunk.thumbnail((160, 160), Image.BILINEAR)
    left, right = pixels[:, :160], pixels[:, 160 + overlay.THUMB_GAP :]
    assert np.abs(left - np.asarray(shrunk)).mean() < 4  # the image itself (JPEG's loss)
    assert np.abs(right - np.asarray(shrunk)).mean() > 20  # the heat map over it
