"""Grad-CAM points at the evidence: a model trained on images whose class-1 evidence (a
bright disk) always sits in the top-left quadrant puts the heatmap peak there."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from modules import model as M

SIZE = 96  # 3x3 feature map


def make_images(n: int, rng: np.random.Generator):
    images = rng.normal(90, 25, (n, SIZE, SIZE, 3)).clip(0, 255)
    labels = np.arange(n) % 2
    yy, xx = np.mgrid[:SIZE, :SIZE]
    centres = []
    for i in range(n):
        cy, cx = rng.integers(10, SIZE // 2 - 10, 2)  # inside the top-left quadrant
        if labels[i] == 1:
            images[i][(yy - cy) ** 2 + (xx - cx) ** 2 <= 8**2] = 240
        centres.append((cy, cx))
    return images.astype(np.float32), labels, centres


@pytest.mark.slow  # trains a small classifier
def test_heatmap_peak_falls_in_the_evidence_region():
    rng = np.random.default_rng(0)
    x, y, _ = make_images(256, rng)
    keras.utils.set_random_seed(1)
    model = M.build_model(2, SIZE, "none")
    model.compile(optimizer=keras.optimizers.Nadam(1e-3), loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=4, batch_size=32, verbose=0)

    xt, yt, _ = make_images(32, rng)
    out = M.predict_with_gradcam(M.GradCam(model), tf.constant(xt), M.UNCALIBRATED)
    pred = out["class_id"].numpy()
    assert (pred == yt).mean() >= 0.8
    cams = out["gradcam"].numpy()
    assert cams.shape == (32, 3, 3)
    hits = [i for i in range(32) if yt[i] == 1 and pred[i] == 1]
    assert len(hits) >= 10
    # Cells (0..1, 0..1) cover pixels 0..63 of 96: the whole quadrant where the disk can be.
    peaks = [np.unravel_index(cams[i].argmax(), (3, 3)) for i in hits]
    inside = [r <= 1 and c <= 1 for r, c in peaks]
    assert np.mean(inside) >= 0.9, peaks


def test_mask_agreement_scores_by_hand():
    """The pointing benchmark's per-image score on a map whose only hot cell is known."""
    from lesionlens.pointing import score

    heatmap = np.zeros((10, 10), np.float32)
    heatmap[2, 7] = 1.0  # hot cell centred at (25, 75) on a 100x100 image
    mask = np.zeros((100, 100), bool)
    mask[10:40, 60:90] = True  # 9 % of the image, around the hot cell, not the centre
    s = score(heatmap, mask)
    assert s["hit"] == 1.0 and s["centre_hit"] == 0.0
    assert s["miss_cells"] == 0.0
    off = score(heatmap, np.pad(mask[:, 30:], ((0, 0), (0, 30))))  # mask 30 px = 3 cells left
    assert off["hit"] == 0.0
    assert off["miss_cells"] == pytest.approx(1.6, abs=0.11)  # peak col 75, mask ends col 59
    assert s["area"] == pytest.approx(0.09)
    assert s["heat_in_mask"] > 0.99  # the bilinear spread of one cell stays within 15 px
    uniform = score(np.ones((10, 10), np.float32), mask)
    assert uniform["heat_in_mask"] == pytest.approx(0.09, abs=1e-6)  # a uniform map: the area
