"""Legacy torch.save checkpoints assembled opcode by opcode, honest and hostile: the reader's
tests need files no honest pickler writes (negative strides, BUILD on anything, memo indices
of 2**27, tuples 200,000 deep). Everything is written at test time; nothing binary is
committed. Each hostile case is (id, file bytes, what the refusal must say)."""

from __future__ import annotations

import pickle
import struct

import numpy as np

MAGIC, VERSION = 0x1950A86A20F9469CFC6C, 1001
PROTO2, STOP, MARK, TUPLE, TUPLE1 = b"\x80\x02", b".", b"(", b"t", b"\x85"
REDUCE, BUILD, BINPERSID, NONE, NEWFALSE = b"R", b"b", b"Q", b"N", b"\x89"
EMPTY_DICT, EMPTY_LIST, EMPTY_TUPLE, SETITEM, SETITEMS = b"}", b"]", b")", b"s", b"u"
FOUR = (("0", np.arange(4, dtype="<f4")),)  # the default storage: key "0", 4 floats


def glob(module: str, name: str) -> bytes:
    return b"c" + f"{module}\n{name}\n".encode()


def integer(n: int) -> bytes:
    if -(2**31) <= n < 2**31:
        return b"J" + struct.pack("<i", n)
    encoded = pickle.encode_long(n)
    return b"\x8a" + bytes([len(encoded)]) + encoded


def text(s: str) -> bytes:
    raw = s.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def value(v: object) -> bytes:
    """Opcodes pushing a plain value: None, bool, int, str, or a tuple of them."""
    if v is None:
        return NONE
    if isinstance(v, bool):
        return b"\x88" if v else NEWFALSE
    if isinstance(v, int):
        return integer(v)
    if isinstance(v, str):
        return text(v)
    if isinstance(v, tuple):
        return tup(*(value(x) for x in v))
    if isinstance(v, bytes):  # already opcodes
        return v
    raise TypeError(v)


def tup(*parts: bytes) -> bytes:
    return MARK + b"".join(parts) + TUPLE


def put(index: int) -> bytes:
    return b"r" + struct.pack("<I", index)  # LONG_BINPUT


def get(index: int) -> bytes:
    return b"j" + struct.pack("<I", index)  # LONG_BINGET


def ordered_dict() -> bytes:
    return glob("collections", "OrderedDict") + EMPTY_TUPLE + REDUCE


def dict_of(items: dict[str, object]) -> bytes:
    return EMPTY_DICT + b"".join(text(k) + value(v) + SETITEM for k, v in items.items())


def storage(key: object = "0", numel: object = 4, kind: str = "FloatStorage", view=None) -> bytes:
    """A persistent id as torch writes it: ('storage', type, key, location, numel, view)."""
    pid = (text("storage"), glob("torch", kind), value(key), text("cpu"), value(numel))
    return tup(*pid, value(view)) + BINPERSID


def tensor(
    offset: object = 0, size: object = (4,), stride: object = (1,), of: bytes = b""
) -> bytes:
    """_rebuild_tensor_v2(storage, offset, size, stride, requires_grad, backward_hooks)."""
    args = (of or storage(), value(offset), value(size), value(stride), NEWFALSE, ordered_dict())
    return glob("torch._utils", "_rebuild_tensor_v2") + tup(*args) + REDUCE


def state_dict(entries: dict[str, bytes] | list[tuple[bytes, bytes]], build: bytes = b"") -> bytes:
    """The state-dict pickle: an OrderedDict of the given entries, then an optional BUILD
    with the given state (torch.save writes {'_metadata': OrderedDict})."""
    pairs = entries.items() if isinstance(entries, dict) else entries
    body = b"".join((text(k) if isinstance(k, str) else k) + v for k, v in pairs)
    return PROTO2 + ordered_dict() + MARK + body + SETITEMS + (build and build + BUILD) + STOP


