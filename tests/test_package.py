"""The package's public surface, and the layers its imports must respect."""

from __future__ import annotations

import ast
import shutil
import subprocess
import venv
from pathlib import Path

import pytest

import formy_async

PACKAGE = Path(formy_async.__file__).parent
ROOT = PACKAGE.parent

BOTTOM = {"errors", "settings", "models", "logs", "heap", "start_problems"}
DOMAIN = {
    "asset_refs",
    "auth",
    "images",
    "image_headers",
    "media",
    "storage",
    "workflows",
    "workflow_problems",
    "catalogue_watch",
    "webhook_urls",
}
#: what each part may import of ours (besides itself); the entry points (cli, embedded,
#: doctor, the package's __init__) may import anything
MAY_IMPORT: dict[str, set[str]] = {
    "bottom": BOTTOM,
    "domain": BOTTOM | DOMAIN,
    "comfy": BOTTOM | DOMAIN,
    "store": BOTTOM | DOMAIN,
    "worker": BOTTOM | DOMAIN | {"comfy", "store", "client.webhooks"},
    "web": BOTTOM | DOMAIN | {"comfy", "store"},
    "authoring": BOTTOM | DOMAIN | {"comfy"},
    "client": {"errors", "models"},
    "simulator": {"logs"},
}
ENTRY_POINTS = {"__init__", "__main__", "cli", "embedded", "doctor"}
#: the service's dependencies, which the client may not need
SERVER_ONLY = {
    "aiobotocore",
    "aiofiles",
    "arq",
    "blake3",
    "botocore",
    "fakeredis",
    "PIL",
    "prometheus_client",
    "dotenv",
    "jwt",
    "redis",
    "structlog",
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path) -> set[str]:
    """Every module a file imports, absolute, in any form (`from .. import x` gives `pkg.x`)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                source = ".".join([*base, node.module] if node.module else base)
            else:
                source = node.module or ""
            found.add(source)
            # `from pkg import name` may import the module pkg.name
            found.update(f"{source}.{alias.name}" for alias in node.names)
    return found


def ours(path: Path) -> set[str]:
    """The project's modules a file imports, relative to the package (`store.keys`, `models`)."""
    names = {m for m in imported(path) if m.startswith("formy_async.")}
    existing = {module_name(p) for p in PACKAGE.rglob("*.py")}
    return {m.removeprefix("formy_async.") for m in names if m in existing}


def part_of(path: Path) -> str:
    relative = path.relative_to(PACKAGE)
    if len(relative.parts) > 1:
        return relative.parts[0]
    stem = relative.stem
    if stem in BOTTOM:
        return "bottom"
    if stem in DOMAIN:
        return "domain"
    return "entry" if stem in ENTRY_POINTS else "unknown"


def allowed(part: str, module: str) -> bool:
    if part == "entry":
        return True
    top = module.split(".")[0]
    rules = MAY_IMPORT[part]
    return top == part or module in rules or top in rules


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_public_names_are_sorted_and_importable() -> None:
    assert formy_async.__all__ == sorted(formy_async.__all__)
    for name in formy_async.__all__:
        assert hasattr(formy_async, name), name


def test_every_module_belongs_to_a_layer() -> None:
    assert [p.name for p in modules() if part_of(p) == "unknown"] == []


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_flow_down_the_layers(path: Path) -> None:
    part = part_of(path)
    assert {m for m in ours(path) if not allowed(part, m)} == set()


def test_only_the_store_names_redis_keys() -> None:
    for path in modules():
        if part_of(path) != "store":
            assert "store.keys" not in ours(path), path


def test_the_web_side_never_imports_the_worker() -> None:
    for path in (PACKAGE / "web").rglob("*.py"):
        assert not {m for m in ours(path) if m.split(".")[0] == "worker"}, path


def test_the_import_walk_sees_relative_package_imports() -> None:
    """`from .. import keys` must count, or a forbidden import would pass unseen."""
    module = PACKAGE / "web" / "app.py"
    found = imported(module)
    assert "formy_async.store.jobs" in found
    assert "formy_async.web.jobs" in found  # from `from . import jobs`


def test_the_client_imports_no_server_dependency() -> None:
    for path in (PACKAGE / "client").glob("*.py"):
        third_party = {m.split(".")[0] for m in imported(path)} & SERVER_ONLY
        assert not third_party, path


def test_every_module_opens_with_a_docstring() -> None:
    for path in PACKAGE.rglob("*.py"):
        assert ast.get_docstring(ast.parse(path.read_text())), path


def test_the_client_installs_and_runs_without_the_server_extra(tmp_path: Path) -> None:
    """A venv with the project's core dependencies only: the client, its CLI, `verify`."""
    source = tmp_path / "source"  # a copy: a build in the checkout would leave build/ behind
    shutil.copytree(PACKAGE, source / "formy_async", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    env = tmp_path / "venv"
    venv.create(env, with_pip=True)
    python = env / "bin" / "python"
    install = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*install, str(source)], check=True, timeout=300, cwd=tmp_path)
    code = (
        "import formy_async, formy_async.client.cli, formy_async.cli\n"
        "from formy_async.client.webhooks import sign, verify\n"
        "from formy_async import FormyClient, JobFinished\n"
        "assert verify(b'{}', 's', 1, 'sha256=' + sign(b'{}', 's', 1), now=1)\n"
        "import importlib.util as u\n"
        f"assert not [m for m in {sorted(SERVER_ONLY)!r} if u.find_spec(m)]\n"
    )
    subprocess.run([str(python), "-c", code], check=True, timeout=60, cwd=tmp_path)
    help_text = subprocess.run(
        [str(env / "bin" / "formy-async"), "submit", "--help"],
        check=True,
        timeout=60,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    ).stdout
    assert "--wait" in help_text
