"""The segmenter's post-processing, metrics and ROI choice on small inputs with known answers."""

import numpy as np
import pytest
import tensorflow as tf

from modules import contract as C
from modules.segmenter import network as S
from modules.segmenter.evaluation import centre_disk

POST = S.RoiPostprocess(threshold=0.5, dilation=0, min_area=0.05, max_area=0.9)


def prob(*blobs, side=8):
    """A probability map [1, side, side, 1] with blobs (row0, row1, col0, col1, value)."""
    p = np.zeros((1, side, side, 1), np.float32)
    for r0, r1, c0, c1, v in blobs:
        p[0, r0:r1, c0:c1, 0] = v
    return tf.constant(p)


def test_dice_and_iou_known_values():
    truth = np.zeros((2, 4, 4), np.uint8)
    truth[0, :2, :2] = 1  # 4 pixels
    pred = np.zeros((2, 4, 4), np.uint8)
    pred[0, :2, :1] = 1  # 2 of them
    dice, iou = S.dice_iou(tf.constant(truth), tf.constant(pred))
    np.testing.assert_allclose(dice.numpy(), [2 * 2 / 6, 1.0])  # both empty: 1
    np.testing.assert_allclose(iou.numpy(), [2 / 4, 1.0])


def test_keeps_the_component_of_the_most_confident_pixel():
    p = prob((0, 2, 0, 2, 0.7), (4, 7, 4, 7, 0.95))  # 4 px at 0.7, 9 px at 0.95
    roi, found = S.roi_from_probability(p, POST)
    expected = np.zeros((8, 8))
    expected[4:7, 4:7] = 1
    np.testing.assert_array_equal(roi.numpy()[0], expected)
    assert found.numpy().tolist() == [True]


def serpentine(side: int) -> np.ndarray:
    """Every other row filled, joined alternately at the right and left ends: one component
    whose every turn needs another growth step."""
    m = np.zeros((side, side), np.float32)
    m[::2] = 1
    for row in range(1, side - 1, 2):
        m[row, -1 if row % 4 == 1 else 0] = 1
    return m


def test_component_at_peak_is_scipys_8_connected_component():
    """The run-by-run growth keeps exactly the 8-connected component of the peak pixel."""
    from scipy import ndimage

    rng = np.random.default_rng(0)
    masks = [(rng.random((24, 24)) > p).astype(np.float32) for p in (0.3, 0.45, 0.55, 0.7)]
    masks += [serpentine(24), np.ones((24, 24), np.float32), np.zeros((24, 24), np.float32)]
    probability = rng.random((len(masks), 24, 24, 1)).astype(np.float32)
    got = S._component_at_peak(tf.constant(probability), tf.constant(np.stack(masks)[..., None]))
    for i, mask in enumerate(masks):
        labels, _ = ndimage.label(mask, structure=np.ones((3, 3)))
        peak = np.unravel_index(np.argmax(probability[i, ..., 0] * mask), mask.shape)
        expected = (labels == labels[peak]) & (mask > 0)
        np.testing.assert_array_equal(got.numpy()[i, ..., 0], expected.astype(np.float32))


def test_dilation_grows_the_roi_by_its_margin():
    post = S.RoiPostprocess(threshold=0.5, dilation=1, min_area=0.01, max_area=0.9)
    roi, _ = S.roi_from_probability(prob((3, 5, 3, 5, 0.9)), post)
    expected = np.zeros((8, 8))
    expected[2:6, 2:6] = 1
    np.testing.assert_array_equal(roi.numpy()[0], expected)


@pytest.mark.parametrize(
    "blob", [(0, 0, 0, 0, 0.0), (3, 4, 3, 4, 0.9), (0, 8, 0, 8, 0.9)], ids=["none", "tiny", "all"]
)
def test_nothing_usable_falls_back_to_the_whole_image(blob):
    roi, found = S.roi_from_probability(prob(blob), POST)
    assert found.numpy().tolist() == [False]
    np.testing.assert_array_equal(roi.numpy()[0], np.ones((8, 8)))


def test_small_mask_is_the_roi_mask_output():
    masks = np.zeros((1, 48, 48), np.float32)
    masks[0, :24, :24] = 1
    small = S.small_mask(tf.constant(masks)).numpy()
    assert small.shape == (1, C.ROI_MASK_SIZE, C.ROI_MASK_SIZE) and small.dtype == np.uint8
    assert small[0, :12, :12].all() and not small[0, 12:, :].any()


def test_choose_roi_per_example():
    """given mask -> the given ROI image; no mask -> the segmenter's; ROI off -> whole."""

    class Fixed(tf.Module):  # a "segmenter" that finds the top-left quarter of every image
        output_shape = (None, 8, 8, 1)

        def __call__(self, images, training=False):
            return tf.tile(prob((0, 4, 0, 4, 0.9)), [tf.shape(images)[0], 1, 1, 1])

    full = tf.fill([2, 16, 16, 3], 10.0)
    given_roi = tf.fill([2, 16, 16, 3], 3.0)
    given = tf.constant([True, False])
    masks = np.zeros((2, 8, 8), np.uint8)
    masks[0, 4:, 4:] = 1
    images, source, roi_mask, boxes = S.choose_roi(Fixed(), POST, given_roi, full, given, masks)
    assert source.numpy().tolist() == [b"given", b"predicted"]
    np.testing.assert_array_equal(images[0], given_roi[0])
    np.testing.assert_array_equal(images[1, :8, :8], 10.0)  # kept
    np.testing.assert_array_equal(images[1, 8:, :], 0.0)  # outside the predicted ROI
    half = C.ROI_MASK_SIZE // 2
    assert roi_mask[0, half:, half:].numpy().all() and not roi_mask[0, :half].numpy().any()
    assert roi_mask[1, :half, :half].numpy().all() and not roi_mask[1, half:].numpy().any()

    np.testing.assert_array_equal(boxes, [[0, 0, 1, 1]] * 2)  # masking: the whole frame
    images, source, roi_mask, _ = S.choose_roi(None, POST, full, full, given, masks)
    assert source.numpy().tolist() == [b"none", b"none"]
    assert roi_mask.numpy().all()


def test_centre_disk_covers_the_requested_area():
    assert abs(centre_disk(64, 0.2).mean() - 0.2) < 0.01


def test_lite0_encoder_segmenter_keeps_the_contract_and_the_pretrained_weights(
    tmp_path, monkeypatch
):
    from modules.backbones import pretrained

    monkeypatch.setenv("LESIONLENS_CACHE_DIR", str(tmp_path))
    model = S.build_lite0_segmenter(64, 64, width=8, weights="imagenet")
    assert model.input_shape == (None, 64, 64, 3) and model.output_shape == (None, 64, 64, 1)
    converted = pretrained.converted_weights(pretrained.wheel_checkpoint()[0])
    np.testing.assert_array_equal(
        model.get_layer("block2_dw_conv").get_weights()[0], converted["block2_dw_conv"][0]
    )
    assert not model.get_layer("block2_dw_bn").trainable  # pretrained statistics kept
    assert "top_conv" not in [layer.name for layer in model.layers]  # stops at the 320 map
    probs = model(np.zeros((2, 64, 64, 3), np.float32), training=False).numpy()
    assert ((probs >= 0) & (probs <= 1)).all()
    with pytest.raises(ValueError, match="multiple of 32"):
        S.build_lite0_segmenter(64, 48)
