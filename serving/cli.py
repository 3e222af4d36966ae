"""``lesionlens predict``: score images against TF Serving (or ``lesionlens serve-dev``).

Why here: the project CLI (lesionlens/cli.py) only calls `add_cli(subparsers)` and dispatches
``args.func(args)``; TensorFlow and gRPC are imported inside the handlers so building the
parser for other subcommands stays fast.

Exit codes of ``predict``: 0 all images scored, 1 some images could not be read or were
rejected (the rest are still scored and written), 2 the run cannot proceed (server
unreachable, unknown model / version / signature, bad arguments).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modules import contract as C
from modules import image_io

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def add_cli(subparsers: Any) -> None:
    """Registers ``predict`` on an argparse subparsers object."""
    predict = subparsers.add_parser(
        "predict",
        help="classify images with a served model; write Grad-CAM overlays and JSON",
        description="Send images to TF Serving (or `serve-dev`) and print class + probabilities. "
        "Folders are searched recursively for .png/.jpg/.jpeg files; *_mask* files are skipped. "
        "Exit code 1 if some images failed, 2 if the server/model/signature is unusable.",
    )
    predict.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="image files or folders")
    predict.add_argument("--server", required=True, help="HOST:PORT (gRPC) or REST base URL")
    predict.add_argument("--model", required=True, help="model name on the server")
    predict.add_argument("--signature", choices=C.PREDICT_SIGNATURES, default=C.PREDICT_IMAGES)
    predict.add_argument("--rest", action="store_true", help="use the REST API instead of gRPC")
    which = predict.add_mutually_exclusive_group()
    which.add_argument("--version", type=int, help="model version (default: the latest)")
    which.add_argument("--version-label", help="model version label, e.g. stable")
    predict.add_argument("--batch-size", type=positive_int, default=16)
    predict.add_argument(
        "--classes",
        type=C.parse_classes,
        help="comma-separated class names by class id (default: benign,malignant, or "
        "benign,malignant,normal for a three-class model)",
    )
    predict.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    predict.add_argument(
        "--mask",
        action="append",
        default=[],
        metavar="MASK",
        help="lesion mask PNG; repeat once per image, in the order the images are listed",
    )
    predict.add_argument(
        "--sibling-masks",
        action="store_true",
        help="use the union of IMAGE_mask*.png next to each image (BUSI layout) as its mask",
    )
    predict.add_argument("--modality", help="`modality` feature of the Examples (Example inputs)")
    predict.add_argument(
        "--out",
        type=Path,
        help="write <stem>_<class>_gradcam.png (the image beside its Grad-CAM overlay, with "
        "the outline of the ROI the model used, over a caption: see --overlay-style) and "
        "<stem>.json here",
    )
    predict.add_argument("--alpha", type=float, default=0.4, help="heatmap opacity in overlays")
    add_overlay_style(predict)
    predict.set_defaults(func=run_predict)


def add_overlay_style(parser: Any) -> None:
    """`--overlay-style`, shared by `predict` and `score`."""
    parser.add_argument(
        "--overlay-style",
        choices=("captioned", "compact"),
        default="captioned",
        help="captioned (default): the image beside the overlay over a caption (class, "
        "P(malignant) against the threshold, roi_source, model, colour bar, legend; the "
        "radiologist's mask outlined in magenta when given); compact: the overlay alone",
    )


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


@dataclass
class _Item:
    """One image to score: its source, bytes, optional mask, and original size."""

    path: Path
    image_bytes: bytes
    mask_bytes: bytes
    mask_path: str | None
    size: tuple[int, int]


def expand_inputs(paths: Sequence[str | Path]) -> tuple[list[Path], list[str]]:
    """Image files from files and folders (recursive, sorted, deduplicated) + problems found."""
    images: list[Path] = []
    problems: list[str] = []
    seen: set[Path] = set()

    def add(path: Path) -> None:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            images.append(path)

    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = [
                p
                for p in sorted(path.rglob("*"))
                if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not is_mask_file(p)
            ]
            if not found:
                problems.append(f"{path}: no .png/.jpg/.jpeg images in this folder")
            for p in found:
                add(p)
        elif path.is_file():
            add(path)
        else:
            problems.append(f"{path}: no such file or folder")
    return images, problems


def is_mask_file(path: Path) -> bool:
    """Lesion masks by ingestion's rule (``NAME_mask.png``, ``NAME_mask_1.png``) are not inputs."""
    return image_io.mask_stem(path.name) is not None


