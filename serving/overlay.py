"""Grad-CAM overlays: feature-map heatmap -> original image size -> jet colours -> blended PNG.

Why client-side: the server returns Grad-CAM at feature-map resolution (10x10 at 299 input),
which is all the information it has and keeps responses small; only the client knows the
original image, so it upsamples (bilinear, like tf.image.resize) and blends there. Pillow and
numpy only: no matplotlib dependency for one colour map.

Two styles (`STYLES`):

- `captioned` (the default of `lesionlens predict` and `lesionlens score --overlays`): the
  original image beside the overlay, both at the original resolution, over a caption strip
  that states the predicted class, P(malignant) against the model's operating threshold (and
  which side of it the image fell), `roi_source`, the model's name and version, a colour bar
  of the heat map with its meaning, and a legend of the outlines. The ROI the model used is
  drawn as a smooth contour (`roi_field`, `draw_contour`); a radiologist's mask, when the
  request had one, as a second contour in magenta, labelled "reference outline, not used
  by the model" when the model drew its own ROI or used the whole image (`mask_legend`).
  The caption opens with `NOTICE` (research use only, not for diagnosis), which both styles
  also carry as a PNG text chunk. `render` returns the caption it drew.
  Text is drawn in DejaVu Sans where the system has it (Debian: fonts-dejavu-core), else in
  Pillow's bundled font (`font_name()` says which), sized with the image (`font_size`).
- `compact`: the earlier single panel, the blend alone with the ROI's staircase outline.

Heat is drawn scaled by the probability of the class the model decided (`scaled_heat`): the
server divides each map by its own maximum, so unscaled a weak call (P 0.55) and a sure one
(P 0.99) would both show a saturated region; scaled, the same colour means the same strength
of evidence times confidence across images. The caption says so, with the factor; a record
without its probabilities is drawn unscaled and the caption says that instead.

In the compact style the ROI the model actually used (its `roi_mask` output, ROI_MASK_SIZE
square, 1 = kept) is drawn as an outline over the blend: upsampled nearest-neighbour (it is
binary) to the image size, its inner boundary painted in pure green, a colour the jet blend
never produces. A mask of all ones (the whole image) draws nothing.
"""

from __future__ import annotations

import functools
import io
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont, PngImagePlugin

from modules import contract as C

DEFAULT_ALPHA = 0.4
# On every overlay (the captioned style's first line; a PNG text chunk in both styles) and
# every gallery page: the model is a research prototype, its answer no clinical finding.
NOTICE = "Research use only, not for diagnosis."
NOTICE_COLOUR = (255, 191, 0)
THUMB_GAP = 4  # pixels between a thumbnail's two panels
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
    blend(image, heatmap, alpha, roi_mask).save(
        buffer, format="PNG", compress_level=1, pnginfo=notice_chunk()
    )
    return buffer.getvalue()


def notice_chunk() -> PngImagePlugin.PngInfo:
    """The notice as a PNG text chunk (`Disclaimer`), which the compact style, having no
    caption, carries only there."""
    info = PngImagePlugin.PngInfo()
    info.add_text("Disclaimer", NOTICE)
    return info


# --------------------------------------------------------------------- captioned overlays

STYLES = ("captioned", "compact")
MASK_COLOUR = (255, 0, 255)  # the radiologist's mask: magenta, in no jet colour either
BACKGROUND = (24, 24, 24)
TEXT_COLOUR = (235, 235, 235)
ROI_CELL_PX = 8  # pixels a roi_mask cell on the grid where its outline is smoothed
DEJAVU = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
)
ROI_WORDS = {
    C.ROI_PREDICTED: "drawn by the model's lesion segmenter",
    C.ROI_GIVEN: "the mask sent with the request",
    C.ROI_NONE: "the whole image",
}


