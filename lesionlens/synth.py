"""Deterministic synthetic datasets in the exact folder layouts of the real ones.

Demos and tests need images without downloading (or committing) the Kaggle datasets, so
this module draws cheap look-alikes into the same layouts that ingestion already reads:

* ``busi`` mimics *Dataset_BUSI_with_GT*: ``benign/``, ``malignant/``, ``normal/`` holding
  ``<class> (<i>).png`` ultrasound images, ``<class> (<i>)_mask.png`` lesion masks and,
  for some lesions, an extra ``<class> (<i>)_mask_1.png`` (the union is the lesion).
* ``mri`` mimics *Breast Cancer Patients MRI's*: ``Healthy/`` and ``Sick/`` JPEGs,
  optionally under ``train/``, ``validation/`` and ``test/``.

Everything is a pure function of the arguments: each image has its own random stream
(``default_rng([seed, class_index, i])``), so the same call writes byte-identical files.
A marker file ``lesionlens-synth.json`` tells ingestion that the data set is synthetic.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from lesionlens.ingest.layouts import MRI_SPLIT_FOLDERS, SYNTH_MARKER
from modules.contract import LAYOUT_CLASSES

MARKER = SYNTH_MARKER
LAYOUTS = tuple(LAYOUT_CLASSES)
BUSI_CLASSES = LAYOUT_CLASSES["busi"]  # Kaggle's folder names
MRI_CLASSES = tuple(c.capitalize() for c in LAYOUT_CLASSES["mri"])  # "Healthy", "Sick"
MRI_SPLITS = MRI_SPLIT_FOLDERS
MASK_MODES = ("1", "L", "RGB")
JPEG_QUALITY = 90


# --------------------------------------------------------------------------- helpers


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Low-frequency noise (unit-ish std): a coarse random grid, bicubic-upsampled."""
    gh, gw = max(2, round(cells * h / max(h, w))), max(2, round(cells * w / max(h, w)))
    grid = rng.standard_normal((gh, gw)).astype(np.float32)
    up = Image.fromarray(grid).resize((w, h), Image.Resampling.BICUBIC)
    return np.asarray(up, dtype=np.float64)


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _polar(
    h: int, w: int, cx: float, cy: float, a: float, b: float, angle: float
) -> tuple[np.ndarray, np.ndarray]:
    """Elliptic radius (1 on the ellipse) and polar angle of every pixel centre."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    dx, dy = xx - cx, yy - cy
    c, s = np.cos(angle), np.sin(angle)
    u, v = (dx * c + dy * s) / a, (-dx * s + dy * c) / b
    return np.hypot(u, v), np.arctan2(v, u)


def _irregular_boundary(
    rng: np.random.Generator, harmonics: float, spikes: int
) -> tuple[Callable[[np.ndarray], np.ndarray], float]:
    """Random boundary radius R(phi): harmonics plus thin gaussian spikes.

    Returns R as a function of angle and its maximum (to keep the lesion in frame).
    """
    ks = np.arange(2, 7)
    amps = rng.uniform(0.0, harmonics, ks.size)
    phases = rng.uniform(0.0, 2 * np.pi, ks.size)
    sp_at = rng.uniform(0.0, 2 * np.pi, spikes)
    sp_amp = rng.uniform(0.35, 0.7, spikes)
    sp_width = rng.uniform(0.07, 0.13, spikes)

    def radius(t: np.ndarray) -> np.ndarray:
        r = 1.0 + sum(am * np.cos(k * t + p) for k, am, p in zip(ks, amps, phases, strict=True))
        for at, am, wd in zip(sp_at, sp_amp, sp_width, strict=True):
            d = np.angle(np.exp(1j * (t - at)))  # wrapped angular distance
            r = r + am * np.exp(-0.5 * (d / wd) ** 2)
        return np.maximum(r, 0.45)

    return radius, float(radius(np.linspace(-np.pi, np.pi, 721)).max())


def _place(rng: np.random.Generator, h: int, w: int, ext: float) -> tuple[float, float]:
    """A centre such that a disc of radius ``ext`` lies fully inside the image."""
    cx = rng.uniform(ext + 1.0, max(ext + 1.0, w - 2.0 - ext))
    cy = rng.uniform(ext + 1.0, max(ext + 1.0, h - 2.0 - ext))
    return cx, cy


# --------------------------------------------------------------------------- BUSI


def _busi_sample(rng: np.random.Generator, label: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One ultrasound-like image (uint8 HxW) and its binary lesion mask (bool HxW)."""
    w, h = size, round(size * 0.8)
    rows = np.arange(h, dtype=np.float64)[:, None]

    # Echogenicity map: smooth tissue texture, dark band at the top, depth attenuation.
    tissue = rng.uniform(95.0, 130.0) + 22.0 * _smooth_noise(rng, h, w, 6)
    tissue += 8.0 * _smooth_noise(rng, h, w, 14)
    band = rng.uniform(0.10, 0.18) * h
    tissue *= 0.3 + 0.7 * _smoothstep(rows / band)
    tissue *= 1.0 - rng.uniform(0.1, 0.3) * rows / h

    mask = np.zeros((h, w), dtype=bool)
    if label != "normal":
        a = max(rng.uniform(0.12, 0.25) * size, 2.5)
        if label == "benign":  # smooth, oval, wider-than-tall, parallel to the skin
            b, angle = a * rng.uniform(0.5, 0.8), rng.uniform(-0.3, 0.3)
            edge, level = rng.uniform(0.08, 0.15), rng.uniform(0.25, 0.4)
        else:  # irregular, spiculated, any orientation, ill-defined margins
            b, angle = a * rng.uniform(0.7, 1.3), rng.uniform(-np.pi, np.pi)
            edge, level = rng.uniform(0.25, 0.4), rng.uniform(0.1, 0.25)
        boundary, rmax = _irregular_boundary(rng, 0.12, int(rng.integers(5, 11)))
        ext = max(a, b) * (rmax if label == "malignant" else 1.0)
        scale = min(1.0, min(0.45 * min(h, w), (min(h, w) - 3) / 2) / ext)
        a, b, ext = a * scale, b * scale, ext * scale
        cx, cy = _place(rng, h, w, ext)
        rho, phi = _polar(h, w, cx, cy, a, b, angle)
        if label == "malignant":
            rho = rho / boundary(phi)
            level = level * (1.0 + 0.6 * np.abs(_smooth_noise(rng, h, w, 10)))
        mask = rho <= 1.0
        alpha = _smoothstep((1.0 - rho) / edge + 0.5)
        # Posterior acoustic features: enhancement behind benign, shadow behind malignant.
        below = np.maximum.accumulate(alpha, axis=0) - alpha
        behind = rng.uniform(0.15, 0.3) if label == "benign" else -rng.uniform(0.3, 0.5)
        tissue *= 1.0 + behind * below * np.exp(-np.maximum(rows - cy, 0) / (2.5 * ext))
        tissue *= 1.0 - alpha * (1.0 - level)

    # Multiplicative Rayleigh speckle (mean 1), slightly elongated laterally.
    speckle = rng.rayleigh(1.0 / np.sqrt(np.pi / 2), (h, w))
    speckle = 0.5 * (speckle + np.roll(speckle, 1, axis=1))
    img = np.clip(tissue * (0.35 + 0.65 * speckle), 0, 255)
    return np.rint(img).astype(np.uint8), mask