def sibling_mask(image_path: Path, size: tuple[int, int]) -> tuple[bytes, str | None]:
    """The union of the image's masks beside it, as ingestion writes it, or (b"", None)."""
    candidates = image_io.sibling_masks(str(image_path))
    if not candidates:
        return b"", None
    try:
        mask = image_io.mask_feature(candidates, size)
    except ValueError as error:
        raise OSError(str(error)) from None
    return mask, ",".join(candidates)


def _load_item(path: Path, mask_path: Path | None, sibling_masks: bool) -> _Item:
    """Reads an image (and its mask) and checks Pillow can decode it; raises OSError if not."""
    from PIL import Image, UnidentifiedImageError

    from serving.errors import plain_message

    data = path.read_bytes()
    if not data:
        raise OSError("empty file, not an image")
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            size = image.size
    except UnidentifiedImageError:
        raise OSError("not an image Pillow can read (PNG or JPEG expected)") from None
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise OSError(f"cannot read image: {plain_message(str(error))}") from None
    if mask_path is not None:
        return _Item(path, data, mask_path.read_bytes(), str(mask_path), size)
    if sibling_masks:
        mask_bytes, mask_name = sibling_mask(path, size)
        return _Item(path, data, mask_bytes, mask_name, size)
    return _Item(path, data, b"", None, size)


def _score(client: Any, items: list[_Item], signature: str) -> list[tuple[_Item, Any]]:
    """(item, outputs row | error) per item; a rejected batch is retried image by image.

    Fatal errors (server/model/signature) propagate: every other image would fail the same way.
    """
    from serving.errors import FATAL_ERRORS, ServingError

    try:
        outputs = client.predict_images(
            [i.image_bytes for i in items],
            [i.mask_bytes for i in items],
            image_ids=[i.path.name for i in items],
            signature=signature,
        )
    except FATAL_ERRORS:
        raise
    except ServingError as error:
        if len(items) == 1:
            return [(items[0], error)]
        return [pair for item in items for pair in _score(client, [item], signature)]
    missing = {C.PROBABILITIES, C.CLASS_ID} - set(outputs)
    if missing:
        raise ServingError(
            f"the response of {client.describe(signature)} lacks {sorted(missing)}; "
            f"it has {sorted(outputs)}"
        )
    rows = []
    for index, item in enumerate(items):
        rows.append((item, {name: np.asarray(value)[index] for name, value in outputs.items()}))
    return rows


def _unique_stem(stem: str, used: set[str]) -> str:
    candidate, counter = stem, 2
    while candidate in used:
        candidate, counter = f"{stem}_{counter}", counter + 1
    used.add(candidate)
    return candidate


def _class_name(classes: Sequence[str], class_id: int) -> str:
    return classes[class_id] if 0 <= class_id < len(classes) else f"class_{class_id}"


def text_output(value: Any) -> str:
    """A string output (bytes over gRPC, bytes or str from REST) as str."""
    value = value.item() if isinstance(value, np.ndarray) else value
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _write_outputs(
    out_dir: Path,
    stem: str,
    item: _Item,
    row: dict[str, np.ndarray],
    record: dict,
    args: argparse.Namespace,
    version: str | None,
) -> None:
    from serving.overlay import Prediction, overlay_file_name, render

    if C.GRADCAM in row:
        overlay = out_dir / overlay_file_name(stem, record["class_name"])
        png, caption = render(
            item.image_bytes,
            row[C.GRADCAM],
            Prediction.from_record(record, args.model, version),
            style=args.overlay_style,
            alpha=args.alpha,
            roi_mask=row.get(C.ROI_MASK),  # models exported before the ROI outputs have none
            given_mask=item.mask_bytes,
        )
        overlay.write_bytes(png)
        record["gradcam_overlay"] = overlay.name
        if caption:
            record["gradcam_caption"] = caption
    (out_dir / f"{stem}.json").write_text(json.dumps(record, indent=1))


def served_version(client: Any, asked: int | None) -> str | None:
    """The model version that answered: gRPC responses name it; over REST only an explicit
    --version is known."""
    spec = getattr(client, "last_model_spec", None)
    if spec is not None and spec.HasField("version"):
        return str(spec.version.value)
    return str(asked) if asked is not None else None