@dataclass(frozen=True)
class Prediction:
    """What the caption states: the fields of a `predict` / `score` record of one image."""

    class_name: str
    positive_probability: float | None = None
    threshold: float | None = None
    roi_source: str | None = None
    model: str | None = None
    version: str | None = None
    positive_class: str = "malignant"
    decided_probability: float | None = None  # P(class_name): how much heat is drawn
    explanation: str = "Grad-CAM"  # the heat map's method (lesionlens.json `explanation`)

    @classmethod
    def from_record(
        cls,
        record: dict,
        model: str | None,
        version: str | None,
        classes: Sequence[str] | None = None,
        explanation: str | None = None,
    ) -> Prediction:
        """From a `lesionlens predict` JSON record or a `lesionlens score` row (and the
        model's class names, when the record does not list them): the caption then states
        exactly what the record says."""
        probabilities, class_id = record.get(C.PROBABILITIES), record.get(C.CLASS_ID)
        decided = None
        if probabilities is not None and class_id is not None:
            if 0 <= int(class_id) < len(probabilities):
                decided = float(probabilities[int(class_id)])
        return cls(
            class_name=record["class_name"],
            decided_probability=decided,
            positive_probability=record.get(C.POSITIVE_PROBABILITY),
            threshold=record.get(C.THRESHOLD),
            roi_source=record.get(C.ROI_SOURCE),
            model=model,
            version=version,
            positive_class=_positive_class(classes or record.get("classes")),
            explanation=explanation_name(explanation),
        )

    def caption_lines(self) -> list[str]:
        """The caption's lines, in the order drawn (ASCII only: any font has the glyphs)."""
        lines = [f"predicted: {self.class_name}"]
        p, t, positive = self.positive_probability, self.threshold, self.positive_class
        if p is not None and t is not None:
            digits = next((d for d in range(3, 7) if f"{p:.{d}f}" != f"{t:.{d}f}"), 6)
            side = f">= threshold {t:.{digits}f}: called {positive}"
            if p < t:
                side = f"< threshold {t:.{digits}f}: not called {positive}"
            lines.append(f"P({positive}) {p:.{digits}f} {side}")
        elif p is not None:
            lines.append(f"P({positive}) {p:.3f} (the model exports no threshold)")
        if self.roi_source is not None:
            words = ROI_WORDS.get(self.roi_source, "unknown")
            lines.append(f"ROI: {words} (roi_source={self.roi_source})")
        model = self.model or "unknown"
        version = f", version {self.version}" if self.version else ""
        lines.append(f"model: {model}{version}")
        return lines


def explanation_name(method: str | None) -> str:
    """The method's short name for a caption: "HiResCAM of the decided class (...)" ->
    "HiResCAM"; Grad-CAM for a model that does not say (every model before the joint one)."""
    return method.split(" of ")[0].split(" (")[0].strip() if method else "Grad-CAM"


def scaled_heat(heatmap: np.ndarray, prediction: Prediction) -> tuple[np.ndarray, str]:
    """(the heat to draw, what the colour bar says about it): the served map times
    P(decided class), or the map as served when that probability is unknown."""
    p = prediction.decided_probability
    if p is None:
        return np.asarray(heatmap, np.float32), "each map scaled to its own maximum"
    factor = float(np.clip(p, 0.0, 1.0))
    return (
        np.asarray(heatmap, np.float32) * factor,
        f"scaled by P({prediction.class_name}) = {factor:.2f}, so a weak call draws faint",
    )


def _positive_class(classes: Sequence[str] | None) -> str:
    """The name of label POSITIVE_LABEL (P(positive) is `positive_probability`)."""
    if classes and len(classes) > C.POSITIVE_LABEL:
        return classes[C.POSITIVE_LABEL]
    return C.DEFAULT_CLASSES["busi"][C.POSITIVE_LABEL]


def font_name() -> str:
    """Which font captions are drawn in: a DejaVu Sans file, or Pillow's bundled font."""
    return next((path for path in DEJAVU if os.path.isfile(path)), "Pillow's bundled font")


@functools.lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    name = font_name()
    if os.path.isfile(name):
        return ImageFont.truetype(name, size)
    return ImageFont.load_default(size=size)


def font_size(width: int, height: int) -> int:
    """Caption text height for panels of `width` x `height`: 1/28 of the image's larger
    side, never under 12 px (legible on a screen) nor over 64."""
    return int(min(64, max(12, round(max(width, height) / 28))))


