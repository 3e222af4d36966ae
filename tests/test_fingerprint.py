"""Per-component cache keys (pipeline/fingerprint.py): an edit to one module changes the
parameters of the pipeline steps that run it, and of no other step. The pipeline is built
(not run) from a copy of the project's packages, edited there; tests/test_pipeline_e2e.py
checks the same on MLMD's cache hits."""

import shutil
import textwrap

import pytest

from pipeline import fingerprint
from pipeline.fingerprint import PACKAGES, code_fingerprint, project_imports

ROOT = fingerprint.package_root("modules")


@pytest.fixture
def tree(tmp_path, monkeypatch):
    """A copy of the project's packages that the fingerprints are read from."""
    for package in PACKAGES:
        ignore = shutil.ignore_patterns("__pycache__")
        shutil.copytree(ROOT / package, tmp_path / package, ignore=ignore)
    monkeypatch.setattr(fingerprint, "package_root", lambda package: tmp_path)
    return tmp_path


def step_parameters(tmp_path) -> dict[str, str]:
    """Every node of the demo pipeline: id -> its parameters (the cache key's code part)."""
    from pipeline.config import profile
    from pipeline.pipeline import create_pipeline

    cfg = profile("demo", data_root=str(tmp_path / "records"), output_root=str(tmp_path / "o"))
    pipeline = create_pipeline(cfg, None, [])
    return {node.id: repr(sorted(node.exec_properties.items())) for node in pipeline.components}


def changed_steps(tree, edited: str) -> set[str]:
    before = step_parameters(tree)
    with open(tree / edited, "a") as f:
        f.write("\n# an edit\n")
    after = step_parameters(tree)
    assert set(before) == set(after)
    return {step for step in before if before[step] != after[step]}


def test_editing_the_model_card_reruns_only_the_model_card(tree):
    assert changed_steps(tree, "modules/model_card/card.py") == {"ModelCard"}


def test_editing_the_classifier_model_reruns_its_trainer_not_transform_or_segmenter(tree):
    # ModelCard records the whole run's code (it reruns after any upstream step anyway)
    assert changed_steps(tree, "modules/model.py") == {"Trainer", "ModelCard"}


def test_editing_the_contract_reruns_every_step_that_runs_project_code(tree):
    code_steps = {"Transform", "segmenter_trainer", "segmenter_evaluation", "PredictedRoi"}
    code_steps |= {"Smote", "Trainer", "BootstrapIntervals", "ModelCard"}
    assert changed_steps(tree, "modules/contract.py") == code_steps


def test_editing_image_io_leaves_transform_and_both_trainers_cached(tree):
    # image I/O is apart from the contract: the steps that only read names do not rerun
    changed = changed_steps(tree, "modules/image_io.py")
    assert "BootstrapIntervals" in changed  # it encodes the blank mask of its requests
    assert not changed & {"Transform", "segmenter_trainer", "Trainer"}


def test_imports_followed_relative_in_functions_and_through_packages(tmp_path):
    (tmp_path / "modules" / "pkg").mkdir(parents=True)
    files = {
        "modules/__init__.py": "",
        "modules/pkg/__init__.py": "from modules.pkg import init_only\n",
        "modules/pkg/init_only.py": "",
        "modules/pkg/entry.py": """
            import os
            from . import sibling
            from .sibling import NAME
            def later():
                from modules import lazy
            """,
        "modules/pkg/sibling.py": "NAME = 1\n",
        "modules/lazy.py": "import modules.deep.leaf\n",
        "modules/unused.py": "",
    }
    (tmp_path / "modules" / "deep").mkdir()
    files |= {"modules/deep/__init__.py": "", "modules/deep/leaf.py": ""}
    for name, text in files.items():
        (tmp_path / name).write_text(textwrap.dedent(text))
    found = project_imports("modules.pkg.entry", root=tmp_path)
    assert sorted(found) == [
        "modules",
        "modules.deep",
        "modules.deep.leaf",
        "modules.lazy",
        "modules.pkg",
        "modules.pkg.entry",
        "modules.pkg.init_only",
        "modules.pkg.sibling",
    ]
    key = code_fingerprint("modules.pkg.entry", root=tmp_path)
    (tmp_path / "modules" / "unused.py").write_text("x = 1\n")
    assert code_fingerprint("modules.pkg.entry", root=tmp_path) == key
    (tmp_path / "modules" / "deep" / "leaf.py").write_text("x = 1\n")
    assert code_fingerprint("modules.pkg.entry", root=tmp_path) != key
    with pytest.raises(ModuleNotFoundError, match="modules.nothing"):
        code_fingerprint("modules.nothing", root=tmp_path)
