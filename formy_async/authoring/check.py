"""Workflows held against a backend: node classes, inputs and their types, param ranges, models."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
from pydantic import BaseModel, ConfigDict

from ..comfy.client import ComfyClient
from ..errors import ComfyUnavailable
from ..workflow_problems import Finding, Problem
from ..workflows import ParamSpec, Workflow, WorkflowFiles, read_workflow
from .nodes import InputDef, NodeDef, fetch_models, fetch_nodes

#: which node input kinds each param type may set
PARAM_KINDS = {
    "integer": {"INT", "FLOAT"},
    "number": {"FLOAT"},
    "string": {"STRING", "COMBO"},
    "boolean": {"BOOLEAN"},
    "image": {"COMBO", "STRING"},
}


class BackendFacts(BaseModel):
    """What one backend has that workflows need: node definitions and model lists."""

    model_config = ConfigDict(frozen=True)

    label: str
    nodes: dict[str, NodeDef]
    models: dict[str, list[str]]


def check_files(files: WorkflowFiles, backend: BackendFacts) -> list[Problem]:
    """What does not fit the backend in a workflow whose files were read (`read_workflow`)."""
    if files.manifest is None or not isinstance(files.graph, dict):
        return []
    checker = _Checker(files, backend)
    found = [*checker.nodes(), *checker.params()]
    return [files.place(f).model_copy(update={"backend": backend.label}) for f in found]


def workflow_files(workflow: Workflow) -> WorkflowFiles:
    """A loaded workflow as files to check, without their text (problems carry no line)."""
    manifest = workflow.manifest
    return WorkflowFiles(
        manifest_path=Path(f"{manifest.name}.toml"),
        manifest=manifest,
        graph_path=Path(manifest.graph),
        graph=workflow.graph,
        workflow=workflow,
    )


async def backend_facts(client: ComfyClient, workflows: Sequence[WorkflowFiles]) -> BackendFacts:
    """Ask the backend for the node classes and model folders these workflows use."""
    classes = {
        str(node.get("class_type"))
        for files in workflows
        if isinstance(files.graph, dict)
        for node in files.graph.values()
        if isinstance(node, dict)
    }
    folders = {
        spec.models
        for files in workflows
        if files.manifest is not None
        for spec in files.manifest.params.values()
        if spec.models
    }
    nodes = await fetch_nodes(client, classes)
    return BackendFacts(label=client.label, nodes=nodes, models=await fetch_models(client, folders))


async def check_workflows(paths: Sequence[Path], urls: Sequence[str]) -> list[Problem]:
    """Every problem of these manifests: read without a backend, then on each backend."""
    workflows = [read_workflow(path) for path in paths]
    problems = [problem for files in workflows for problem in files.problems]
    async with aiohttp.ClientSession() as session:
        for url in urls:
            client = ComfyClient(url, session, request_timeout=30)
            try:
                facts = await backend_facts(client, workflows)
            except ComfyUnavailable as exc:
                problems.append(Problem(file=client.label, message=str(exc), backend=client.label))
                continue
            problems += [p for files in workflows for p in check_files(files, facts)]
    return problems


class _Checker:
    def __init__(self, files: WorkflowFiles, backend: BackendFacts) -> None:
        assert files.manifest is not None
        self.manifest = files.manifest
        self.graph: dict[str, Any] = files.graph
        self.backend = backend
        self.targeted = {t for s in self.manifest.params.values() for t in s.targets}

    def node_def(self, node_id: str) -> NodeDef | None:
        node = self.graph.get(node_id)
        return self.backend.nodes.get(str(node.get("class_type"))) if node else None

    def nodes(self) -> Iterator[Finding]:
        for node_id, node in self.graph.items():
            spec = self.node_def(node_id)
            if spec is None:
                message = f"node {node_id}: class {node.get('class_type')!r} does not exist here"
                yield Finding(file="graph", keys=(node_id, "class_type"), message=message)
                continue
            for name, value in (node.get("inputs") or {}).items():
                keys = (node_id, "inputs", name)
                for message in self._input(node_id, spec, name, value):
                    yield Finding(file="graph", keys=keys, message=message)

    def _input(self, node_id: str, spec: NodeDef, name: str, value: Any) -> Iterator[str]:
        where = f"node {node_id} ({spec.name})"
        one = spec.input(name)
        if one is None:
            if f"{node_id}.{name}" not in self.targeted:  # a param's target says it there
                known = ", ".join(i.name for i in spec.inputs)
                yield f"{where} has no input {name!r} (it has: {known})"
        elif isinstance(value, list):
            yield from self._link(where, one, value)
        elif not one.is_widget:
            yield f"{where} input {name!r} takes a {one.kind} link, not a value"
        elif f"{node_id}.{name}" not in self.targeted:
            yield from _value_problems(where, one, value)

    def _link(self, where: str, spec: InputDef, link: list[Any]) -> Iterator[str]:
        source = self.node_def(str(link[0])) if link else None
        if source is None or len(link) != 2 or not isinstance(link[1], int):
            return  # a missing source node is reported as that node's own problem
        if link[1] >= len(source.outputs):
            count = len(source.outputs)
            yield f"{where} input {spec.name!r} links output {link[1]} of {count} of node {link[0]}"
            return
        kind = source.outputs[link[1]]
        if not _types_fit(kind, spec.kind):
            yield (
                f"{where} input {spec.name!r} takes {spec.kind}, and node {link[0]} "
                f"({source.name}) output {link[1]} is {kind}"
            )

    def params(self) -> Iterator[Finding]:
        for name, param in self.manifest.params.items():
            for target in param.targets:
                node_id, _, input_name = target.partition(".")
                spec = self.node_def(node_id)
                one = spec.input(input_name) if spec else None
                if spec is None or one is None:
                    if spec is not None:
                        message = f"param {name!r}: node {node_id} ({spec.name}) has no input "
                        message += f"{input_name!r}"
                        yield Finding(
                            file="manifest", keys=("params", name, "targets"), message=message
                        )
                    continue
                for key, message in _param_problems(param, one, self.backend):
                    where = f"param {name!r} (→ {target}, {spec.name})"
                    keys = ("params", name, key)
                    yield Finding(file="manifest", keys=keys, message=f"{where}: {message}")


def _types_fit(output: str, wanted: str) -> bool:
    if output == wanted or "*" in (output, wanted):
        return True
    if wanted == "COMBO" and output in ("COMBO", "STRING"):
        return True
    return bool(set(output.split(",")) & set(wanted.split(",")))


def _value_problems(where: str, spec: InputDef, value: Any) -> Iterator[str]:
    """A literal widget value the node would refuse."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if spec.kind in ("INT", "FLOAT") and not number:
        yield f"{where} input {spec.name!r} takes a number, not {value!r}"
    elif spec.kind == "INT" and isinstance(value, float) and not value.is_integer():
        yield f"{where} input {spec.name!r} takes an integer, not {value!r}"
    elif number and not _within(value, spec):
        yield f"{where} input {spec.name!r} = {value!r} is outside {_range(spec)}"
    elif spec.kind == "BOOLEAN" and not isinstance(value, bool):
        yield f"{where} input {spec.name!r} takes true or false, not {value!r}"
    elif spec.kind == "STRING" and not isinstance(value, str):
        yield f"{where} input {spec.name!r} takes a string, not {value!r}"
    elif spec.kind == "COMBO" and not spec.image_upload and value not in (spec.options or []):
        yield f"{where} input {spec.name!r} = {value!r} is not one of {_options(spec)}"


