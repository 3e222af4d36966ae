"""The Pusher makes a version visible to TF Serving only when it is complete: a push that
fails half-way leaves no integer folder, and stale staging folders are cleaned up."""

import os
import time

import pytest
from tfx.proto import pusher_pb2
from tfx.types import standard_artifacts
from tfx.utils import io_utils, proto_utils

from modules import atomic_push


def make_inputs(tmp_path, blessed: bool = True):
    model = standard_artifacts.Model()
    model.uri = str(tmp_path / "model")
    serving = tmp_path / "model" / "Format-Serving"
    (serving / "variables").mkdir(parents=True)
    (serving / "variables" / "variables.data-00000-of-00001").write_bytes(b"w" * 1000)
    (serving / "saved_model.pb").write_bytes(b"graph")
    blessing = standard_artifacts.ModelBlessing()
    blessing.uri = str(tmp_path / "blessing")
    blessing.set_int_custom_property("blessed", int(blessed))
    return {"model": [model], "model_blessing": [blessing]}


def push(tmp_path, inputs, name: str):
    pushed = standard_artifacts.PushedModel()
    pushed.uri = str(tmp_path / name)
    destination = pusher_pb2.PushDestination(
        filesystem=pusher_pb2.PushDestination.Filesystem(base_directory=str(tmp_path / "base"))
    )
    props = {"push_destination": proto_utils.proto_to_json(destination)}
    atomic_push.Executor().Do(inputs, {"pushed_model": [pushed]}, props)
    return pushed


def versions(tmp_path) -> list[str]:
    base = tmp_path / "base"
    return sorted(os.listdir(base)) if base.exists() else []


def test_push_renames_a_complete_version_into_place(tmp_path):
    inputs = make_inputs(tmp_path)
    first = push(tmp_path, inputs, "p1")
    second = push(tmp_path, inputs, "p2")  # within the same second: the next integer
    names = versions(tmp_path)
    assert len(names) == 2 and all(n.isdigit() for n in names), names  # no staging left
    assert int(names[1]) == int(names[0]) + 1
    for pushed, name in ((first, names[0]), (second, names[1])):
        final = tmp_path / "base" / name
        assert pushed.get_string_custom_property("pushed_destination") == str(final)
        assert pushed.get_string_custom_property("pushed_version") == name
        assert (final / "saved_model.pb").read_bytes() == b"graph"
        assert (final / "variables" / "variables.data-00000-of-00001").stat().st_size == 1000


def test_push_failing_half_way_leaves_no_version(tmp_path, monkeypatch):
    """saved_model.pb is copied last; failing there (disk full, a crash) must not leave an
    integer folder that TF Serving would try to load."""

    def fail(*args, **kwargs):
        raise OSError("disk full (test)")

    monkeypatch.setattr(io_utils, "copy_file", fail)
    with pytest.raises(OSError, match="disk full"):
        push(tmp_path, make_inputs(tmp_path), "p1")
    assert [n for n in versions(tmp_path) if n.isdigit()] == []
    assert versions(tmp_path) == []  # the staging folder is removed too


def test_unblessed_model_is_not_pushed_and_stale_staging_is_removed(tmp_path):
    base = tmp_path / "base"
    stale, fresh = base / ".staging-old", base / ".staging-now"
    stale.mkdir(parents=True)
    fresh.mkdir()
    hours_ago = time.time() - 2 * 3600
    os.utime(stale, (hours_ago, hours_ago))
    pushed = push(tmp_path, make_inputs(tmp_path, blessed=False), "p1")
    assert not pushed.get_int_custom_property("pushed")
    assert versions(tmp_path) == [".staging-now"]  # an hour-old staging folder: interrupted
