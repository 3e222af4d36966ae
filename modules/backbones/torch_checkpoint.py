"""Reads a legacy (pre-zip) `torch.save` state dict into numpy arrays, without PyTorch.

Why not `torch.load`: PyTorch is a multi-GB dependency for reading 17 MB of floats, and a
weights file is untrusted input: a pickle can run any code it names. The unpickler below
resolves only the few names a state dict needs (tensor rebuild, storage types, OrderedDict)
and refuses everything else, naming the file and the global it asked for.

Format (torch/serialization.py, `_legacy_save`): pickles of the magic number, the protocol
version (1001) and sys info; the state dict pickle, whose tensors reference storages by
persistent id ('storage', type, key, location, numel, view); the list of storage keys; then per
key an int64 element count and the raw little-endian bytes.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
from dataclasses import dataclass

import numpy as np

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001

_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class CheckpointError(ValueError):
    """The file is not a readable legacy torch state dict (or asks for code to run)."""


@dataclass
class _Storage:
    key: str
    dtype: type
    numel: int
    data: np.ndarray | None = None


@dataclass
class _TensorRef:
    storage: _Storage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]

    def array(self) -> np.ndarray:
        data = self.storage.data
        itemsize = data.dtype.itemsize
        if not self.size:
            return np.array(data[self.offset])
        extent = (
            self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride, strict=True)) + 1
        )
        if extent > data.size:
            raise CheckpointError(f"tensor reaches past its storage {self.storage.key}")
        view = np.lib.stride_tricks.as_strided(
            data[self.offset :],
            shape=self.size,
            strides=tuple(s * itemsize for s in self.stride),
            writeable=False,
        )
        return np.array(view)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, *_unused) -> _TensorRef:
    return _TensorRef(storage, int(storage_offset), tuple(size), tuple(stride))


class _StorageType:
    def __init__(self, name: str):
        self.name = name


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, stream, path: str, storages: dict[str, _Storage]):
        super().__init__(stream)
        self.path, self.storages = path, storages

    def find_class(self, module: str, name: str):
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise CheckpointError(
            f"{self.path}: the checkpoint asks to load {module}.{name}, which a weights file "
            "has no reason to; refusing it (only tensors, storages and OrderedDict are allowed)"
        )

    def persistent_load(self, pid):
        # ('storage', type, key, location, numel[, view_metadata]): views are not supported
        if not (
            isinstance(pid, tuple)
            and len(pid) in (5, 6)
            and pid[0] == "storage"
            and (len(pid) == 5 or pid[5] is None)
        ):
            raise CheckpointError(f"{self.path}: unexpected persistent id {pid!r}")
        storage_type, key, numel = pid[1], pid[2], pid[4]
        if not isinstance(storage_type, _StorageType):
            raise CheckpointError(f"{self.path}: storage {key} has no known storage type")
        if key not in self.storages:
            self.storages[key] = _Storage(key, _STORAGE_DTYPES[storage_type.name], int(numel))
        return self.storages[key]


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """name -> numpy array of a legacy `torch.save(state_dict)` file."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read the checkpoint ({e})") from e
    if raw[:2] == b"PK":
        raise CheckpointError(
            f"{path}: a zip-format torch checkpoint; only the legacy torch.save format is read"
        )
    stream = io.BytesIO(raw)
    storages: dict[str, _Storage] = {}

    def load():
        try:
            return _RestrictedUnpickler(stream, path, storages).load()
        except CheckpointError:
            raise
        except Exception as e:  # pickle raises many types on garbage or a truncated stream
            raise CheckpointError(
                f"{path}: not a readable torch checkpoint ({type(e).__name__}: {e})"
            ) from e

    if load() != MAGIC_NUMBER:
        raise CheckpointError(f"{path}: not a legacy torch.save file (wrong magic number)")
    if load() != PROTOCOL_VERSION:
        raise CheckpointError(f"{path}: unsupported torch.save protocol version")
    info = load()
    if not (isinstance(info, dict) and info.get("little_endian", True)):
        raise CheckpointError(f"{path}: a big-endian checkpoint is not supported")
    state = load()
    keys = load()
    if not isinstance(state, dict) or not isinstance(keys, list):
        raise CheckpointError(f"{path}: the checkpoint does not hold a state dict")
    for key in keys:
        storage = storages.get(key)
        if storage is None:
            raise CheckpointError(f"{path}: storage {key} is listed but never used")
        header = stream.read(8)
        if len(header) < 8:
            raise CheckpointError(f"{path}: truncated before storage {key}")
        (numel,) = struct.unpack("<q", header)
        nbytes = numel * np.dtype(storage.dtype).itemsize
        body = stream.read(nbytes)
        if numel != storage.numel or len(body) < nbytes:
            raise CheckpointError(f"{path}: truncated or inconsistent storage {key}")
        storage.data = np.frombuffer(body, dtype=np.dtype(storage.dtype).newbyteorder("<"))
    missing = sorted(k for k, s in storages.items() if s.data is None)
    if missing:
        raise CheckpointError(f"{path}: storages {missing} have no data")
    out = {}
    for name, value in state.items():
        if not isinstance(value, _TensorRef):
            raise CheckpointError(f"{path}: entry {name!r} is not a tensor")
        out[str(name)] = value.array()
    return out
