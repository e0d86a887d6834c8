"""The `formy-async workflow import` and `workflow check` commands: arguments in, a report out."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from ..errors import ComfyUnavailable
from ..models import without_credentials
from ..settings import Settings
from ..workflow_problems import Problem
from .check import check_workflows
from .convert import ConversionError
from .importer import Imported, ImportRefused, import_workflow

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE = 0, 1, 2


def run_workflow_command(args: argparse.Namespace, settings: Settings) -> int:
    directory: Path = args.workflows_dir or settings.workflows_dir
    if args.action == "import":
        url = (args.comfyui or settings.comfyui_base).rstrip("/")
        return _import(args, url, directory)
    urls = [args.comfyui.rstrip("/")] if args.comfyui else [b.url for b in settings.backends]
    return _check(args.names, urls, directory)


def _import(args: argparse.Namespace, url: str, directory: Path) -> int:
    try:
        imported = asyncio.run(
            import_workflow(
                args.file,
                comfyui_url=url,
                workflows_dir=directory,
                name=args.name,
                force=args.force,
            )
        )
    except (ImportRefused, ConversionError, ComfyUnavailable) as exc:
        print(f"formy-async workflow import: {exc}")
        return EXIT_USAGE
    _report(imported)
    return EXIT_PROBLEMS if imported.problems else EXIT_OK


def _report(imported: Imported) -> None:
    manifest = imported.draft.manifest
    print(f"Wrote {imported.graph_path} and {imported.manifest_path}")
    for note in imported.notes:
        print(f"  {note}")
    print(f"Outputs: {', '.join(manifest.outputs) or 'none found'}")
    print("Params proposed:")
    for line in imported.draft.proposed or ["(none)"]:
        print(f"  {line}")
    print("Left fixed:")
    for line in imported.draft.fixed or ["(nothing)"]:
        print(f"  {line}")
    if imported.problems:
        print("It does not fit the backend yet:")
        for problem in imported.problems:
            print(f"  {problem}")
    print(f"Review {imported.manifest_path.name}, then: formy-async workflow check {imported.name}")


def _check(names: list[str], urls: list[str], directory: Path) -> int:
    paths = [directory / f"{name}.toml" for name in names] or sorted(directory.glob("*.toml"))
    if not paths:
        print(f"formy-async workflow check: no workflow manifests (*.toml) in {directory}")
        return EXIT_USAGE
    missing = [Problem(file=str(p), message="no such workflow") for p in paths if not p.exists()]
    present = [p for p in paths if p.exists()]
    problems = missing + asyncio.run(check_workflows(present, urls))
    for problem in problems:
        print(problem)
    backends = ", ".join(without_credentials(url) for url in urls)
    if problems:
        print(f"{len(problems)} problem(s) in {len(paths)} workflow(s), against {backends}")
        return EXIT_PROBLEMS
    print(f"{len(paths)} workflow(s) fit {backends}: nodes, inputs, ranges and models")
    return EXIT_OK
