"""The workflow catalogue: manifests and graphs checked, params validated, graphs rendered."""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import random
import re
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, model_validator

from .errors import InvalidGraph, InvalidParams, NodeNotAllowed, PathNotAllowed, WorkflowNotFound
from .workflow_problems import Finding, Problem, json_line, toml_line

Graph = dict[str, dict[str, Any]]

_PY_TYPES: Mapping[str, type] = {
    "string": str,
    "integer": int,
    "number": float,
    "boolean": bool,
    "image": str,
}
#: what an `image` param holds: the id `POST /api/uploads` returned
UPLOAD_ID_PATTERN = r"^[0-9a-f]{32}$"
#: the input every core save node (images, animations, video, audio, 3D) takes its file name
#: from; set per job so outputs never collide
FILENAME_PREFIX = "filename_prefix"


class WorkflowError(ValueError):
    """A workflow file that cannot be served; names the file and the problem."""


class ParamSpec(BaseModel):
    """One typed parameter of a workflow and where its value goes in the graph."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["string", "integer", "number", "boolean", "image"]
    title: str | None = Field(None, description="the label forms show; default: the name")
    description: str = ""
    required: bool = False
    default: Any = None
    random: bool = Field(False, description="integer only: pick a random value when absent")
    minimum: float | None = None
    maximum: float | None = None
    multiple_of: int | None = None
    min_length: int | None = None
    max_length: int | None = None
    enum: list[Any] | None = None
    presets: dict[str, dict[str, Any]] = {}
    models: str | None = Field(
        None, description="a ComfyUI model folder (`checkpoints`, `loras`…) the value must name"
    )
    within: str | None = Field(
        None,
        pattern=r"^[a-z][a-z0-9_]*\.(width|height)$",
        description='a position inside an image param: "image.width" means below its width',
    )
    targets: list[str] = Field([], description='"node_id.input_name" entries in the graph')

    @model_validator(mode="after")
    def _consistent(self) -> ParamSpec:
        if self.random and self.type != "integer":
            raise ValueError("random applies to integer params only")
        if self.required and self.default is not None:
            raise ValueError("a required param cannot have a default")
        if self.presets and not self.enum:
            raise ValueError("presets need an enum")
        if self.within and self.type not in ("integer", "number"):
            raise ValueError("within applies to integer and number params only")
        return self

    def field(self) -> tuple[Any, Any]:
        """The pydantic field (annotation, FieldInfo) that validates this param."""
        annotation: Any = _PY_TYPES[self.type]
        if self.enum is not None:
            annotation = Literal[tuple(self.enum)]
        if not self.required and self.default is None:
            annotation = annotation | None
        bound = int if self.type == "integer" else float
        info = Field(
            ... if self.required else self.default,
            title=self.title,
            description=self.description or None,
            ge=None if self.minimum is None else bound(self.minimum),
            le=None if self.maximum is None else bound(self.maximum),
            multiple_of=self.multiple_of,
            min_length=self.min_length,
            max_length=self.max_length,
            strict=True if self.type != "number" and self.enum is None else None,
            pattern=UPLOAD_ID_PATTERN if self.type == "image" else None,
            json_schema_extra=self._schema_extra() or None,
        )
        return annotation, info

    def _schema_extra(self) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        if self.type == "image":
            extra["format"] = "formy-upload"
        if self.models:
            extra["x-formy-models"] = self.models
        if self.within:
            extra["x-formy-within"] = self.within
        return extra


class Manifest(BaseModel):
    """A workflow's manifest file (`workflows/<name>.toml`)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")
    title: str
    description: str = ""
    graph: str
    outputs: list[str] = Field(
        [], description="the output nodes whose files are the job's; none: every output node"
    )
    time_limit: float = Field(600, gt=0)
    reuse: bool = Field(
        False, description="jobs reuse identical finished (or running) ones unless they say not"
    )
    params: dict[str, ParamSpec]