def run_predict(args: argparse.Namespace) -> int:
    """The ``predict`` subcommand; see the module docstring for exit codes."""
    if not 0.0 <= args.alpha <= 1.0:
        print(f"error: --alpha must be in [0, 1], got {args.alpha}", file=sys.stderr)
        return 2
    if not args.rest and "://" in args.server:
        print(
            f"error: --server {args.server} looks like a URL; gRPC takes HOST:PORT "
            "(add --rest to use the REST API)",
            file=sys.stderr,
        )
        return 2
    paths, problems = expand_inputs(args.inputs)
    if args.mask and len(args.mask) != len(paths):
        print(
            f"error: {len(args.mask)} --mask given for {len(paths)} images; give one per image "
            "(or use --sibling-masks)",
            file=sys.stderr,
        )
        return 2
    for problem in problems:
        print(f"ERROR {problem}", file=sys.stderr)
    failed = len(problems)
    items: list[_Item] = []
    masks = [Path(m) for m in args.mask] or [None] * len(paths)
    for path, mask in zip(paths, masks, strict=True):
        try:
            items.append(_load_item(path, mask, args.sibling_masks))
        except OSError as error:
            print(f"ERROR {path}: {error}", file=sys.stderr)
            failed += 1
    if not items:
        print("error: no readable images to score", file=sys.stderr)
        return 1 if failed else 2

    from serving.client import make_client
    from serving.errors import ServingError, plain_message

    example_features = {"modality": args.modality} if args.modality else None
    client = make_client(
        args.server,
        args.model,
        rest=args.rest,
        version=args.version,
        version_label=args.version_label,
        signature=args.signature,
        timeout_s=args.timeout,
        example_features=example_features,
    )
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
    used_stems: set[str] = set()
    scored = 0
    try:
        for start in range(0, len(items), args.batch_size):
            batch = items[start : start + args.batch_size]
            for item, result in _score(client, batch, args.signature):
                if isinstance(result, Exception):
                    print(f"ERROR {item.path}: {plain_message(str(result))}", file=sys.stderr)
                    failed += 1
                    continue
                scored += 1
                probabilities = [float(p) for p in np.asarray(result[C.PROBABILITIES])]
                class_id = int(result[C.CLASS_ID])
                classes = (
                    args.classes or C.class_names(C.LAYOUT_CLASSES["busi"])[: len(probabilities)]
                )
                class_name = _class_name(classes, class_id)
                shown = ", ".join(
                    f"{_class_name(classes, i)}={p:.4f}" for i, p in enumerate(probabilities)
                )
                roi_source = text_output(result[C.ROI_SOURCE]) if C.ROI_SOURCE in result else None
                roi = f"\troi={roi_source}" if roi_source is not None else ""
                print(f"{item.path}\t{class_name}\t{shown}{roi}", flush=True)
                if args.out:
                    record = {
                        "image": str(item.path),
                        "image_size": list(item.size),
                        "mask": item.mask_path,
                        "model": args.model,
                        "signature": args.signature,
                        "class_id": class_id,
                        "class_name": class_name,
                        "classes": list(classes),
                        "probabilities": probabilities,
                    }
                    for name in (C.POSITIVE_PROBABILITY, C.THRESHOLD):
                        if name in result:  # models exported with an operating threshold
                            record[name] = float(np.asarray(result[name]))
                    if roi_source is not None:
                        record[C.ROI_SOURCE] = roi_source
                    if C.GRADCAM in result:
                        record[C.GRADCAM] = np.asarray(result[C.GRADCAM]).tolist()
                    stem = _unique_stem(item.path.stem, used_stems)
                    try:
                        version = served_version(client, args.version)
                        _write_outputs(args.out, stem, item, result, record, args, version)
                    except (OSError, ValueError) as error:  # disk full, malformed heatmap...
                        print(f"ERROR {item.path}: cannot write outputs: {error}", file=sys.stderr)
                        failed += 1
    except ServingError as error:  # FATAL_ERRORS, or a response breaking the contract
        print(f"error: {error}", file=sys.stderr)
        return 2
    finally:
        client.close()
    print(f"{scored} image(s) scored, {failed} failed", file=sys.stderr)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (``python -m serving.cli predict ...``) for use without lesionlens."""
    parser = argparse.ArgumentParser(prog="python -m serving.cli")
    add_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