def _param_problems(
    param: ParamSpec, spec: InputDef, facts: BackendFacts
) -> Iterator[tuple[str, str]]:
    if not spec.is_widget:
        yield "targets", f"the input takes a {spec.kind} link: a param sets widget values only"
        return
    if spec.kind not in PARAM_KINDS[param.type]:
        yield "type", f"a {param.type} param cannot set a {spec.kind} input"
        return
    if spec.kind in ("INT", "FLOAT"):
        yield from _range_problems(param, spec)
    elif param.models:
        available = facts.models.get(param.models, [])
        if param.default is not None and param.default not in available:
            listed = ", ".join(available[:10]) or "nothing"
            yield "default", f"model {param.default!r} is not in {param.models} ({listed})"
    elif spec.kind == "COMBO" and param.type == "string":
        options = spec.options or []
        if param.enum is None:
            yield "type", f"any string is accepted, and the input takes one of {_options(spec)}"
        elif any(v not in options for v in param.enum):
            odd = [v for v in param.enum if v not in options]
            yield "enum", f"{odd} are not among the input's options {_options(spec)}"
        if param.default is not None and param.default not in options:
            yield "default", f"default {param.default!r} is not one of {_options(spec)}"


def _range_problems(param: ParamSpec, spec: InputDef) -> Iterator[tuple[str, str]]:
    if param.enum is not None:
        odd = [v for v in param.enum if not _within(v, spec)]
        if odd:
            yield "enum", f"{odd} are outside the input's {_range(spec)}"
    else:
        low, high = param.minimum, param.maximum
        if spec.minimum is not None and (low is None or low < spec.minimum):
            yield "minimum", f"minimum {_num(low)} is below the input's {_range(spec)}"
        if spec.maximum is not None and (high is None or high > spec.maximum):
            yield "maximum", f"maximum {_num(high)} is above the input's {_range(spec)}"
    default = param.default
    number = isinstance(default, int | float) and not isinstance(default, bool)
    if number and not _within(default, spec):
        yield "default", f"default {default!r} is outside the input's {_range(spec)}"


def _within(value: Any, spec: InputDef) -> bool:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False
    low_ok = spec.minimum is None or value >= spec.minimum
    return low_ok and (spec.maximum is None or value <= spec.maximum)


def _range(spec: InputDef) -> str:
    return f"range {_num(spec.minimum)}…{_num(spec.maximum)}"


def _num(value: float | None) -> str:
    if value is None:
        return "(none)"
    return str(int(value)) if float(value).is_integer() else str(value)


def _options(spec: InputDef) -> str:
    options = [str(o) for o in spec.options or []]
    shown = ", ".join(options[:8]) + (f", … ({len(options)} in all)" if len(options) > 8 else "")
    return f"[{shown}]"