class Workflow:
    """A loaded workflow: its manifest, its API-format graph and its params model."""

    def __init__(self, manifest: Manifest, graph: Graph) -> None:
        self.manifest = manifest
        self.graph = graph
        self.params_model: type[BaseModel] = create_model(  # type: ignore[call-overload]
            f"{manifest.name}_params",
            __config__=ConfigDict(extra="forbid"),
            **{name: spec.field() for name, spec in manifest.params.items()},
        )

    @property
    def name(self) -> str:
        return self.manifest.name

    def schema(self) -> dict[str, Any]:
        """JSON Schema of the params, generated from the model that validates them."""
        schema = self.params_model.model_json_schema()
        schema["title"] = self.manifest.title
        return schema

    @functools.cached_property
    def digest(self) -> str:
        """SHA-256 of the manifest and graph as loaded: it changes with either."""
        text = self.manifest.model_dump_json() + json.dumps(self.graph, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()

    @property
    def version(self) -> str:
        """The digest, short: what `GET /api/workflows` shows."""
        return self.digest[:12]

    def describe(self) -> dict[str, Any]:
        m = self.manifest
        return {
            "name": m.name,
            "version": self.version,
            "title": m.title,
            "description": m.description,
            "time_limit": m.time_limit,
            "params": self.schema(),
        }

    def resolve(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        """Validate submitted params; fill defaults, random values and presets.

        The result is what the job records and what `render` takes.
        """
        try:
            params = self.params_model.model_validate(raw).model_dump()
        except ValidationError as exc:
            raise InvalidParams(
                f"invalid params for workflow {self.name!r}: {_summary(exc)}",
                details=[_error_entry(e) for e in exc.errors()],
            ) from exc
        for name, spec in self.manifest.params.items():
            if spec.random and params.get(name) is None:
                params[name] = random.randint(
                    int(spec.minimum or 0), int(spec.maximum or 2**32 - 1)
                )
            chosen = params.get(name)
            if spec.presets and chosen is not None:
                for target, value in spec.presets[str(chosen)].items():
                    if target not in raw:
                        params[target] = value
        return params

    def image_params(self) -> list[str]:
        return [name for name, spec in self.manifest.params.items() if spec.type == "image"]

    def check_within(self, params: Mapping[str, Any], sizes: Mapping[str, tuple[int, int]]) -> None:
        """Positions inside the images they refer to (`within`), given each image param's
        (width, height); InvalidParams naming every param that falls outside."""
        problems = []
        for name, spec in self.manifest.params.items():
            image, _, side = (spec.within or "").partition(".")
            value = params.get(name)
            if image not in sizes or value is None:
                continue
            bound = sizes[image][0 if side == "width" else 1]
            if not value < bound:
                problems.append(
                    {
                        "param": name,
                        "type": "outside_image",
                        "message": f"{value:g} is outside the {image} ({bound} pixels "
                        f"{'wide' if side == 'width' else 'high'}): it must be below {bound}",
                    }
                )
        if problems:
            summary = "; ".join(f"{p['param']}: {p['message']}" for p in problems)
            raise InvalidParams(
                f"invalid params for workflow {self.name!r}: {summary}", details=problems
            )

    def model_params(self) -> dict[str, str]:
        """param name → the ComfyUI model folder its value must be in."""
        return {name: spec.models for name, spec in self.manifest.params.items() if spec.models}

    def render(
        self,
        params: Mapping[str, Any],
        *,
        output_prefix: str,
        inputs: Mapping[str, str] | None = None,
    ) -> Graph:
        """The graph to queue: params in place (image params as the file names in `inputs`,
        as uploaded to ComfyUI), save nodes writing under `output_prefix`."""
        graph = copy.deepcopy(self.graph)
        for name, spec in self.manifest.params.items():
            value = (inputs or {}).get(name) if spec.type == "image" else params.get(name)
            if value is None:
                continue
            for target in spec.targets:
                node_id, _, input_name = target.partition(".")
                graph[node_id]["inputs"][input_name] = value
        for node in graph.values():
            if isinstance(node["inputs"].get(FILENAME_PREFIX), str):
                node["inputs"][FILENAME_PREFIX] = output_prefix
        return graph


class Catalogue(Mapping[str, Workflow]):
    """Every workflow in a directory, checked when loaded."""

    def __init__(self, workflows: Mapping[str, Workflow]) -> None:
        self._workflows = dict(sorted(workflows.items()))

    @classmethod
    def load(cls, directory: Path) -> Catalogue:
        manifests = sorted(directory.glob("*.toml"))
        if not manifests:
            raise WorkflowError(f"{directory}: no workflow manifests (*.toml) found")
        workflows: dict[str, Workflow] = {}
        for path in manifests:
            workflow = load_workflow(path)
            if workflow.name in workflows:
                raise WorkflowError(f"{path}: workflow name {workflow.name!r} is used twice")
            workflows[workflow.name] = workflow
        return cls(workflows)

    def replace(self, other: Catalogue) -> None:
        """Serve `other`'s workflows from now on (see catalogue_watch); a Workflow already
        taken from this catalogue is not changed."""
        self._workflows = dict(other._workflows)

    def get_or_raise(self, name: str) -> Workflow:
        try:
            return self._workflows[name]
        except KeyError:
            known = ", ".join(self._workflows)
            raise WorkflowNotFound(f"no workflow named {name!r}; known: {known}") from None

    def __getitem__(self, name: str) -> Workflow:
        return self._workflows[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._workflows)

    def __len__(self) -> int:
        return len(self._workflows)


def load_workflow(path: Path) -> Workflow:
    """Load one manifest and its graph; raise WorkflowError naming the file, line and problem."""
    files = read_workflow(path)
    if files.workflow is None:
        raise WorkflowError("; ".join(str(p) for p in files.problems))
    return files.workflow


class WorkflowFiles(BaseModel):
    """A manifest and its graph as read from disk, and what is wrong with them (no backend
    asked): what `Catalogue.load` refuses, and where `formy-async workflow check` starts."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    manifest_path: Path
    manifest_text: str = ""
    manifest: Manifest | None = None
    graph_path: Path | None = None
    graph_text: str = ""
    graph: Any = None
    problems: list[Problem] = []
    workflow: Workflow | None = None

    def place(self, finding: Finding) -> Problem:
        """The finding at its file and line."""
        if finding.file == "graph" and self.graph_path is not None:
            line = json_line(self.graph_text, finding.keys)
            return Problem(file=str(self.graph_path), line=line, message=finding.message)
        line = toml_line(self.manifest_text, finding.keys)
        return Problem(file=str(self.manifest_path), line=line, message=finding.message)


def read_workflow(path: Path) -> WorkflowFiles:
    """Read and check a manifest and its graph; every problem found is in `problems`, and
    `workflow` is set only when there is none."""
    files = WorkflowFiles(manifest_path=path)
    try:
        files.manifest_text = path.read_text()
        files.manifest = Manifest.model_validate(tomllib.loads(files.manifest_text))
    except ValidationError as exc:
        files.problems = [files.place(_manifest_finding(e)) for e in exc.errors()[:5]]
        return files
    except (OSError, tomllib.TOMLDecodeError) as exc:
        line = re.search(r"at line (\d+)", str(exc))
        files.problems = [
            Problem(file=str(path), line=int(line[1]) if line else None, message=str(exc))
        ]
        return files
    files.graph_path = path.parent / files.manifest.graph
    try:
        files.graph_text = files.graph_path.read_text()
        files.graph = json.loads(files.graph_text)
    except json.JSONDecodeError as exc:
        files.problems = [Problem(file=str(files.graph_path), line=exc.lineno, message=exc.msg)]
        return files
    except OSError as exc:
        files.problems = [Problem(file=str(files.graph_path), message=str(exc))]
        return files
    files.problems = [files.place(f) for f in graph_findings(files.manifest, files.graph)]
    if not files.problems:
        _build(files, files.manifest)
    return files


def _build(files: WorkflowFiles, manifest: Manifest) -> None:
    try:
        workflow = Workflow(manifest, files.graph)
        workflow.resolve({n: _example(s) for n, s in manifest.params.items() if s.required})
    except (InvalidParams, TypeError, ValueError) as exc:
        message = f"params do not validate: {exc}"
        files.problems = [Problem(file=str(files.manifest_path), message=message)]
        return
    files.workflow = workflow


def _manifest_finding(error: Any) -> Finding:
    keys = tuple(str(p) for p in error["loc"])
    where = ".".join(keys)
    return Finding(file="manifest", keys=keys, message=f"{where}: {error['msg']}")


def graph_findings(manifest: Manifest, graph: Any) -> list[Finding]:
    """Everything that keeps `graph` from serving `manifest`, without asking a backend."""
    if not isinstance(graph, dict) or not graph:
        message = "the graph must be a non-empty API-format object {node_id: node}"
        return [Finding(file="graph", message=message)]
    found = []
    for node_id, node in graph.items():
        if not isinstance(node, dict) or "class_type" not in node or "inputs" not in node:
            message = f"node {node_id!r} needs class_type and inputs (is this the API format?)"
            found.append(Finding(file="graph", keys=(node_id,), message=message))
    if found:
        return found
    for node_id in manifest.outputs:
        if node_id not in graph:
            message = f"output node {node_id!r} is not in the graph"
            found.append(Finding(file="manifest", keys=("outputs",), message=message))
    for name, spec in manifest.params.items():
        found += [
            Finding(file="manifest", keys=("params", name, key), message=f"param {name!r}: {m}")
            for key, m in _param_problems(manifest, graph, spec)
        ]
    return found


def _param_problems(manifest: Manifest, graph: Graph, spec: ParamSpec) -> Iterator[tuple[str, str]]:
    for target in spec.targets:
        node_id, dot, input_name = target.partition(".")
        if not dot or node_id not in graph:
            yield "targets", f"target {target!r} names no node of the graph"
        elif input_name not in graph[node_id]["inputs"]:
            yield "targets", f"node {node_id!r} has no input {input_name!r}"
    for preset in spec.presets.values():
        unknown = set(preset) - set(manifest.params)
        if unknown:
            yield "presets", f"presets set unknown params {sorted(unknown)}"
    if spec.enum and spec.presets and set(spec.presets) != {str(v) for v in spec.enum}:
        yield "presets", "presets must cover exactly the enum values"
    image = (spec.within or "").partition(".")[0]
    if image and getattr(manifest.params.get(image), "type", None) != "image":
        yield "within", f"within names {image!r}, which is not an image param"


def _example(spec: ParamSpec) -> Any:
    if spec.enum:
        return spec.enum[0]
    return {
        "string": "x" * max(1, spec.min_length or 1),
        "integer": int(spec.minimum or 0),
        "number": float(spec.minimum or 0),
        "boolean": True,
        "image": "0" * 32,
    }[spec.type]


def _error_entry(error: Any) -> dict[str, Any]:
    return {
        "param": ".".join(str(p) for p in error["loc"]) or None,
        "type": error["type"],
        "message": error["msg"],
    }


def _summary(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors()[:5]:
        where = ".".join(str(p) for p in error["loc"])
        parts.append(f"{where}: {error['msg']}" if where else error["msg"])
    return "; ".join(parts)


#: core node types that produce outputs (a raw graph needs one); custom ones are let through
#: when they follow ComfyUI's naming (SaveX, PreviewX, VHS_VideoCombine)
SAVE_NODE_TYPES = frozenset(
    {
        "SaveImage",
        "PreviewImage",
        "SaveAnimatedWEBP",
        "SaveAnimatedPNG",
        "SaveVideo",
        "SaveWEBM",
        "SaveAudio",
        "SaveAudioMP3",
        "SaveAudioOpus",
        "PreviewAny",
        "SaveGLB",
        "VHS_VideoCombine",
    }
)


def is_output_node(class_type: str) -> bool:
    return class_type in SAVE_NODE_TYPES or class_type.startswith(("Save", "Preview"))


_PATH_ESCAPE = ("..", "/", "\\")


def check_raw_graph(graph: Mapping[str, Any], allowed: list[str]) -> None:
    """A raw graph may use only allowed node types and name no file outside ComfyUI's folders."""
    refused = []
    for node_id, node in graph.items():
        class_type = node.get("class_type") if isinstance(node, Mapping) else None
        if not isinstance(class_type, str) or not isinstance(node.get("inputs"), Mapping):
            raise InvalidGraph(f"node {node_id!r} needs class_type and inputs")
        if class_type not in allowed:
            refused.append(f"{node_id} ({class_type})")
        for name, value in node["inputs"].items():
            if isinstance(value, str) and _escapes(value):
                raise PathNotAllowed(
                    f"node {node_id} input {name!r}: file paths may not leave ComfyUI's folders"
                )
    if refused:
        raise NodeNotAllowed(
            f"node types not allowed: {', '.join(refused)}", details={"allowed": sorted(allowed)}
        )
    if not any(is_output_node(n["class_type"]) for n in graph.values()):
        raise InvalidGraph(
            "the graph has no output node (SaveImage, SaveVideo…): it would produce nothing"
        )


def _escapes(value: str) -> bool:
    parts = value.replace("\\", "/").split("/")
    return value.startswith(_PATH_ESCAPE) or ".." in parts or ":" in value[:3]


def raw_workflow(graph: Graph, time_limit: float) -> Workflow:
    """A workflow around a raw graph: no params, every output node's files are the job's."""
    outputs: list[str] = []
    manifest = Manifest(
        name="raw", title="Raw graph", graph="", outputs=outputs, time_limit=time_limit, params={}
    )
    return Workflow(manifest, graph)