def checkpoint(
    state: bytes,
    storages: list[tuple[str, np.ndarray]] = FOUR,
    keys: object = None,
    magic: object = MAGIC,
    info: object = None,
    tail: bytes = b"",
) -> bytes:
    """A legacy torch.save file: magic, version, sys info, `state`, the storage keys, and
    per storage its element count and bytes."""
    info = {"protocol_version": VERSION, "little_endian": True} if info is None else info
    head = b"".join(pickle.dumps(obj, protocol=2) for obj in (magic, VERSION, info))
    keys = [k for k, _ in storages] if keys is None else keys
    data = b"".join(struct.pack("<q", a.size) + a.tobytes() for _, a in storages)
    return head + state + pickle.dumps(keys, protocol=2) + data + tail


def honest(tensors: dict[str, np.ndarray]) -> bytes:
    """A checkpoint of contiguous tensors, one storage each, as torch.save writes it."""
    entries, storages = {}, []
    for i, (name, array) in enumerate(tensors.items()):
        kind = {"f": "FloatStorage", "i": "LongStorage", "b": "BoolStorage"}[array.dtype.kind]
        stride = tuple(int(np.prod(array.shape[d + 1 :])) for d in range(array.ndim))
        of = storage(str(i), array.size, kind)
        entries[name] = tensor(0, array.shape, stride, of)
        storages.append((str(i), array))
    return checkpoint(state_dict(entries, dict_of({"_metadata": b"}"})), storages)


def single(size: object = (4,), stride: object = (1,), offset: object = 0, of=b"") -> bytes:
    """A checkpoint of one tensor "w" over the default storage (or `of`)."""
    return checkpoint(state_dict({"w": tensor(offset, size, stride, of)}))


def bare(state: bytes) -> bytes:
    """A checkpoint whose state pickle is `state` alone, with no storages."""
    return checkpoint(PROTO2 + state + STOP, [])


def _scalar_over(fake_storage: bytes) -> bytes:
    """A 0-dim tensor over something that is not a storage: before the fix, the reader ran
    `np.array(storage.data[offset])` on it."""
    return checkpoint(state_dict({"w": tensor(0, (), (), fake_storage)}), [])


def _planted(target: bytes, attribute: str, planted: bytes) -> bytes:
    """`target` with an attribute set by BUILD, as a 0-dim tensor's storage."""
    return _scalar_over(target + EMPTY_DICT + text(attribute) + planted + SETITEM + BUILD)


# numpy honours an __array_interface__ on whatever it is handed: this one points at address 4096
_INTERFACE = dict_of({"data": (4096, False), "shape": (), "typestr": "<f4", "version": 3})


def _memory_read() -> bytes:
    """The review's exploit: a fake storage whose `data[0]` carries an __array_interface__,
    all planted by BUILD on OrderedDicts; `np.array` of it read memory at that address."""
    pointer = ordered_dict() + dict_of({"__array_interface__": _INTERFACE}) + BUILD
    dtype = ordered_dict() + dict_of({"itemsize": 4}) + BUILD
    data = ordered_dict() + integer(0) + pointer + SETITEM + EMPTY_DICT + text("dtype")
    data += dtype + SETITEM + BUILD
    return _scalar_over(ordered_dict() + EMPTY_DICT + text("data") + data + SETITEM + BUILD)


