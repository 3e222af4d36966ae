"""Per-component cache keys: a hash of the project code a component runs.

TFX keys a component's cache on its inputs and parameters. The code it loads by import path
(`modules.trainer.run_fn`, a custom executor) is not in that key, so the pipeline hands each
component, as a parameter, the fingerprint of its entry module and of every project module
that module imports, transitively: an edit reruns the components that run the edited file and
no others (rewording the model card does not retrain the segmenter).

Imports are read with `ast` from the files themselves (installed or checked out, nothing is
imported), including imports inside functions; importing `a.b.c` also runs `a/__init__.py`
and `a/b/__init__.py`, so those count too. Only this project's packages are followed.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
from pathlib import Path

PACKAGES = ("modules", "pipeline", "schema", "serving", "lesionlens")


def package_root(package: str) -> Path:
    """The folder that holds `package` (site-packages or the checkout), found without
    importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"project package {package!r} is not importable")
    return Path(list(spec.submodule_search_locations)[0]).parent


def source_file(module: str, root: Path | None = None) -> Path | None:
    """The file of a project module (`a/b.py` or `a/b/__init__.py`), or None when `module`
    is not one (an attribute, a third-party module). `root`: the folder holding the
    packages (default: where Python finds each of them)."""
    parts = module.split(".")
    if parts[0] not in PACKAGES:
        return None
    base = (root or package_root(parts[0])).joinpath(*parts)
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _imported_names(module: str, path: Path) -> set[str]:
    """Every module name `path` imports, absolute; `from a import b` gives `a` and `a.b`
    (b may be a submodule or an attribute: the caller keeps what has a file)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_bytes(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def _with_packages(module: str) -> list[str]:
    """`a.b.c` -> `a`, `a.b`, `a.b.c`: importing a module runs its packages' __init__ files."""
    parts = module.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def project_imports(*modules: str, root: Path | None = None) -> dict[str, Path]:
    """The project modules that importing `modules` runs (themselves included): name ->
    file."""
    found: dict[str, Path] = {}
    todo = [m for module in modules for m in _with_packages(module)]
    while todo:
        name = todo.pop()
        if name in found:
            continue
        path = source_file(name, root)
        if path is None:
            continue
        found[name] = path
        for imported in _imported_names(name, path):
            todo.extend(_with_packages(imported))
    missing = [m for m in modules if m not in found]
    if missing:
        raise ModuleNotFoundError(f"no project module file for {', '.join(missing)}")
    return found


def code_fingerprint(*modules: str, root: Path | None = None) -> str:
    """16 hex digits over the names and bytes of every project module that `modules` run."""
    digest = hashlib.sha256()
    for name, path in sorted(project_imports(*modules, root=root).items()):
        digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]