def gaussian_blur(field: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of a 2-D float array, the border replicated."""
    if sigma <= 0:
        return np.asarray(field, np.float32)
    radius = max(1, int(np.ceil(3 * sigma)))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps = (taps / taps.sum()).astype(np.float32)
    out = np.asarray(field, np.float32)
    for axis in (0, 1):
        pad = [(0, 0), (0, 0)]
        pad[axis] = (radius, radius)
        padded = np.pad(out, pad, mode="edge")
        n = out.shape[axis]
        out = sum(w * np.take(padded, np.arange(k, k + n), axis=axis) for k, w in enumerate(taps))
    return out.astype(np.float32)


def roi_field(roi_mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """float32 [height, width] in [0, 1] whose 0.5 level line is the ROI's smooth outline.

    The ROI_MASK_SIZE cells are read as samples at their centres and interpolated
    bilinearly onto a grid of ROI_CELL_PX pixels a cell, blurred there (sigma 3/8 of a cell,
    the border replicated: the image border is not an edge) to take out the kinks between
    cells, then resized bilinearly to `size` = (width, height). A straight edge of the mask
    keeps its place (the 0.5 line runs midway between a kept and a dropped cell's centre); a
    diagonal staircase becomes a straight line; a corner is rounded by about a third of a
    cell.
    """
    mask = np.asarray(roi_mask)
    if mask.ndim != 2 or 0 in mask.shape:
        raise ValueError(f"roi_mask must be a non-empty 2-D array, got shape {mask.shape}")
    cells = Image.fromarray((mask > 0).astype(np.float32))
    grid = (mask.shape[1] * ROI_CELL_PX, mask.shape[0] * ROI_CELL_PX)
    fine = gaussian_blur(np.asarray(cells.resize(grid, Image.BILINEAR)), ROI_CELL_PX * 3 / 8)
    return np.asarray(Image.fromarray(fine).resize(size, Image.BILINEAR), np.float32)


def mask_field(mask: np.ndarray, size: tuple[int, int], sigma: float = 1.0) -> np.ndarray:
    """The same for a full-resolution binary mask (a radiologist's): nearest-neighbour to
    `size` = (width, height) when it differs, then blurred by `sigma` pixels."""
    kept = Image.fromarray((np.asarray(mask) > 0).astype(np.uint8) * 255)
    if kept.size != size:
        kept = kept.resize(size, Image.NEAREST)
    return gaussian_blur(np.asarray(kept, np.float32) / 255.0, sigma)


def contour_coverage(field: np.ndarray, width: float) -> np.ndarray:
    """float32 [H, W] in [0, 1]: how much of each pixel an anti-aliased line `width` pixels
    wide, centred on the field's 0.5 level line, covers. The distance to the line is taken
    as |f - 0.5| / |grad f|, so flat parts of the field (no edge) draw nothing."""
    f = np.asarray(field, np.float32)
    gy, gx = np.gradient(f)
    slope = np.hypot(gx, gy)
    with np.errstate(divide="ignore", invalid="ignore"):
        distance = np.where(slope > 1e-6, np.abs(f - 0.5) / slope, np.inf)
    return np.clip(width / 2 + 0.5 - distance, 0.0, 1.0).astype(np.float32)


def draw_contour(
    rgb: np.ndarray, field: np.ndarray, colour: tuple[int, int, int], width: float
) -> np.ndarray:
    """A copy of uint8 RGB `rgb` with the field's 0.5 line drawn in `colour`, anti-aliased."""
    cover = contour_coverage(field, width)[..., None]
    mixed = (1.0 - cover) * rgb.astype(np.float32) + cover * np.asarray(colour, np.float32)
    return np.clip(np.round(mixed), 0, 255).astype(np.uint8)


def _decode_mask(mask: bytes | np.ndarray | Image.Image | None) -> np.ndarray | None:
    """A radiologist's mask as bool [H, W], or None when absent or empty."""
    if mask is None or (isinstance(mask, bytes) and not mask):
        return None
    if isinstance(mask, bytes):
        mask = Image.open(io.BytesIO(mask))
    if isinstance(mask, Image.Image):
        mask = np.asarray(mask.convert("L"))
    kept = np.asarray(mask) > 0
    if kept.ndim == 3:
        kept = kept.any(axis=-1)
    return kept if kept.any() else None


def _wrap(draw: ImageDraw.ImageDraw, text: str, font, width: float) -> list[str]:
    """`text` broken at spaces into lines no wider than `width` (a long word stays whole)."""
    lines, line = [], ""
    for word in text.split(" "):
        candidate = f"{line} {word}" if line else word
        if line and draw.textlength(candidate, font=font) > width:
            lines.append(line)
            line = word
        else:
            line = candidate
    return [*lines, line]


def _open(image: bytes | str | Path | Image.Image) -> Image.Image:
    if isinstance(image, bytes):
        return Image.open(io.BytesIO(image))
    if isinstance(image, str | Path):
        return Image.open(image)
    return image


def overlay_panel(
    original: np.ndarray,
    heatmap: np.ndarray,
    alpha: float,
    roi_mask: np.ndarray | None,
    given_mask: bytes | np.ndarray | Image.Image | None,
    line_px: float,
    roi_source: str | None = None,
) -> tuple[np.ndarray, list[tuple[tuple[int, int, int], str]]]:
    """The heat map blended over uint8 RGB `original` with the smooth outlines, and the
    legend of what was outlined ((colour, words) per outline)."""
    height, width = original.shape[:2]
    heat = jet(upsample(heatmap, (width, height))).astype(np.float32)
    mixed = (1.0 - alpha) * original.astype(np.float32) + alpha * heat
    blended = np.clip(np.round(mixed), 0, 255).astype(np.uint8)
    legend = []
    mask = _decode_mask(given_mask)
    if mask is not None:  # under the ROI's outline and twice as wide: both show where they meet
        field = mask_field(mask, (width, height))
        blended = draw_contour(blended, field, MASK_COLOUR, 2 * line_px)
        legend.append((MASK_COLOUR, mask_legend(roi_source)))
    if roi_mask is not None and not np.all(np.asarray(roi_mask) > 0):
        field = roi_field(roi_mask, (width, height))
        blended = draw_contour(blended, field, OUTLINE_COLOUR, line_px)
        legend.insert(0, (OUTLINE_COLOUR, "ROI the model used"))
    return blended, legend


def mask_legend(roi_source: str | None) -> str:
    """What the radiologist's outline is to this answer: the ROI's source when the model
    used it (`given`); with any other ROI the model never saw it, and the legend says so."""
    if roi_source == C.ROI_GIVEN:
        return "radiologist's mask (the ROI's source)"
    if roi_source in (C.ROI_PREDICTED, C.ROI_NONE):
        return "radiologist's mask: reference outline, not used by the model"
    return "radiologist's mask"  # a model without ROI outputs: it may have used it


def _canvas_width(width: int, height: int) -> int:
    size = font_size(width, height)
    return max(2 * width + max(4, size // 2) + 2 * size, 36 * size)


def panel_boxes(size: tuple[int, int]) -> tuple[tuple[int, int, int, int], ...]:
    """(left, top, right, bottom) of the original's panel and of the overlay's on a
    captioned overlay of an image of `size` = (width, height), for `Image.crop`: the panels
    sit side by side, centred, half a text line below the top."""
    width, height = size
    text = font_size(width, height)
    gap = max(4, text // 2)
    left = (_canvas_width(width, height) - 2 * width - gap) // 2
    top = text // 2
    return (
        (left, top, left + width, top + height),
        (left + width + gap, top, left + 2 * width + gap, top + height),
    )


def captioned(
    image: bytes | str | Path | Image.Image,
    heatmap: np.ndarray,
    prediction: Prediction,
    alpha: float = DEFAULT_ALPHA,
    roi_mask: np.ndarray | None = None,
    given_mask: bytes | np.ndarray | Image.Image | None = None,
) -> tuple[Image.Image, str]:
    """The two-panel overlay and the caption drawn on it (its lines joined by newlines).

    Left the original image, right the Grad-CAM blend with the ROI's smooth outline (green,
    none when the ROI is the whole image) and the radiologist's mask's (magenta, twice as
    wide and under the green, so that both show where they coincide), both at
    the image's own resolution; below them the caption strip (`Prediction.caption_lines`,
    a colour bar, a legend of what is outlined). The canvas is widened for a small image so
    that the caption keeps `font_size` (the panels are then centred).
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    original = to_rgb(_open(image))
    height, width = original.shape[:2]
    size = font_size(width, height)
    font = _font(size)
    line_px = max(2.5, size / 6)  # outline width: at least one pixel fully drawn
    heat, scaling = scaled_heat(heatmap, prediction)
    blended, legend = overlay_panel(
        original, heat, alpha, roi_mask, given_mask, line_px, prediction.roi_source
    )

    margin = size
    left_box, right_box = panel_boxes((width, height))
    canvas_w = _canvas_width(width, height)
    scratch = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_w = canvas_w - 2 * margin
    lines = prediction.caption_lines()
    heading = f"left: the image; right: {prediction.explanation} over it"
    drawn = [
        (text, row)
        for text in [NOTICE, heading, *lines]
        for row in _wrap(scratch, text, font, text_w)
    ]
    bar_label = (
        f"{prediction.explanation} 0-1: where the classifier's evidence for "
        f"{prediction.class_name!r} is "
        f"(0 none, 1 strongest; {scaling})"
    )
    bar_rows = _wrap(scratch, bar_label, font, text_w)
    legend_rows = [
        (colour, row)
        for colour, text in legend
        for row in _wrap(scratch, text, font, text_w - 3 * size)
    ]
    pitch = round(size * 1.35)
    strip_h = margin + pitch * (len(drawn) + len(bar_rows) + 2 + len(legend_rows)) + margin // 2

    canvas = Image.new("RGB", (canvas_w, height + margin + strip_h), BACKGROUND)
    canvas.paste(Image.fromarray(original), left_box[:2])
    canvas.paste(Image.fromarray(blended), right_box[:2])
    draw = ImageDraw.Draw(canvas)
    y = height + margin
    for text, row in drawn:
        colour = NOTICE_COLOUR if text == NOTICE else TEXT_COLOUR
        draw.text((margin, y), row, fill=colour, font=font)
        y += pitch
    bar_w = min(text_w, 24 * size)
    ramp = jet(np.linspace(0.0, 1.0, bar_w))[None].repeat(size, axis=0)
    canvas.paste(Image.fromarray(ramp), (margin, y))
    y += size + 2
    for tick, at in (("0", 0.0), ("0.5", 0.5), ("1", 1.0)):
        tick_w = draw.textlength(tick, font=font)
        x = margin + min(max(at * bar_w - tick_w / 2, 0), bar_w - tick_w)
        draw.text((x, y), tick, fill=TEXT_COLOUR, font=font)
    y += pitch
    for row in bar_rows:
        draw.text((margin, y), row, fill=TEXT_COLOUR, font=font)
        y += pitch
    for colour, row in legend_rows:
        mid = y + size // 2
        wide = 2 if colour == MASK_COLOUR else 1
        draw.line(
            [(margin, mid), (margin + 2 * size, mid)], fill=colour, width=round(wide * line_px)
        )
        draw.text((margin + 3 * size, y), row, fill=TEXT_COLOUR, font=font)
        y += pitch
    caption = [NOTICE, heading, *lines, bar_label] + [text for _, text in legend]
    return canvas, "\n".join(caption)


def render(
    image: bytes | str | Path | Image.Image,
    heatmap: np.ndarray,
    prediction: Prediction,
    *,
    style: str = "captioned",
    alpha: float = DEFAULT_ALPHA,
    roi_mask: np.ndarray | None = None,
    given_mask: bytes | np.ndarray | Image.Image | None = None,
) -> tuple[bytes, str]:
    """(PNG bytes, the caption drawn) in one of `STYLES`; the compact style draws none ("")."""
    if style == "compact":
        return overlay_png(image, scaled_heat(heatmap, prediction)[0], alpha, roi_mask), ""
    if style != "captioned":
        raise ValueError(f"overlay style must be one of {STYLES}, got {style!r}")
    canvas, caption = captioned(image, heatmap, prediction, alpha, roi_mask, given_mask)
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG", compress_level=1, pnginfo=notice_chunk())
    return buffer.getvalue(), caption


def thumbnail(
    image: bytes | str | Path | Image.Image,
    heatmap: np.ndarray,
    alpha: float = DEFAULT_ALPHA,
    roi_mask: np.ndarray | None = None,
    given_mask: bytes | np.ndarray | Image.Image | None = None,
    max_side: int = 160,
    roi_source: str | None = None,
) -> bytes:
    """A small JPEG (a few kB) for galleries: the image and, beside it, the overlay panel,
    as on the captioned overlay (a heat map alone hides what it lies on). The image is
    shrunk to `max_side` first, then blended and outlined as in `captioned`; the panels
    are `THUMB_GAP` pixels apart on the caption's background."""
    small = _open(image)
    small = Image.fromarray(to_rgb(small))
    small.thumbnail((max_side, max_side), Image.BILINEAR)
    original = np.asarray(small)
    panel, _ = overlay_panel(original, heatmap, alpha, roi_mask, given_mask, 1.5, roi_source)
    height, width = original.shape[:2]
    both = Image.new("RGB", (2 * width + THUMB_GAP, height), BACKGROUND)
    both.paste(small, (0, 0))
    both.paste(Image.fromarray(panel), (width + THUMB_GAP, 0))
    buffer = io.BytesIO()
    both.save(buffer, format="JPEG", quality=80)
    return buffer.getvalue()
