"""TF Serving's layout, read in one place (serving/versions.py) by the dev server,
`lesionlens score` and the benches: the newest version that holds a SavedModel."""

import os

import pytest

from lesionlens.score.inference import ModelError, resolve_model
from serving.dev.model_store import find_versions
from serving.versions import model_versions, newest_version


@pytest.fixture
def base(tmp_path):
    base = tmp_path / "lesionlens"
    for version in ("1", "3", "10"):
        (base / version).mkdir(parents=True)
        (base / version / "saved_model.pb").write_bytes(b"")
    (base / "12").mkdir()  # no saved_model.pb: a half-written push, ignored
    (base / "latest").mkdir()
    (base / "latest" / "saved_model.pb").write_bytes(b"")  # not a version
    return base


def test_the_newest_numbered_version_is_found_by_number_not_by_name(base):
    assert sorted(model_versions(base)) == [1, 3, 10]
    assert newest_version(base) == os.path.join(base, "10")  # "3" > "10" as text
    assert newest_version(base / "12") is None and model_versions(base / "nothing") == {}


def test_the_dev_server_serves_a_base_folder_or_one_version(base):
    name, versions = find_versions(base)
    assert name == "lesionlens" and sorted(versions) == [1, 3, 10]
    assert find_versions(base / "3") == ("lesionlens", {3: (base / "3").resolve()})
    with pytest.raises(FileNotFoundError, match="no SavedModel found"):
        find_versions(base / "12")


def test_score_resolves_a_base_folder_or_a_version(base):
    assert resolve_model(str(base)) == os.path.join(base, "10")
    assert resolve_model(str(base / "3")) == str(base / "3")
    with pytest.raises(ModelError, match="neither a SavedModel nor a folder of numbered"):
        resolve_model(str(base / "12"))
