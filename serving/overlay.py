"""Grad-CAM overlays: feature-map heatmap -> original image size -> jet colours -> blended PNG.

Why client-side: the server returns Grad-CAM at feature-map resolution (10x10 at 299 input),
which is all the information it has and keeps responses small; only the client knows the
original image, so it upsamples (bilinear, like tf.image.resize) and blends there. Pillow and
numpy only: no matplotlib dependency for one colour map.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

DEFAULT_ALPHA = 0.4


def upsample(heatmap: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a [h, w] map to `size` = (width, height); float32 clipped to [0, 1].

    Pillow's BILINEAR samples at pixel centres (half-pixel offsets), as tf.image.resize does.
    NaNs (a degenerate map) become 0.
    """
    cam = np.nan_to_num(np.asarray(heatmap, dtype=np.float32), nan=0.0, posinf=1.0, neginf=0.0)
    if cam.ndim != 2 or 0 in cam.shape:
        raise ValueError(f"heatmap must be a non-empty 2-D array, got shape {cam.shape}")
    width, height = size
    resized = Image.fromarray(np.clip(cam, 0.0, 1.0)).resize((width, height), Image.BILINEAR)
    return np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)


def jet(values: np.ndarray) -> np.ndarray:
    """The classic jet colour map (0 dark blue -> 1 dark red) as uint8 RGB, shape [..., 3]."""
    v = np.clip(np.asarray(values, dtype=np.float32), 0.0, 1.0)[..., None]
    centres = np.array([0.75, 0.5, 0.25], dtype=np.float32)  # where R, G, B peak
    rgb = np.clip(1.5 - np.abs(4.0 * (v - centres)), 0.0, 1.0)
    return np.round(rgb * 255.0).astype(np.uint8)


def to_rgb(image: Image.Image) -> np.ndarray:
    """Any Pillow image -> uint8 RGB array; 16-bit greyscale is scaled like TF's decode (>> 8)."""
    if image.mode.startswith("I;16"):
        grey = (np.asarray(image, dtype=np.uint16) >> 8).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=-1)
    if image.mode in ("I", "F"):
        grey = np.clip(np.asarray(image, dtype=np.float64), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=-1)
    return np.asarray(image.convert("RGB"))


def blend(image: Image.Image, heatmap: np.ndarray, alpha: float = DEFAULT_ALPHA) -> Image.Image:
    """The heatmap, upsampled to the image's own size and jet-coloured, alpha-blended over it."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    base = to_rgb(image).astype(np.float32)
    colours = jet(upsample(heatmap, image.size)).astype(np.float32)
    mixed = (1.0 - alpha) * base + alpha * colours
    return Image.fromarray(np.clip(np.round(mixed), 0, 255).astype(np.uint8))


def overlay_png(
    image: bytes | str | Path | Image.Image, heatmap: np.ndarray, alpha: float = DEFAULT_ALPHA
) -> bytes:
    """PNG bytes of `blend()` for encoded image bytes, a file path or a Pillow image."""
    if isinstance(image, bytes):
        image = Image.open(io.BytesIO(image))
    elif isinstance(image, str | Path):
        image = Image.open(image)
    buffer = io.BytesIO()
    blend(image, heatmap, alpha).save(buffer, format="PNG")
    return buffer.getvalue()
