"""The lesion-centred crop ROI (`roi_mode="crop"`) on synthetic images with a known lesion
box: the box rule, Transform's crop, the served graph's crop (given and predicted masks),
`roi_mask` and the Grad-CAM placed back in the whole image."""

import io

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras
from PIL import Image

from modules import contract as C
from modules import model as M
from modules import roi_crop
from modules.trainer import _serving_signatures
from modules.transform import encode_images, prepare_image, prepare_images
from pipeline.config import PipelineConfig
from pipeline.pipeline import trainer_options

BUDGET = 16_000_000
SIZE = 64  # the classifier's input
SEG = 40  # the segmenter's side: 5 px of the scene per cell, so the lesion box is exact
# A 200 x 200 image: grey tissue, a white 40 x 40 "lesion" at rows 80-119, cols 60-99, and a
# black marker far from it (rows 170-189, cols 170-189).
LESION = (80, 120, 60, 100)


def png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def scene() -> tuple[np.ndarray, np.ndarray]:
    image = np.full((200, 200, 3), 100, np.uint8)
    r0, r1, c0, c1 = LESION
    image[r0:r1, c0:c1] = 255
    image[170:190, 170:190] = 0
    mask = np.zeros((200, 200), np.uint8)
    mask[r0:r1, c0:c1] = 255
    return image, mask


def test_box_is_the_lesion_squared_with_its_margin():
    _, mask = scene()
    box = roi_crop.mask_boxes(tf.constant(mask[None]), 0.15).numpy()[0]
    side = 0.2 * 1.3  # the lesion's 40 px of 200, widened by 15 % of it on each side
    np.testing.assert_allclose(
        box, [0.5 - side / 2, 0.4 - side / 2, 0.5 + side / 2, 0.4 + side / 2], atol=1e-6
    )


def test_box_stays_inside_the_image_and_keeps_the_lesion():
    masks = np.zeros((3, 100, 100), np.uint8)
    masks[0, 0:30, 90:100] = 1  # a corner lesion: the square is moved inside
    masks[1, 45:47, 45:47] = 1  # tiny: at least MIN_SIDE
    # masks[2] empty: the whole image
    boxes = roi_crop.mask_boxes(tf.constant(masks), 0.15).numpy()
    assert (boxes >= 0).all() and (boxes <= 1).all()
    np.testing.assert_allclose(boxes[0], [0.0, 1 - 0.39, 0.39, 1.0], atol=1e-6)
    np.testing.assert_allclose(boxes[1, 2] - boxes[1, 0], roi_crop.MIN_SIDE, atol=1e-6)
    np.testing.assert_allclose(boxes[1, [0, 1]] + boxes[1, [2, 3]], [0.92, 0.92], atol=1e-6)
    np.testing.assert_array_equal(boxes[2], roi_crop.WHOLE)


def bright_fraction(image: np.ndarray) -> float:
    return float((image.mean(axis=-1) > 200).mean())


