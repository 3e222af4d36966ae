"""preprocessing_fn: ROI masking and resize against hand-computed values."""

import io

import numpy as np
import pytest
import tensorflow as tf
from conftest import bomb_jpeg, bomb_png, peak_rss_growth
from PIL import Image

from modules.transform import decode_images, decode_masks, prepare_image, preprocessing_fn

BUDGET = 16_000_000


def png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


IMAGE = np.arange(4 * 4 * 3, dtype=np.uint8).reshape(4, 4, 3) * 5  # distinct values
MASK = np.array(
    [[255, 255, 0, 0], [255, 0, 0, 0], [0, 0, 0, 255], [0, 0, 255, 255]], dtype=np.uint8
)


def block_means(a: np.ndarray) -> np.ndarray:
    """4x4 -> 2x2 bilinear with half-pixel centres is exactly the mean of each 2x2 block."""
    a = a.astype(np.float64)
    return np.round((a[0::2, 0::2] + a[1::2, 0::2] + a[0::2, 1::2] + a[1::2, 1::2]) / 4)


def run_fn(image: np.ndarray, mask: bytes, roi: bool = True, segmenter_size: int = 0) -> dict:
    inputs = {
        "image": tf.constant([[png(image)]]),
        "mask": tf.constant([[mask]]),
        "label": tf.constant([[1]], tf.int64),
        "modality": tf.constant([[b"ultrasound"]]),
        "dataset": tf.constant([[b"synthetic"]]),
    }
    return preprocessing_fn(
        inputs,
        {
            "image_size": 2,
            "roi": roi,
            "roi_mode": "mask",
            "roi_margin": 0.0,
            "segmenter_size": segmenter_size,
            "max_pixels": BUDGET,
            "code": "test",
        },
    )


def test_roi_mask_then_resize_matches_hand_computation():
    out = run_fn(IMAGE, png(MASK))
    got = decode_images(out["image"], 2).numpy()[0]
    expected = block_means(IMAGE * (MASK[..., None] > 0))
    np.testing.assert_array_equal(got, expected)
    assert out["has_mask"].numpy().tolist() == [1]
    assert out["label"].numpy().tolist() == [1]
    assert out["modality"].numpy().tolist() == [b"ultrasound"]


def test_segmenter_features_hold_the_whole_image_and_the_mask():
    out = run_fn(IMAGE, png(MASK), segmenter_size=2)
    np.testing.assert_array_equal(
        decode_images(out["full_image"], 2).numpy()[0], block_means(IMAGE)
    )
    assert decode_masks(out["lesion_mask"], 2).numpy()[0].tolist() == [[1, 0], [0, 1]]  # 3/4 > 1/2
    none = run_fn(IMAGE, b"", segmenter_size=2)
    assert decode_masks(none["lesion_mask"], 2).numpy()[0].tolist() == [[0, 0], [0, 0]]
    assert "full_image" not in run_fn(IMAGE, png(MASK))  # ROI off / no segmenter: not written


def test_image_without_mask_passes_through():
    out = run_fn(IMAGE, b"")
    np.testing.assert_array_equal(decode_images(out["image"], 2).numpy()[0], block_means(IMAGE))
    assert out["has_mask"].numpy().tolist() == [0]


def test_empty_mask_and_roi_off_leave_image_unchanged():
    for mask, roi, has in ((png(np.zeros((4, 4), np.uint8)), True, 0), (png(MASK), False, 1)):
        out = run_fn(IMAGE, mask, roi=roi)
        np.testing.assert_array_equal(decode_images(out["image"], 2).numpy()[0], block_means(IMAGE))
        assert out["has_mask"].numpy().tolist() == [has]


def test_grayscale_and_rgba_decode_to_rgb():
    gray = np.full((6, 8), 77, np.uint8)
    rgba = np.dstack([IMAGE, np.full((4, 4), 255, np.uint8)])
    for arr in (gray, rgba):
        img = prepare_image(tf.constant(png(arr)), tf.constant(b""), 3, True, BUDGET).image
        assert img.shape == (3, 3, 3) and img.dtype == tf.uint8
    img = prepare_image(tf.constant(png(gray)), tf.constant(b""), 3, True, BUDGET).image
    assert np.all(img.numpy() == 77)


def test_mask_of_other_size_is_an_error():
    with pytest.raises(tf.errors.InvalidArgumentError, match="mask size differs"):
        prepare_image(
            tf.constant(png(IMAGE)), tf.constant(png(np.ones((5, 5), np.uint8))), 2, True, BUDGET
        )


def test_missing_option_is_named():
    with pytest.raises(
        ValueError, match=r"missing \['roi', 'roi_margin', 'roi_mode', 'segmenter_size'\]"
    ):
        preprocessing_fn({}, {"image_size": 2, "max_pixels": BUDGET, "code": "test"})


@pytest.mark.parametrize("make_bomb", [bomb_png, bomb_jpeg])
def test_bombs_are_rejected_from_the_header_before_decoding(make_bomb):
    """20000 x 20000 would decode to 1.2 GB; the header check fails first, naming the size
    and the limit, and the process does not grow by anything like that."""
    bomb = tf.constant(make_bomb())
    ok = tf.constant(png(IMAGE))
    prepare_image(ok, tf.constant(b""), 2, True, BUDGET)  # TF's one-time setup, not measured
    with peak_rss_growth() as growth:
        with pytest.raises(
            tf.errors.InvalidArgumentError,
            match="image is 20000x20000 pixels, above the pixel budget of 16000000",
        ):
            prepare_image(bomb, tf.constant(b""), 2, True, 16_000_000)
        with pytest.raises(tf.errors.InvalidArgumentError, match="mask size differs from image"):
            prepare_image(tf.constant(make_bomb(4, 4)), bomb, 2, True, 16_000_000)  # headers
    assert growth() < 200  # one decoded bomb: 1200 MB
    assert prepare_image(ok, tf.constant(b""), 2, True, 16).image.shape == (2, 2, 3)  # 4x4 <= 16
    with pytest.raises(tf.errors.InvalidArgumentError, match="4x4 pixels, above .* of 15"):
        prepare_image(ok, tf.constant(b""), 2, True, 15)


def test_formats_other_than_png_and_jpeg_are_rejected():
    gif = io.BytesIO()
    Image.fromarray(IMAGE).save(gif, format="GIF")
    with pytest.raises(tf.errors.InvalidArgumentError, match="neither a PNG nor a JPEG"):
        prepare_image(tf.constant(gif.getvalue()), tf.constant(b""), 2, True, BUDGET)
    with pytest.raises(tf.errors.InvalidArgumentError, match="neither a PNG nor a JPEG"):
        prepare_image(tf.constant(b"\x89PNG"), tf.constant(b""), 2, True, BUDGET)