def _mask_image(mask: np.ndarray, mode: str) -> Image.Image:
    """Encode a boolean mask as BUSI does, in pixel mode "1", "L" (0/255) or "RGB"."""
    if mode == "1":
        return Image.fromarray(mask).convert("1")
    grey = mask.astype(np.uint8) * 255
    if mode == "L":
        return Image.fromarray(grey)
    return Image.fromarray(np.stack([grey] * 3, axis=-1))


def _split_mask(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Left and right halves (by pixel count, left to right) whose union is ``mask``."""
    ys, xs = np.nonzero(mask)
    order = np.lexsort((ys, xs))
    k = len(order) // 2
    left, right = np.zeros_like(mask), np.zeros_like(mask)
    left[ys[order[:k]], xs[order[:k]]] = True
    right[ys[order[k:]], xs[order[k:]]] = True
    return left, right


def _write_busi(out: Path, n: int, size: int, seed: int) -> dict[str, int]:
    counts = {}
    for ci, label in enumerate(BUSI_CLASSES):
        folder = out / label
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(1, n + 1):
            rng = np.random.default_rng([seed, ci, i])
            img, mask = _busi_sample(rng, label, size)
            stem = f"{label} ({i})"
            Image.fromarray(np.stack([img] * 3, axis=-1)).save(folder / f"{stem}.png")
            mode = "RGB" if label == "normal" else MASK_MODES[(i - 1) % len(MASK_MODES)]
            extra = (label == "benign" and i % 5 == 0) or (label == "malignant" and i % 7 == 0)
            if extra:
                first, second = _split_mask(mask)
                _mask_image(first, mode).save(folder / f"{stem}_mask.png")
                _mask_image(second, mode).save(folder / f"{stem}_mask_1.png")
            else:
                _mask_image(mask, mode).save(folder / f"{stem}_mask.png")
        counts[label] = n
    return counts


# --------------------------------------------------------------------------- MRI


def _mri_sample(rng: np.random.Generator, sick: bool, size: int) -> np.ndarray:
    """One breast-MRI-like slice (uint8 size x size): tissue ellipse, mass if ``sick``."""
    h = w = size
    bg = 6.0 + 3.0 * np.abs(_smooth_noise(rng, h, w, 8))
    cx, cy = w * rng.uniform(0.45, 0.55), h * rng.uniform(0.5, 0.6)
    a, b = w * rng.uniform(0.36, 0.44), h * rng.uniform(0.28, 0.36)
    rho, _ = _polar(h, w, cx, cy, a, b, rng.uniform(-0.15, 0.15))
    body = _smoothstep((1.0 - rho) / 0.08)
    # Fatty tissue is bright; fibroglandular strands are darker and textured.
    fg = _smoothstep((_smooth_noise(rng, h, w, 9) - 0.2) / 0.6) * _smoothstep(1.2 - rho)
    tissue = rng.uniform(160.0, 190.0) - 80.0 * fg + 10.0 * _smooth_noise(rng, h, w, 20)
    img = bg * (1.0 - body) + tissue * body
    if sick:
        r = max(rng.uniform(0.07, 0.14) * size, 2.0)
        t, d = rng.uniform(0, 2 * np.pi), rng.uniform(0.0, 0.45)
        mx, my = cx + d * a * np.cos(t), cy + d * b * np.sin(t)
        mrho, mphi = _polar(h, w, mx, my, r, r * rng.uniform(0.7, 1.0), rng.uniform(-np.pi, np.pi))
        boundary, _ = _irregular_boundary(rng, 0.15, int(rng.integers(3, 7)))
        alpha = _smoothstep((1.0 - mrho / boundary(mphi)) / 0.35 + 0.5) * body
        mass = rng.uniform(225.0, 250.0) + 8.0 * _smooth_noise(rng, h, w, 16)
        img = img * (1.0 - alpha) + mass * alpha
    img += rng.normal(0.0, 4.0, (h, w))
    return np.rint(np.clip(img, 0, 255)).astype(np.uint8)


def _split_sizes(n: int) -> tuple[int, int, int]:
    """70/15/15 by index, with validation and test non-empty once n >= 3."""
    n_train, n_val = int(0.7 * n + 0.5), int(0.15 * n + 0.5)
    n_test = n - n_train - n_val
    if n >= 3:
        if n_val == 0:
            n_val, n_train = 1, n_train - 1
        if n_test == 0:
            n_test, n_train = 1, n_train - 1
    return n_train, n_val, n_test


def _write_mri(out: Path, n: int, size: int, seed: int, splits: bool) -> dict[str, int]:
    n_train, n_val, _ = _split_sizes(n)
    width = max(3, len(str(n)))
    counts: dict[str, int] = {}
    for ci, label in enumerate(MRI_CLASSES):
        for i in range(1, n + 1):
            rel = label
            if splits:
                split = MRI_SPLITS[0 if i <= n_train else 1 if i <= n_train + n_val else 2]
                rel = f"{split}/{label}"
            folder = out / rel
            folder.mkdir(parents=True, exist_ok=True)
            img = _mri_sample(np.random.default_rng([seed, ci, i]), label == "Sick", size)
            pil = Image.fromarray(img)
            if i % 2 == 0:  # alternate L and RGB JPEGs to exercise channel handling
                pil = pil.convert("RGB")
            pil.save(folder / f"{label.lower()}_{i:0{width}d}.jpg", quality=JPEG_QUALITY)
            counts[rel] = counts.get(rel, 0) + 1
    return dict(sorted(counts.items())) if splits else counts


# --------------------------------------------------------------------------- public API


def generate(
    out_dir: str | os.PathLike,
    layout: str = "busi",
    n: int = 24,
    size: int = 64,
    seed: int = 0,
    mri_splits: bool = False,
) -> dict:
    """Write ``n`` images per class in the ``layout`` of a real dataset under ``out_dir``.

    Same arguments give byte-identical files, so tests and demos are reproducible without
    the real data. Existing files of the same names are overwritten; others are left alone.
    Returns ``{"layout", "out_dir", "counts": {class_folder: n_images}, "images"}``, where
    class folders are relative to ``out_dir`` (e.g. ``"benign"`` or ``"train/Sick"``).
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; expected one of {', '.join(LAYOUTS)}")
    if n < 1:
        raise ValueError(f"n (images per class) must be >= 1, got {n}")
    if size < 16:
        raise ValueError(f"size must be >= 16 pixels, got {size}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if layout == "busi":
        counts = _write_busi(out, n, size, seed)
    else:
        counts = _write_mri(out, n, size, seed, mri_splits)
    marker = {
        "generator": "lesionlens.synth",
        "layout": layout,
        "n": n,
        "size": size,
        "seed": seed,
        "counts": counts,
    }
    (out / MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
    return {"layout": layout, "out_dir": str(out), "counts": counts, "images": sum(counts.values())}


def _run_cli(args: argparse.Namespace) -> int:
    summary = generate(
        args.out,
        layout=args.layout,
        n=args.n,
        size=args.size,
        seed=args.seed,
        mri_splits=args.mri_splits,
    )
    for folder, count in summary["counts"].items():
        print(f"{folder}: {count} images")
    print(f"total: {summary['images']} images ({summary['layout']}) in {summary['out_dir']}")
    return 0


def add_cli(subparsers: Any) -> None:
    """Register ``synth OUT [--layout busi|mri] [--n N] [--size S] [--seed K] [--mri-splits]``."""
    p = subparsers.add_parser(
        "synth",
        help="write a deterministic synthetic dataset (demo/test data)",
        description=__doc__.splitlines()[0],
    )
    p.add_argument("out", metavar="OUT", help="output folder")
    p.add_argument("--layout", choices=LAYOUTS, default="busi", help="dataset layout to mimic")
    p.add_argument("--n", type=int, default=24, help="images per class (default 24)")
    p.add_argument("--size", type=int, default=64, help="image width in pixels (default 64)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--mri-splits",
        action="store_true",
        help="mri only: put images under train/, validation/ and test/",
    )
    p.set_defaults(func=_run_cli)
