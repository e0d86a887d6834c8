"""`workflow import`: a ComfyUI export converted, given a drafted manifest, checked and written."""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from typing import Any

import aiohttp
from pydantic import BaseModel

from ..comfy.client import ComfyClient
from ..workflow_problems import Problem
from ..workflows import Graph, WorkflowError, load_workflow, read_workflow
from .check import BackendFacts, check_files
from .convert import ConversionError, Converted, convert, editor_classes, is_editor_format
from .draft import Draft, draft_manifest, snake
from .manifest_toml import manifest_toml
from .nodes import PROBED_FOLDERS, NodeDef, fetch_models, fetch_nodes

NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


class ImportRefused(ValueError):
    """An export that is not imported: unreadable, of an unknown shape, or its name taken."""


class Imported(BaseModel):
    """What an import wrote and what it found on the way."""

    name: str
    graph_path: Path
    manifest_path: Path
    draft: Draft
    notes: list[str] = []
    problems: list[Problem] = []


async def import_workflow(
    source: Path, *, comfyui_url: str, workflows_dir: Path, name: str | None, force: bool
) -> Imported:
    """Import `source` into `workflows_dir` as `name` (default: from the file's name)."""
    name = name or snake(source.stem)
    if not NAME.match(name):
        raise ImportRefused(f"{name!r} is not a workflow name: lower case, digits and _")
    targets = (workflows_dir / f"{name}.json", workflows_dir / f"{name}.toml")
    taken = [str(p) for p in targets if p.exists()]
    if taken and not force:
        raise ImportRefused(f"{' and '.join(taken)} exist: choose another --name, or --force")
    data = _read(source)
    async with aiohttp.ClientSession() as session:
        client = ComfyClient(comfyui_url, session, request_timeout=30)
        converted, nodes = await _api_graph(client, data)
        models = await fetch_models(client, PROBED_FOLDERS)
        draft = draft_manifest(
            name, converted.graph, nodes, models=models, marks=converted.marks, source=source.name
        )
        needed = {s.models for s in draft.manifest.params.values() if s.models}
        models |= await fetch_models(client, needed - set(models))
        facts = BackendFacts(label=client.label, nodes=nodes, models=models)
    comments = [
        f"Drafted by `formy-async workflow import` from {source.name}: review the params",
        "(names, defaults, descriptions) before serving it.",
    ]
    problems = _written(converted.graph, manifest_toml(draft.manifest, comments), targets, facts)
    return Imported(
        name=name,
        graph_path=targets[0],
        manifest_path=targets[1],
        draft=draft,
        notes=converted.notes,
        problems=problems,
    )


def _read(source: Path) -> Any:
    try:
        return json.loads(source.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise ImportRefused(f"{source}: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise ImportRefused(f"{source}:{exc.lineno}: not JSON: {exc.msg}") from exc


def is_api_format(data: Any) -> bool:
    return (
        isinstance(data, dict)
        and bool(data)
        and all(isinstance(n, dict) and "class_type" in n for n in data.values())
    )


async def _api_graph(client: ComfyClient, data: Any) -> tuple[Converted, dict[str, NodeDef]]:
    """The export as an API-format graph, and the definitions of its node classes."""
    if is_editor_format(data):
        nodes = await fetch_nodes(client, editor_classes(data))
        return convert(data, nodes), nodes
    if is_api_format(data):
        graph: Graph = {str(k): v for k, v in data.items()}
        for node in graph.values():
            node.setdefault("inputs", {})
        nodes = await fetch_nodes(client, {str(n["class_type"]) for n in graph.values()})
        return Converted(graph=graph), nodes
    raise ConversionError(
        "neither ComfyUI's API format ({node_id: {class_type, inputs}}) nor its workflow "
        "format (nodes, links)"
    )


def _written(
    graph: Graph, manifest_text: str, targets: tuple[Path, Path], facts: BackendFacts
) -> list[Problem]:
    """Write the graph and manifest once they load as the catalogue loads them; what the
    backend check finds in them (nothing, when it all fits)."""
    graph_text = json.dumps(graph, indent=2) + "\n"
    with tempfile.TemporaryDirectory() as scratch:
        trial = Path(scratch) / targets[1].name
        (Path(scratch) / targets[0].name).write_text(graph_text)
        trial.write_text(manifest_text)
        try:
            load_workflow(trial)
        except WorkflowError as exc:  # a drafting mistake: say so rather than write it
            raise ConversionError(f"the drafted manifest does not load: {exc}") from exc
    targets[0].parent.mkdir(parents=True, exist_ok=True)
    targets[0].write_text(graph_text)
    targets[1].write_text(manifest_text)
    return check_files(read_workflow(targets[1]), facts)
