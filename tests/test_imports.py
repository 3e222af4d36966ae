"""Imports point one way: runners and benches -> pipeline -> modules. Read with `ast` from
every file of the checkout (imports inside functions included), so an upward import fails
here with its file and line, before anything runs."""

import ast
from pathlib import Path

from conftest import ROOT

PACKAGES = ("modules", "pipeline", "serving", "lesionlens", "schema")
TOP = ("local_runner", "kubeflow_v2_runner", "bench", "tests")
# folder -> the top-level names no file under it may import
FORBIDDEN = {
    **{package: TOP for package in PACKAGES},
    "modules": (*TOP, "pipeline", "lesionlens"),
    "tests": ("bench",),
}


def imported(path: Path) -> list[tuple[int, str]]:
    """(line, top-level name) of every absolute import in `path`."""
    found = []
    for node in ast.walk(ast.parse(path.read_bytes(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
    return found


def upward_imports(root: Path) -> list[str]:
    bad = []
    for folder, forbidden in FORBIDDEN.items():
        for path in sorted((root / folder).rglob("*.py")):
            for line, name in imported(path):
                if name in forbidden:
                    bad.append(f"{path.relative_to(root)}:{line} imports {name}")
    return bad


def test_no_upward_import():
    assert upward_imports(ROOT) == []


def test_an_upward_import_is_found(tmp_path):
    for folder in FORBIDDEN:
        (tmp_path / folder).mkdir()
    (tmp_path / "modules" / "a.py").write_text("def f():\n    from pipeline import config\n")
    (tmp_path / "serving" / "b.py").write_text("import local_runner\nimport modules.contract\n")
    (tmp_path / "tests" / "test_c.py").write_text("from bench.load import main\nimport bombs\n")
    (tmp_path / "pipeline" / "d.py").write_text("from modules import contract\n")
    assert upward_imports(tmp_path) == [
        "modules/a.py:2 imports pipeline",
        "serving/b.py:1 imports local_runner",
        "tests/test_c.py:1 imports bench",
    ]
