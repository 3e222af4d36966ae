"""Reading images and lesion masks: the BUSI mask-file rule, Pillow decoding with the checks
ingestion and scoring apply (empty, not an image, truncated, above the pixel budget, of
another size), the union of an image's masks and its PNG encoding as the contract's `mask`
feature.

Ingestion, batch scoring, the `predict` client, the BootstrapIntervals component, benches and
tests use it. Pillow and numpy are imported on first use, so a command line that only builds
its parser does not load them.
"""

from __future__ import annotations

import re
from collections.abc import Callable

# --------------------------------------------------------------------------- mask files

# BUSI's rule: "NAME_mask.png", "NAME_mask_1.png", ... belong to image "NAME.<ext>".
MASK_RE = re.compile(r"^(?P<stem>.+)_mask(?:_(?P<k>\d+))?\.png$", re.IGNORECASE)


def mask_stem(filename: str) -> str | None:
    """The image stem a mask file belongs to, or None when `filename` is not a mask."""
    m = MASK_RE.match(filename)
    return m["stem"] if m else None


def mask_order(filename: str) -> int:
    """0 for NAME_mask.png, k for NAME_mask_k.png (masks are unioned in this order)."""
    m = MASK_RE.match(filename)
    return int(m["k"] or 0) if m else -1


def sibling_masks(image_path: str) -> list[str]:
    """The mask files of an image in its folder (BUSI layout), in union order."""
    import os

    folder, name = os.path.split(image_path)
    stem = os.path.splitext(name)[0]
    found = [f for f in os.listdir(folder or ".") if mask_stem(f) == stem]
    return [os.path.join(folder, f) for f in sorted(found, key=mask_order)]


# --------------------------------------------------------------------------- decoding


def open_image(
    path: str,
    data: bytes,
    what: str,
    max_pixels: int | None = None,
    size: tuple[int, int] | None = None,
    decode: bool = True,
):
    """A fully decoded Pillow image; ValueError naming the file when it is empty, not an
    image, truncated, or (checked from the header, before decoding) above `max_pixels` or
    not of `size` (width, height). `decode=False` checks a PNG's chunks and checksums
    without inflating it (40x cheaper; the model decodes it anyway) and returns it unloaded."""
    import io

    from PIL import Image, UnidentifiedImageError

    if not data:
        raise ValueError(f"{path}: empty {what} file")
    try:
        img = Image.open(io.BytesIO(data))  # reads the header only
    except UnidentifiedImageError:
        raise ValueError(f"{path}: not a readable image ({what})") from None
    except Image.DecompressionBombError as e:  # Pillow's own limit, far above ours
        raise ValueError(f"{path}: {what} is above the pixel budget of {max_pixels}: {e}") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"{path}: unreadable or truncated {what}: {e}") from None
    if max_pixels is not None and img.width * img.height > max_pixels:
        raise ValueError(
            f"{path}: {what} is {img.width}x{img.height} pixels, above the pixel budget of "
            f"{max_pixels}"
        )
    if size is not None and img.size != tuple(size):
        raise ValueError(
            f"{path}: {what} size {img.width}x{img.height} differs from image size "
            f"{size[0]}x{size[1]}"
        )
    try:
        if decode or img.format != "PNG":
            img.load()
        else:
            img.verify()  # the object is unusable afterwards: reopen the header
            img = Image.open(io.BytesIO(data))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ValueError(f"{path}: unreadable or truncated {what}: {e}") from None
    return img


# --------------------------------------------------------------------------- masks


def mask_union(paths: list[str], read: Callable[[str], bytes], size: tuple[int, int] | None):
    """Logical OR (bool [H, W]) of the masks: > 0 is lesion, whatever the pixel mode.

    `size` = (width, height) of the image the masks belong to (None: the first mask's).
    Raises ValueError naming the mask file that is unreadable or of another size.
    """
    import numpy as np

    union = None
    for path in paths:
        img = open_image(path, read(path), "mask", size=size)
        size = size or img.size
        pixels = np.asarray(img.convert("L")) > 0
        union = pixels if union is None else union | pixels
    if union is None:
        raise ValueError("no mask files given")
    return union


def encode_mask(union) -> bytes:
    """The `mask` feature: a single-channel PNG, 255 = lesion."""
    import io

    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(union, dtype=np.uint8) * 255, mode="L").save(buf, format="PNG")
    return buf.getvalue()


def mask_feature(
    paths: list[str],
    size: tuple[int, int] | None,
    read: Callable[[str], bytes] | None = None,
) -> bytes:
    """The `mask` feature of an image's mask files: their union as a PNG (`mask_union`;
    `read` defaults to reading the local file)."""
    return encode_mask(mask_union(paths, read or _read_file, size))


def _read_file(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()
