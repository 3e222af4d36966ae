"""``lesionlens predict`` and ``lesionlens serve-dev``: score images against a model server.

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
DEFAULT_CLASSES = ("benign", "malignant")
SIGNATURES = ("predict_images", "serving_default", "predict_only")


def add_cli(subparsers: Any) -> None:
    """Registers ``predict`` and ``serve-dev`` on an argparse subparsers object."""
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
    predict.add_argument("--signature", choices=SIGNATURES, default="predict_images")
    predict.add_argument("--rest", action="store_true", help="use the REST API instead of gRPC")
    which = predict.add_mutually_exclusive_group()
    which.add_argument("--version", type=int, help="model version (default: the latest)")
    which.add_argument("--version-label", help="model version label, e.g. stable")
    predict.add_argument("--batch-size", type=_positive_int, default=16)
    predict.add_argument(
        "--classes",
        type=_class_list,
        default=list(DEFAULT_CLASSES),
        help="comma-separated class names by class id (default: benign,malignant)",
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
    predict.add_argument("--out", type=Path, help="write <stem>_gradcam.png and <stem>.json here")
    predict.add_argument("--alpha", type=float, default=0.4, help="heatmap opacity in overlays")
    predict.set_defaults(func=run_predict)

    serve_dev = subparsers.add_parser(
        "serve-dev",
        help="serve a pushed SavedModel locally over TF Serving's gRPC + REST protocols",
        description="A development stand-in for tensorflow_model_server (not for production).",
    )
    add_serve_dev_arguments(serve_dev)
    serve_dev.set_defaults(func=run_serve_dev)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _class_list(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError("give at least one class name")
    return names


def _version_label(text: str) -> tuple[str, int]:
    label, sep, version = text.partition("=")
    if not sep or not label or not version.isdigit():
        raise argparse.ArgumentTypeError(f"expected LABEL=VERSION, got {text!r}")
    return label, int(version)


def add_serve_dev_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``serve-dev`` (also used by ``python -m serving.dev_server``)."""
    parser.add_argument(
        "--model-dir",
        required=True,
        type=Path,
        help="<serving_root>/<model_name> holding version dirs, or one version dir",
    )
    parser.add_argument(
        "--model-name", help="default: the model dir's name (a version dir's parent's name)"
    )
    parser.add_argument("--port", type=int, default=8500, help="gRPC port (0 = any free port)")
    parser.add_argument("--rest-port", type=int, default=8501, help="REST port (0 = any free)")
    parser.add_argument("--no-rest", action="store_true", help="serve gRPC only")
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    parser.add_argument(
        "--version-label",
        action="append",
        default=[],
        type=_version_label,
        metavar="LABEL=VERSION",
        help="a TF Serving version label, e.g. stable=3",
    )


def run_serve_dev(args: argparse.Namespace, serve_fn: Callable[..., Any] | None = None) -> int:
    """Starts the dev server, prints its addresses and blocks until Ctrl-C / SIGTERM."""
    import signal
    import threading

    if serve_fn is None:
        from serving.dev_server import serve as serve_fn

    try:
        server = serve_fn(
            args.model_dir,
            args.model_name,
            port=args.port,
            rest_port=None if args.no_rest else args.rest_port,
            host=args.host,
            version_labels=dict(args.version_label),
        )
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    stop = threading.Event()
    previous_handler = None
    if threading.current_thread() is threading.main_thread():
        previous_handler = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(
        f"Serving model '{server.model_name}' version {server.version} "
        f"from {server.store.latest.path}",
        flush=True,
    )
    print(f"  gRPC: {server.grpc_target}", flush=True)
    if server.rest_url:
        print(f"  REST: {server.rest_url}/v1/models/{server.model_name}", flush=True)
    print("Press Ctrl-C to stop.", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)
    print("Stopped.", flush=True)
    return 0


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
    """BUSI-style lesion masks (``name_mask.png``, ``name_mask_1.png``) are not inputs."""
    return "_mask" in path.stem.lower()


def sibling_mask(image_path: Path) -> tuple[bytes, str | None]:
    """PNG of the union of ``<stem>_mask*.png`` next to an image, or (b"", None) if none."""
    from PIL import Image

    candidates = sorted(
        p
        for p in image_path.parent.iterdir()
        if p.suffix.lower() == ".png"
        and (p.stem == f"{image_path.stem}_mask" or p.stem.startswith(f"{image_path.stem}_mask_"))
    )
    if not candidates:
        return b"", None
    from lesionlens.ingest.records import encode_png, mask_union

    masks = [Image.open(path) for path in candidates]
    if len({m.size for m in masks}) > 1:
        sizes = ", ".join(
            f"{p.name} {m.width}x{m.height}" for p, m in zip(candidates, masks, strict=True)
        )
        raise OSError(f"masks of {image_path.name} differ in size: {sizes}")
    union = mask_union(masks)  # the same union ingestion writes
    encoded = encode_png(Image.fromarray(union.astype(np.uint8) * 255, mode="L"))
    return encoded, ",".join(str(p) for p in candidates)


def _load_item(path: Path, mask_path: Path | None, sibling_masks: bool) -> _Item:
    """Reads an image (and its mask) and checks Pillow can decode it; raises OSError if not."""
    from PIL import Image, UnidentifiedImageError

    data = path.read_bytes()
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            size = image.size
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as error:
        raise OSError(f"cannot read image: {error}") from None
    if mask_path is not None:
        return _Item(path, data, mask_path.read_bytes(), str(mask_path), size)
    if sibling_masks:
        mask_bytes, mask_name = sibling_mask(path)
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
    missing = {"probabilities", "class_id"} - set(outputs)
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


def _write_outputs(
    out_dir: Path, stem: str, item: _Item, row: dict[str, np.ndarray], record: dict, alpha: float
) -> None:
    from serving.overlay import overlay_png

    if "gradcam" in row:
        overlay = out_dir / f"{stem}_gradcam.png"
        overlay.write_bytes(overlay_png(item.image_bytes, row["gradcam"], alpha))
        record["gradcam_overlay"] = overlay.name
    (out_dir / f"{stem}.json").write_text(json.dumps(record, indent=1))


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
    from serving.errors import ServingError

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
                    print(f"ERROR {item.path}: {result}", file=sys.stderr)
                    failed += 1
                    continue
                scored += 1
                probabilities = [float(p) for p in np.asarray(result["probabilities"])]
                class_id = int(result["class_id"])
                class_name = _class_name(args.classes, class_id)
                shown = ", ".join(
                    f"{_class_name(args.classes, i)}={p:.4f}" for i, p in enumerate(probabilities)
                )
                print(f"{item.path}\t{class_name}\t{shown}", flush=True)
                if args.out:
                    record = {
                        "image": str(item.path),
                        "image_size": list(item.size),
                        "mask": item.mask_path,
                        "model": args.model,
                        "signature": args.signature,
                        "class_id": class_id,
                        "class_name": class_name,
                        "classes": list(args.classes),
                        "probabilities": probabilities,
                    }
                    if "gradcam" in result:
                        record["gradcam"] = np.asarray(result["gradcam"]).tolist()
                    stem = _unique_stem(item.path.stem, used_stems)
                    try:
                        _write_outputs(args.out, stem, item, result, record, args.alpha)
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