def geometry_cases() -> list[tuple[str, bytes, str]]:
    """Tensors reaching outside their 4-element storage, or asking to be multiplied."""
    return [
        ("negative offset", single(offset=-2), "offset"),
        ("negative stride", single((4,), (-1,), 3), "stride"),
        ("cancelling strides", single((2, 2), (64, -64)), "stride"),
        ("far offset", single(offset=10**6), "reaches past its storage '0'"),
        ("far stride", single((2,), (10**6,)), "reaches past its storage '0'"),
        ("one past the end", single(offset=1), "reaches past its storage '0'"),
        ("0-dim offset out of range", single((), (), 4), "reaches past its storage '0'"),
        ("0-dim negative offset", single((), (), -1), "offset"),
        ("overlapping view", single((1000, 1000), (1, 1)), "more elements than its storage"),
        ("stride-0 broadcast", single((512, 1 << 20), (0, 0)), "stride 0"),
        ("nine dims", single((1,) * 9, (1,) * 9), "<= 8 ints"),
        ("size and stride differ", single((2, 2), (1,)), "differ in length"),
        ("negative size", single((-1,), (1,)), "size"),
        ("non-integer size", single(("4",), (1,)), "size"),
        ("bool size", single((True,), (1,)), "size"),
        ("size not a tuple", single(None, (1,)), "size"),
        ("overflowing stride", single((2,), (2**70,)), "stride"),
        ("empty tensor far offset", single((0,), (1,), 10**6), "an empty tensor past"),
        ("empty tensor, huge shape", single((0,) + (1 << 28,) * 7, (1,) * 8), "no real shape"),
        (
            "one storage read twice",
            checkpoint(state_dict({"a": tensor(), "b": tensor()})),
            "the tensors read 8 elements, the storages hold 4",
        ),
    ]


def planting_cases() -> list[tuple[str, bytes, str]]:
    """BUILD, which sets attributes, on every kind of object the reader makes."""
    poisoned_state = dict_of({"__array_interface__": _INTERFACE})
    return [
        ("array interface on an OrderedDict", _memory_read(), "on an OrderedDict"),
        ("OrderedDict as a storage", _scalar_over(ordered_dict()), "not a storage"),
        ("text as a storage", _scalar_over(text("heap")), "not a storage"),
        ("storage dtype changed", _planted(storage(), "dtype", text("<U8")), "on a Storage"),
        ("storage data planted", _planted(storage(), "data", _INTERFACE), "on a Storage"),
        (
            "state dict planted",
            checkpoint(state_dict({"w": tensor()}, poisoned_state)),
            "on an OrderedDict",
        ),
        (
            "state dict given slot state",
            checkpoint(state_dict({"w": tensor()}, tup(NONE, poisoned_state))),
            "on an OrderedDict",
        ),
        (
            "metadata not a dict",
            checkpoint(state_dict({"w": tensor()}, dict_of({"_metadata": 3}))),
            "_metadata is not a dict",
        ),
        (
            "tensor planted",
            checkpoint(state_dict({"w": tensor() + dict_of({"size": (9,)}) + BUILD})),
            "on a TensorRef",
        ),
        (
            "rebuild function planted",
            bare(glob("torch._utils", "_rebuild_tensor_v2") + dict_of({"x": 1}) + BUILD),
            "on a Callable",
        ),
        (
            "storage type planted",
            bare(glob("torch", "FloatStorage") + dict_of({"name": "X"}) + BUILD),
            "on a StorageType",
        ),
    ]


def parsing_cases() -> list[tuple[str, bytes, str]]:
    """Memo and nesting bombs, opcodes a state dict does not need, malformed pickles."""
    deep = NONE + TUPLE1 * 40
    return [
        ("memo bomb (put)", bare(NONE + put(2**27)), "memo index 134217728 above"),
        ("memo bomb (get)", bare(get(2**27)), "memo index 134217728 above"),
        ("memo never stored", bare(get(5)), "memo entry 5, which it never stored"),
        ("deep tuple key", checkpoint(state_dict([(deep, tensor())])), "nested deeper than 32"),
        ("deep MARKs", bare(MARK * 40), "MARKs open at once"),
        (
            "deep dicts",
            bare((EMPTY_DICT + text("k")) * 40 + EMPTY_DICT + SETITEM * 40),
            "nested deeper than 32",
        ),
        ("float", bare(b"G" + struct.pack(">d", 1.0)), "opcode BINFLOAT"),
        ("stack global", bare(text("os") + text("system") + b"\x93"), "STACK_GLOBAL"),
        (
            "newobj",
            bare(glob("collections", "OrderedDict") + EMPTY_TUPLE + b"\x81"),
            "NEWOBJ",
        ),
        ("inst", bare(b"(ios\nsystem\n"), "opcode INST"),
        ("protocol 4", checkpoint(b"\x80\x04" + NONE + STOP), "pickle protocol 4"),
        ("frame", checkpoint(PROTO2 + b"\x95" + struct.pack("<Q", 1) + NONE + STOP), "FRAME"),
        ("long pickle", bare(text("x" * (1 << 20)) + b"0"), "longer than 1048576 bytes"),
        ("underflow", bare(TUPLE1), "malformed pickle"),
        ("no mark", bare(NONE + SETITEMS), "malformed pickle"),
        ("no STOP", pickle.dumps(MAGIC, protocol=2)[:-1], "not a readable torch checkpoint"),
        ("garbage", b"\x80\x02\xff\xfe", "not a readable torch checkpoint"),
        ("zip checkpoint", b"PK\x03\x04" + bytes(40), "zip-format"),
        ("wrong magic", checkpoint(state_dict({}), [], magic=7), "wrong magic number"),
        ("magic a string", checkpoint(state_dict({}), [], magic="x"), "wrong magic number"),
        ("big endian", checkpoint(state_dict({}), [], info={"little_endian": False}), "big-endian"),
        (
            "os.system",
            bare(glob("posix", "system") + text("id") + TUPLE1 + REDUCE),
            "asks to load posix.system",
        ),
        ("torch global", bare(glob("torch", "UntypedStorage")), "torch.UntypedStorage"),
    ]


