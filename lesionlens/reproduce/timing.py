"""Time per served answer, measured on the pushed model as a client calls it: batch 1,
`serving_default` (probabilities, decision and Grad-CAM), the median over a few test images
after two warm-up calls; with each image's mask (ORACLE) and without (deployable: the lesion
segmenter draws the ROI first)."""

from __future__ import annotations

import time

import numpy as np

from modules import contract as C

TIMED_IMAGES = 16


def seconds_per_image(model, requests: list[bytes]) -> float | None:
    """Median seconds of one `serving_default` call on one serialized raw Example."""
    import tensorflow as tf

    if not requests:
        return None
    predict = model.signatures[C.SERVING_DEFAULT]
    batches = [tf.constant([r]) for r in requests[:TIMED_IMAGES]]
    for b in batches[:2]:
        predict(**{C.EXAMPLES: b})
    times = []
    for b in batches:
        t0 = time.perf_counter()
        predict(**{C.EXAMPLES: b})
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def oracle_and_deployable(model_dir: str, test_records: list[bytes]) -> tuple[float, float]:
    """(seconds per image with the radiologist's mask, without it)."""
    import tensorflow as tf

    from modules.raw_examples import without_mask

    model = tf.saved_model.load(model_dir)
    with_masks = test_records[:TIMED_IMAGES]
    return (
        seconds_per_image(model, with_masks),
        seconds_per_image(model, [without_mask(r) for r in with_masks]),
    )
