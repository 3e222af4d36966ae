"""Grad-CAM overlays: feature-map heatmap -> original image size -> jet colours -> blended PNG.

Why client-side: the server returns Grad-CAM at feature-map resolution (10x10 at 299 input),
which is all the information it has and keeps responses small; only the client knows the
original image, so it upsamples (bilinear, like tf.image.resize) and blends there. Pillow and
numpy only: no matplotlib dependency for one colour map.

The ROI the model actually used (its `roi_mask` output, ROI_MASK_SIZE square, 1 = kept) is
drawn as an outline over the blend: upsampled nearest-neighbour (it is binary) to the image
size, its inner boundary painted in pure green, a colour the jet blend never produces. A
mask of all ones (the whole image) draws nothing.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
from PIL import Image

DEFAULT_ALPHA = 0.4
OUTLINE_COLOUR = (0, 255, 0)
OUTLINE_WIDTH = 2  # pixels, inside the ROI
_NOT_IN_NAMES = re.compile(r"[^A-Za-z0-9._-]+")


def overlay_file_name(stem: str, class_name: str) -> str:
    """`<stem>_<predicted class>_gradcam.png`: a folder of overlays sorts and filters by the
    model's answer (`ls *_malignant_gradcam.png`) without opening the JSON beside each."""
    return f"{stem}_{_NOT_IN_NAMES.sub('_', class_name).strip('_') or 'class'}_gradcam.png"


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


def roi_boundary(
    roi_mask: np.ndarray, size: tuple[int, int], width: int = OUTLINE_WIDTH
) -> np.ndarray:
    """bool [height, width]: the pixels within `width` of the ROI's edge, inside the ROI.

    `roi_mask` [m, m] (> 0 = kept) is upsampled nearest-neighbour, sampled at pixel centres,
    to `size` = (width, height). The image border is not an edge (an ROI reaching it is cut
    off by the image, not by the model), so a mask of all ones, or of all zeros, has none.
    """
    mask = np.asarray(roi_mask)
    if mask.ndim != 2 or 0 in mask.shape:
        raise ValueError(f"roi_mask must be a non-empty 2-D array, got shape {mask.shape}")
    if width < 1:
        raise ValueError(f"outline width must be >= 1, got {width}")
    # Nearest neighbour at pixel centres, in integers (Pillow's float scale rounds some
    # exact halves down): output row y reads mask row floor((y + 0.5) * m / height).
    cols, rows = size
    src_rows = (2 * np.arange(rows) + 1) * mask.shape[0] // (2 * rows)
    src_cols = (2 * np.arange(cols) + 1) * mask.shape[1] // (2 * cols)
    kept = (mask > 0)[src_rows[:, None], src_cols[None, :]]
    inner = kept
    for _ in range(width):  # erosion by the 4-neighbourhood, edges replicated
        p = np.pad(inner, 1, mode="edge")
        inner = p[1:-1, 1:-1] & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    return kept & ~inner


def outline(
    image_rgb: np.ndarray,
    roi_mask: np.ndarray | None,
    colour: tuple[int, int, int] = OUTLINE_COLOUR,
    width: int = OUTLINE_WIDTH,
) -> np.ndarray:
    """A copy of uint8 RGB `image_rgb` [H, W, 3] with the ROI's boundary painted `colour`.

    Nothing is drawn when `roi_mask` is None or all ones (the model used the whole image).
    """
    rgb = np.array(image_rgb, dtype=np.uint8, copy=True)
    if roi_mask is None or np.all(np.asarray(roi_mask) > 0):
        return rgb
    rows, cols = rgb.shape[:2]
    rgb[roi_boundary(roi_mask, (cols, rows), width)] = colour
    return rgb


def blend(
    image: Image.Image,
    heatmap: np.ndarray,
    alpha: float = DEFAULT_ALPHA,
    roi_mask: np.ndarray | None = None,
) -> Image.Image:
    """The heatmap, upsampled to the image's own size and jet-coloured, alpha-blended over it;
    with `roi_mask`, the ROI's `outline` drawn on top."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    base = to_rgb(image).astype(np.float32)
    colours = jet(upsample(heatmap, image.size)).astype(np.float32)
    mixed = (1.0 - alpha) * base + alpha * colours
    rgb = np.clip(np.round(mixed), 0, 255).astype(np.uint8)
    return Image.fromarray(outline(rgb, roi_mask))


def overlay_png(
    image: bytes | str | Path | Image.Image,
    heatmap: np.ndarray,
    alpha: float = DEFAULT_ALPHA,
    roi_mask: np.ndarray | None = None,
) -> bytes:
    """PNG bytes of `blend()` for encoded image bytes, a file path or a Pillow image."""
    if isinstance(image, bytes):
        image = Image.open(io.BytesIO(image))
    elif isinstance(image, str | Path):
        image = Image.open(image)
    buffer = io.BytesIO()
    # Level 1: 6x faster than Pillow's default 6 on a blended photo (10 vs 62 ms at 448 px,
    # files 15 % larger); a batch job writes one per image.
    blend(image, heatmap, alpha, roi_mask).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()