def test_transform_crop_puts_the_lesion_in_the_frame():
    image, mask = scene()
    crop, masked = (
        prepare_image(
            tf.constant(png(image)), tf.constant(png(mask)), SIZE, True, BUDGET, SEG, mode, 0.15
        )
        for mode in ("crop", "mask")
    )
    cropped = crop.image.numpy()
    # the lesion fills (40 / 52)^2 = 59 % of the crop, centred; 4 % of the masked whole image
    assert abs(bright_fraction(cropped) - (1 / 1.3) ** 2) < 0.05
    assert bright_fraction(masked.image.numpy()) < 0.05
    assert cropped[SIZE // 2, SIZE // 2].min() == 255  # the lesion's centre is the frame's
    assert cropped.min() >= 95  # tissue around it, and not the far marker
    assert crop.has_mask.numpy() == 1
    np.testing.assert_array_equal(crop.full_image.numpy(), masked.full_image.numpy())
    empty = prepare_image(
        tf.constant(png(image)), tf.constant(b""), SIZE, True, BUDGET, SEG, "crop", 0.15
    )
    np.testing.assert_array_equal(empty.image.numpy(), crop.full_image.numpy())  # no mask: whole


def test_heatmap_of_the_crop_lands_on_the_lesion():
    heat = np.zeros((1, 8, 8), np.float32)
    heat[0, 3:5, 3:5] = 1.0  # the crop's centre
    box = tf.constant([[0.5, 0.0, 1.0, 0.5]])  # the bottom-left quarter
    placed = roi_crop.to_whole_frame(tf.constant(heat), box).numpy()[0]
    peak = np.unravel_index(placed.argmax(), placed.shape)
    assert 4 <= peak[0] <= 7 and 0 <= peak[1] <= 3 and placed.max() == pytest.approx(1.0)
    assert placed[:4].max() == 0 and placed[:, 4:].max() == 0  # nothing outside the box
    whole = roi_crop.to_whole_frame(tf.constant(heat), tf.constant([roi_crop.WHOLE]))
    np.testing.assert_allclose(whole.numpy(), heat, atol=1e-6)


def test_box_masks_is_the_roi_mask_of_the_box():
    got = roi_crop.box_masks(tf.constant([[0.25, 0.5, 0.75, 1.0]]), 8).numpy()[0]
    expected = np.zeros((8, 8), np.uint8)
    expected[2:6, 4:8] = 1
    np.testing.assert_array_equal(got, expected)


def fixed_segmenter() -> keras.Model:
    """A 'segmenter' that finds the scene's lesion in every image (P = 0.9 there)."""
    probability = np.zeros((1, SEG, SEG, 1), np.float32)
    r0, r1, c0, c1 = (v * SEG // 200 for v in LESION)
    probability[0, r0:r1, c0:c1] = 0.9
    images = keras.Input((SIZE, SIZE, 3))
    out = keras.layers.Lambda(
        lambda x: tf.tile(tf.constant(probability), [tf.shape(x)[0], 1, 1, 1])
    )(images)
    return keras.Model(images, out)


class _Transform:
    """Transform's graph with ROI on and crop mode: image, full image and mask."""

    def transform_features_layer(self):
        def layer(parsed):
            image = tf.reshape(parsed[C.IMAGE], [-1])
            mask = tf.reshape(parsed[C.MASK], [-1])
            p = prepare_images(image, mask, SIZE, True, BUDGET, SEG, "crop", 0.15)
            return {
                C.IMAGE: encode_images(p.image),
                C.FULL_IMAGE: encode_images(p.full_image),
                C.LESION_MASK: tf.map_fn(
                    tf.io.serialize_tensor, p.mask, fn_output_signature=tf.string
                ),
            }

        return layer

    def raw_feature_spec(self):
        return {
            C.IMAGE: tf.io.FixedLenFeature([], tf.string),
            C.MASK: tf.io.FixedLenFeature([], tf.string, default_value=""),
        }


def test_served_crop_given_and_predicted():
    """Given mask and segmenter's mask on the same scene: the same box, `roi_mask` is it,
    the classifier sees the crop (its answer is the model's on the crop), and the
    tf.Example signature answers as the raw-bytes one."""
    keras.utils.set_random_seed(1)
    model = M.build_model(2, SIZE, "none", "efficientnet-lite0")
    cfg = PipelineConfig(
        image_size=SIZE,
        roi=True,
        roi_mode="crop",
        segmenter_size=SEG,
        roi_dilation=0,  # the segmenter's mask as it is: the same box as the given one
        backbone="efficientnet-lite0",
        weights="none",
    )
    opts = trainer_options(cfg, code="")
    decision = M.Decision(temperature=1.0, threshold=0.5)
    sigs = _serving_signatures(model, fixed_segmenter(), _Transform(), opts, decision)
    image, mask = scene()
    encoded = tf.constant([png(image), png(image)])
    out = sigs[C.PREDICT_IMAGES](image_bytes=encoded, mask_bytes=tf.constant([png(mask), b""]))
    assert out[C.ROI_SOURCE].numpy().tolist() == [b"given", b"predicted"]
    roi_mask = out[C.ROI_MASK].numpy()
    box = roi_crop.mask_boxes(tf.constant(mask[None]), 0.15)
    np.testing.assert_array_equal(roi_mask[0], roi_crop.box_masks(box, C.ROI_MASK_SIZE)[0])
    np.testing.assert_array_equal(roi_mask[0], roi_mask[1])  # the segmenter's box is the same
    r0, r1, c0, c1 = (v * C.ROI_MASK_SIZE // 200 for v in LESION)
    assert roi_mask[0, r0:r1, c0:c1].all() and roi_mask[0].mean() < 0.1
    full = prepare_image(tf.constant(png(image)), tf.constant(b""), SIZE, False, BUDGET).image
    crop = roi_crop.crop(tf.cast(full[None], tf.float32), box, SIZE)
    expected = M.predict_only(M.GradCam(model), crop, decision)[C.PROBABILITIES].numpy()[0]
    np.testing.assert_allclose(out[C.PROBABILITIES].numpy()[1], expected, atol=1e-5)
    examples = [
        tf.train.Example(
            features=tf.train.Features(
                feature={
                    C.IMAGE: tf.train.Feature(bytes_list=tf.train.BytesList(value=[png(image)])),
                    C.MASK: tf.train.Feature(bytes_list=tf.train.BytesList(value=[m])),
                }
            )
        ).SerializeToString()
        for m in (png(mask), b"")
    ]
    served = sigs[C.SERVING_DEFAULT](examples=tf.constant(examples))
    np.testing.assert_array_equal(served[C.ROI_MASK].numpy(), roi_mask)
    np.testing.assert_allclose(
        served[C.PROBABILITIES].numpy(), out[C.PROBABILITIES].numpy(), atol=1e-6
    )
