"""A manifest written as TOML, in the layout of the shipped ones (a `[params.NAME]` table each)."""

from __future__ import annotations

import json
import math
from typing import Any

from ..workflows import Manifest, ParamSpec

#: the order a param's keys are written in
PARAM_KEYS = tuple(ParamSpec.model_fields)


def manifest_toml(manifest: Manifest, comments: list[str] | None = None) -> str:
    """TOML text that loads back (tomllib) into an equal manifest."""
    lines = [f"# {line}".rstrip() for line in comments or []]
    values = manifest.model_dump(exclude={"params"}, exclude_defaults=True)
    for key in ("name", "title", "description", "graph", "outputs", "time_limit", "reuse"):
        if key in values or key in ("name", "title", "graph"):
            lines.append(f"{key} = {toml_value(getattr(manifest, key))}")
    for name, spec in manifest.params.items():
        lines += ["", f"[params.{_key(name)}]"]
        fields = spec.model_dump(exclude_defaults=True)
        fields["type"] = spec.type
        for bound in ("minimum", "maximum"):
            if spec.type == "integer" and isinstance(fields.get(bound), float):
                fields[bound] = int(fields[bound])  # exact: drafted bounds stay within 2**53
        lines += [f"{key} = {toml_value(fields[key])}" for key in PARAM_KEYS if key in fields]
    return "\n".join(lines) + "\n"


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        inner = ", ".join(f"{_key(str(k))} = {toml_value(v)}" for k, v in value.items())
        return "{ " + inner + " }" if inner else "{}"
    raise TypeError(f"no TOML form for {value!r}")


def _key(name: str) -> str:
    bare = name.replace("_", "").replace("-", "").isalnum() and name.isascii()
    return name if bare else json.dumps(name)