def structure_cases() -> list[tuple[str, bytes, str]]:
    """Keys, element counts and the end of the file; errors raised by Python itself."""
    f4 = list(FOUR)
    double = storage("0", 4, "LongStorage")
    return [
        ("unhashable state key", checkpoint(state_dict([(EMPTY_DICT, tensor())])), "unhashable"),
        ("state key not text", checkpoint(state_dict([(integer(3), tensor())])), "entry 3 is not"),
        ("entry not a tensor", checkpoint(state_dict({"w": integer(3)})), "'w' is not a named"),
        ("state not a dict", bare(EMPTY_LIST), "does not hold a state dict"),
        ("storage key a number", single(of=storage(7)), "storage key 7"),
        ("storage key unhashable", single(of=storage(EMPTY_LIST)), "storage key []"),
        ("negative numel", single(of=storage(numel=-1)), "claims -1 elements"),
        ("numel past the file", single(of=storage(numel=10**9)), "claims 1000000000 elements"),
        ("numel not an int", single(of=storage(numel="4")), "claims '4' elements"),
        ("storage view", single(of=storage(view=("v", 0))), "unexpected persistent id"),
        ("persistent id a number", single(of=integer(1) + BINPERSID), "unexpected persistent id"),
        (
            "one key, two dtypes",
            checkpoint(state_dict({"a": tensor(), "b": tensor(of=double)})),
            "two dtypes or sizes",
        ),
        (
            "one key, two sizes",
            checkpoint(state_dict({"a": tensor(), "b": tensor(0, (2,), (1,), storage("0", 2))})),
            "two dtypes or sizes",
        ),
        ("keys not text", checkpoint(state_dict({}), [], keys=[1]), "not a list of strings"),
        ("keys not a list", checkpoint(state_dict({}), [], keys="0"), "not a list of strings"),
        ("key listed twice", checkpoint(state_dict({"w": tensor()}), f4 * 2), "listed twice"),
        ("key never used", checkpoint(state_dict({}), f4), "listed but never used"),
        ("storage without data", checkpoint(state_dict({"w": tensor()}), [], keys=[]), "no data"),
        (
            "element count differs",
            checkpoint(state_dict({"w": tensor()}), [("0", np.arange(5, dtype="<f4"))]),
            "holds 5 elements, not 4",
        ),
        ("bytes after the end", single() + b"x", "1 bytes after the last storage"),
        ("truncated data", single()[:-3], "truncated inside storage '0'"),
        ("truncated count", single()[:-18], "truncated before storage '0'"),
    ]


def hostile_cases() -> list[tuple[str, bytes, str]]:
    return geometry_cases() + planting_cases() + parsing_cases() + structure_cases()
