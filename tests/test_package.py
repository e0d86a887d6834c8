"""The package's public surface and the direction of its imports."""

from __future__ import annotations

import ast
from pathlib import Path

import formy_async

PACKAGE = Path(formy_async.__file__).parent


def test_public_names_are_sorted_and_importable() -> None:
    assert formy_async.__all__ == sorted(formy_async.__all__)
    for name in formy_async.__all__:
        assert hasattr(formy_async, name), name


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level > 0 and node.module:
            names.add(node.module.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_bottom_modules_import_nothing_of_ours_above_them() -> None:
    for module in ("errors", "keys", "settings", "models"):
        ours = {n for n in _imports(PACKAGE / f"{module}.py")} & {
            "jobs",
            "comfy",
            "web",
            "worker",
            "jobstore",
            "events",
            "storage",
            "embedded",
        }
        assert not ours, (module, ours)


def test_web_side_never_imports_the_worker_or_comfy() -> None:
    for path in (PACKAGE / "web").glob("*.py"):
        assert not _imports(path) & {"jobs", "comfy", "worker", "embedded"}, path.name


def test_every_module_opens_with_a_docstring() -> None:
    for path in PACKAGE.rglob("*.py"):
        assert ast.get_docstring(ast.parse(path.read_text())), path
