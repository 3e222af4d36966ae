"""The ROI outline on Grad-CAM overlays: `roi_mask` (ROI_MASK_SIZE square, 1 = kept) upsampled
nearest-neighbour to the image, its inner boundary painted, nothing for the whole image."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from modules import contract as C
from serving import overlay

GREEN = overlay.OUTLINE_COLOUR


def _centre_mask(m: int = 4) -> np.ndarray:
    mask = np.zeros((m, m), np.uint8)
    mask[m // 4 : 3 * m // 4, m // 4 : 3 * m // 4] = 1
    return mask


def test_boundary_of_a_known_mask():
    # 4x4 mask, centre 2x2 kept -> rows/cols 10..29 of a 40x40 image
    edge = overlay.roi_boundary(_centre_mask(), (40, 40), width=2)
    expected = np.zeros((40, 40), bool)
    expected[10:30, 10:30] = True
    expected[12:28, 12:28] = False  # the 2 px band inside the ROI's edge stays
    assert np.array_equal(edge, expected)
    one = overlay.roi_boundary(_centre_mask(), (40, 40), width=1)
    assert one.sum() == 4 * 20 - 4 and one[10, 10] and not one[11, 11]


def test_boundary_upsamples_to_a_non_square_image():
    edge = overlay.roi_boundary(_centre_mask(), (80, 20), width=1)  # (width, height)
    rows, cols = np.nonzero(edge)
    assert edge.shape == (20, 80)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (5, 14, 20, 59)


def test_image_border_is_not_an_edge():
    mask = np.zeros((C.ROI_MASK_SIZE, C.ROI_MASK_SIZE), np.uint8)
    mask[:, : C.ROI_MASK_SIZE // 2] = 1  # the left half, touching three image borders
    edge = overlay.roi_boundary(mask, (48, 24), width=1)
    assert np.array_equal(np.nonzero(edge.any(axis=0))[0], [23])  # only the middle column
    assert edge[:, 23].all()
    full = np.ones((C.ROI_MASK_SIZE, C.ROI_MASK_SIZE), np.uint8)
    assert not overlay.roi_boundary(full, (48, 24)).any()
    assert not overlay.roi_boundary(np.zeros_like(full), (48, 24)).any()


def test_outline_colours_the_boundary_only():
    image = np.full((40, 40, 3), 90, np.uint8)
    drawn = overlay.outline(image, _centre_mask(), width=2)
    assert drawn is not image and (image == 90).all()  # a copy
    assert tuple(drawn[10, 10]) == GREEN and tuple(drawn[29, 20]) == GREEN  # on the edge
    assert tuple(drawn[11, 20]) == GREEN  # 2 px wide
    assert (drawn[20, 20] == 90).all()  # interior untouched
    assert (drawn[5, 5] == 90).all() and (drawn[35, 20] == 90).all()  # outside untouched
    edge = overlay.roi_boundary(_centre_mask(), (40, 40), width=2)
    assert (drawn[edge] == GREEN).all() and (drawn[~edge] == 90).all()


def test_outline_draws_nothing_for_the_whole_image_or_no_mask():
    image = np.random.default_rng(0).integers(0, 256, (12, 30, 3), dtype=np.uint8)
    whole = np.ones((C.ROI_MASK_SIZE, C.ROI_MASK_SIZE), np.uint8)
    assert np.array_equal(overlay.outline(image, whole), image)
    assert np.array_equal(overlay.outline(image, None), image)
    with pytest.raises(ValueError, match="2-D"):
        overlay.outline(image, np.zeros(4, np.uint8))


def test_blend_and_overlay_png_draw_the_outline_over_the_heatmap():
    grey = Image.fromarray(np.full((40, 40), 100, np.uint8))
    cam = np.array([[0.0, 1.0], [1.0, 0.0]], np.float32)
    plain = np.asarray(overlay.blend(grey, cam))
    framed = np.asarray(overlay.blend(grey, cam, roi_mask=_centre_mask()))
    edge = overlay.roi_boundary(_centre_mask(), (40, 40))
    assert (framed[edge] == GREEN).all()
    assert np.array_equal(framed[~edge], plain[~edge])
    assert not (plain == GREEN).all(axis=-1).any()  # the jet blend never makes pure green
    png = overlay.overlay_png(grey, cam, roi_mask=_centre_mask())
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png))), framed)
    whole = np.ones((C.ROI_MASK_SIZE, C.ROI_MASK_SIZE), np.uint8)
    assert np.array_equal(np.asarray(overlay.blend(grey, cam, roi_mask=whole)), plain)


@pytest.mark.parametrize(
    "stem, class_name, expected",
    [
        ("case 7", "malignant", "case 7_malignant_gradcam.png"),
        ("a", "normal", "a_normal_gradcam.png"),
        ("a", "class/../x y", "a_class_.._x_y_gradcam.png"),  # no folder from a class name
        ("a", "///", "a_class_gradcam.png"),
    ],
)
def test_overlay_file_name_names_the_predicted_class(stem, class_name, expected):
    assert overlay.overlay_file_name(stem, class_name) == expected
