"""POST /prompt validation, reproducing ComfyUI's error types, messages and node_errors layout."""

from __future__ import annotations

import sys
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .nodes import Env, JsonDict, NodeDef, Sections
from .profile import Profile

NodeVerdict = tuple[bool, list[JsonDict], Any]


@dataclass
class Verdict:
    """validate_prompt's answer: the error (if fatal), the outputs to run and per-node errors."""

    error: JsonDict | None
    outputs: list[str] = field(default_factory=list)
    node_errors: JsonDict = field(default_factory=dict)


@dataclass
class _Run:
    prompt: JsonDict
    registry: Mapping[str, NodeDef]
    env: Env
    validated: dict[Any, NodeVerdict] = field(default_factory=dict)
    visiting: list[Any] = field(default_factory=list)  # the path of links being followed
    sections: dict[str, Sections] = field(default_factory=dict)

    @property
    def profile(self) -> Profile:
        return self.env.config.profile

    def inputs_of(self, class_type: str) -> Sections:
        if class_type not in self.sections:
            self.sections[class_type] = self.registry[class_type].inputs(self.env)
        return self.sections[class_type]


def _error(kind: str, message: str, details: str, **extra: Any) -> JsonDict:
    return {"type": kind, "message": message, "details": details, "extra_info": extra}


def type_name(klass: type[BaseException]) -> str:
    if klass.__module__ == "builtins":
        return klass.__qualname__
    return f"{klass.__module__}.{klass.__qualname__}"


def types_match(received: Any, expected: Any) -> bool:
    if received == expected:
        return True
    if not isinstance(received, str) or not isinstance(expected, str):
        return False
    got = {t.strip() for t in received.split(",")}
    want = {t.strip() for t in expected.split(",")}
    return "*" in got or "*" in want or bool(got & want)


def _convert(input_type: Any, val: Any) -> Any:
    if isinstance(val, dict) and "__value__" in val:
        val = val["__value__"]
    converters: dict[str, Any] = {"INT": int, "FLOAT": float, "STRING": str, "BOOLEAN": bool}
    if isinstance(input_type, str) and input_type in converters:
        return converters[input_type](val)
    return val


def _combo_options(input_type: Any, options: JsonDict, profile: Profile) -> list[Any] | None:
    """The allowed values, if this input is a combo the profile checks."""
    if isinstance(input_type, list):
        return input_type
    # V3 io.Combo inputs are typed "COMBO" with their options inside; only newer ComfyUI checks
    # them (and never a remote combo, whose options the browser fetches).
    if input_type == "COMBO" and profile.checks_v3_combos and not options.get("remote_combo"):
        return list(options.get("options", []))
    return None


def _not_in_list(x: str, info: list[Any], val: Any, combo: list[Any], by_repr: bool) -> JsonDict:
    config: list[Any] | None = info
    if len(combo) > 20:
        listed = f"(list of length {len(combo)})"
        config = None
    else:
        listed = str(combo)
    shown = repr(val) if by_repr else f"'{val}'"
    return _error(
        "value_not_in_list",
        "Value not in list",
        f"{x}: {shown} not in {listed}",
        input_name=x,
        input_config=config,
        received_value=val,
    )


def _check_constant(x: str, info: list[Any], val: Any, profile: Profile) -> JsonDict | None:
    input_type, options = info
    if "min" in options and val < options["min"]:
        message = f"Value {val} smaller than min of {options['min']}"
        return _error(
            "value_smaller_than_min",
            message,
            x,
            input_name=x,
            input_config=info,
            received_value=val,
        )
    if "max" in options and val > options["max"]:
        message = f"Value {val} bigger than max of {options['max']}"
        return _error(
            "value_bigger_than_max",
            message,
            x,
            input_name=x,
            input_config=info,
            received_value=val,
        )
    combo = _combo_options(input_type, options, profile)
    if combo is not None and val not in combo:
        return _not_in_list(x, info, val, combo, profile.shows_values_by_repr)
    return None


def _check_link(run: _Run, x: str, info: list[Any], val: list[Any]) -> tuple[JsonDict | None, bool]:
    """Validate one linked input; returns (error for this node, whether the upstream is valid)."""
    if len(val) != 2:
        message = "Bad linked input, must be a length-2 list of [node_id, slot_index]"
        return _error(
            "bad_linked_input", message, x, input_name=x, input_config=info, received_value=val
        ), True
    o_id = val[0]
    # Deliberately unguarded, as in ComfyUI: a missing node or slot raises to the caller.
    o_class_type = run.prompt[o_id]["class_type"]
    received_type = run.registry[o_class_type].outputs[val[1]]
    if not types_match(received_type, info[0]):
        details = f"{x}, received_type({received_type}) mismatch input_type({info[0]})"
        return _error(
            "return_type_mismatch",
            "Return type mismatch between linked nodes",
            details,
            input_name=x,
            input_config=info,
            received_type=received_type,
            linked_node=val,
        ), True
    try:
        return None, _validate_node(run, o_id)[0]
    except Exception as ex:
        typ, _, tb = sys.exc_info()
        assert typ is not None
        reason = _error(
            "exception_during_inner_validation",
            "Exception when validating inner node",
            str(ex),
            input_name=x,
            input_config=info,
            exception_message=str(ex),
            exception_type=type_name(typ),
            traceback=traceback.format_tb(tb),
            linked_node=val,
        )
        run.validated[o_id] = (False, [reason], o_id)
        return None, False


def _declared(sections: Sections) -> list[tuple[str, str, list[Any]]]:
    return [
        (section, name, spec)
        for section in ("required", "optional")
        for name, spec in sections.get(section, {}).items()
    ]


def _validate_node(run: _Run, node_id: Any) -> NodeVerdict:
    if node_id in run.validated:
        return run.validated[node_id]
    if node_id in run.visiting:
        if run.profile.reports_dependency_cycles:
            _mark_cycle(run, node_id)
            return run.validated[node_id]
        return (False, [], node_id)  # 0.3.64: a cycle is invalid, with nothing to report
    run.visiting.append(node_id)
    try:
        verdict = _validate_fresh(run, node_id)
    finally:
        run.visiting.pop()
    earlier = run.validated.get(node_id)
    if earlier is not None:  # a cycle through this node was found below it: keep that error
        joined = earlier[1] + [error for error in verdict[1] if error not in earlier[1]]
        verdict = (earlier[0] and verdict[0], joined, node_id)
    run.validated[node_id] = verdict
    return verdict


def _mark_cycle(run: _Run, node_id: Any) -> None:
    """Newer ComfyUI: every node on the loop gets a dependency_cycle error naming the path."""
    path = [*run.visiting[run.visiting.index(node_id) :], node_id]
    cycle_nodes = list(dict.fromkeys(path))
    details = " -> ".join(f"{nid} ({run.prompt[nid]['class_type']})" for nid in path)
    for nid in cycle_nodes:
        error = _error(
            "dependency_cycle", "Dependency cycle detected", details,
            node_id=nid, cycle_nodes=cycle_nodes,
        )  # fmt: skip
        run.validated[nid] = (False, [error], nid)


def _unset_dynamic(spec: list[Any], inputs: JsonDict, x: str) -> bool:
    """A dynamic combo left out, or set to a key it does not offer: newer ComfyUI drops it
    from the node's inputs before validating, so it is neither missing nor checked."""
    if spec[0] != "COMFY_DYNAMICCOMBO_V3":
        return False
    keys = [option["key"] for option in spec[1].get("options", [])]
    return x not in inputs or inputs[x] not in keys


def _check_value(
    run: _Run, node_def: NodeDef, inputs: JsonDict, x: str, info: list[Any]
) -> JsonDict | None:
    """Convert a constant in place (INT, FLOAT, ...) and check it against its spec."""
    val = inputs[x]
    try:
        val = inputs[x] = _convert(info[0], val)
    except Exception as ex:
        message = f"Failed to convert an input value to a {info[0]} value"
        return _error(
            "invalid_input_type",
            message,
            f"{x}, {val}, {ex}",
            input_name=x,
            input_config=info,
            received_value=val,
            exception_message=str(ex),
        )
    if x in node_def.validate_args:  # VALIDATE_INPUTS takes over for these
        return None
    return _check_constant(x, info, val, run.profile)


def _validate_fresh(run: _Run, node_id: Any) -> NodeVerdict:
    inputs = run.prompt[node_id]["inputs"]
    node_def = run.registry[run.prompt[node_id]["class_type"]]
    errors: list[JsonDict] = []
    valid = True
    for section, x, spec in _declared(run.inputs_of(node_def.name)):
        info = [spec[0], spec[1] if len(spec) > 1 else {}]
        if _unset_dynamic(info, inputs, x):
            continue
        if x not in inputs:
            if section == "required":
                missing = _error(
                    "required_input_missing", "Required input is missing", x, input_name=x
                )
                errors.append(missing)
            continue
        if isinstance(inputs[x], list):
            error, upstream_ok = _check_link(run, x, info, inputs[x])
            valid = valid and upstream_ok
        else:
            error = _check_value(run, node_def, inputs, x, info)
        if error is not None:
            errors.append(error)
    errors.extend(_custom_validation(run, node_def, inputs))
    if errors or not valid:
        return (False, errors, node_id)
    return (True, [], node_id)


def _custom_validation(run: _Run, node_def: NodeDef, inputs: JsonDict) -> list[JsonDict]:
    if node_def.validate is None:
        return []
    given = {x: inputs[x] for x in node_def.validate_args if not isinstance(inputs.get(x), list)}
    if set(given) != set(node_def.validate_args):
        return []
    result = node_def.validate(run.env, given)
    if result is True:
        return []
    errors = []
    for x in given:
        details = x if result is False else f"{x} - {result}"
        errors.append(
            _error(
                "custom_validation_failed",
                "Custom validation failed for node",
                details,
                input_name=x,
            )
        )
    return errors


def _missing_node_type(x: str, node: JsonDict) -> JsonDict:
    """Newer ComfyUI's error for a node without class_type or with an unknown one."""
    class_type = node.get("class_type")
    meta = node.get("_meta") or {}
    if "class_type" not in node:
        title = meta.get("title")
        message = (
            f"Node '{title or f'ID #{x}'}' has no class_type. The workflow may be corrupted "
            "or a custom node is missing."
        )
    else:
        title = meta.get("title", class_type)
        message = f"Node '{title}' not found. The custom node may not be installed."
    return _error(
        "missing_node_type", message, f"Node ID '#{x}'",
        node_id=x, class_type=class_type, node_title=title,
    )  # fmt: skip


def _find_outputs(
    prompt: JsonDict, registry: Mapping[str, NodeDef], partial: list[Any] | None, profile: Profile
) -> tuple[list[str], JsonDict | None]:
    outputs: list[str] = []
    for x in prompt:
        if "class_type" not in prompt[x]:
            if profile.names_missing_node_type:
                return [], _missing_node_type(x, prompt[x])
            message = "Cannot execute because a node is missing the class_type property."
            return [], _error("invalid_prompt", message, f"Node ID '#{x}'")
        class_type = prompt[x]["class_type"]
        node_def = registry.get(class_type)
        if node_def is None:
            if profile.names_missing_node_type:
                return [], _missing_node_type(x, prompt[x])
            message = f"Cannot execute because node {class_type} does not exist."
            return [], _error("invalid_prompt", message, f"Node ID '#{x}'")
        if node_def.output_node and (partial is None or x in partial):
            outputs.append(x)
    if not outputs:
        return [], _error("prompt_no_outputs", "Prompt has no outputs", "")
    return outputs, None


def validate_prompt(
    prompt: JsonDict, registry: Mapping[str, NodeDef], env: Env, partial: list[Any] | None
) -> Verdict:
    """Validate (and, like ComfyUI, convert constants of) `prompt` in place."""
    outputs, error = _find_outputs(prompt, registry, partial, env.config.profile)
    if error is not None:
        return Verdict(error)
    run = _Run(prompt, registry, env)
    good: list[str] = []
    failed: list[tuple[str, list[JsonDict]]] = []
    node_errors: JsonDict = {}
    for o in outputs:
        try:
            valid, reasons, _ = _validate_node(run, o)
        except Exception as ex:
            typ, _, tb = sys.exc_info()
            assert typ is not None
            valid = False
            reasons = [
                _error(
                    "exception_during_validation",
                    "Exception when validating node",
                    str(ex),
                    exception_type=type_name(typ),
                    traceback=traceback.format_tb(tb),
                )
            ]
            run.validated[o] = (False, reasons, o)
        if valid:
            good.append(o)
            continue
        failed.append((o, reasons))
        _collect_node_errors(run, o, node_errors)
    if good:
        return Verdict(None, good, node_errors)
    details = "\n".join(f"{e['message']}: {e['details']}" for _, errs in failed for e in errs)
    error = _error("prompt_outputs_failed_validation", "Prompt outputs failed validation", details)
    return Verdict(error, [], node_errors)


def _collect_node_errors(run: _Run, output: str, node_errors: JsonDict) -> None:
    # Downstream nodes of a failure are invalid with no reasons; ComfyUI leaves those out.
    for node_id, (valid, reasons, _) in run.validated.items():
        if valid or not reasons:
            continue
        if node_id not in node_errors:
            node_errors[node_id] = {
                "errors": reasons,
                "dependent_outputs": [],
                "class_type": run.prompt[node_id]["class_type"],
            }
        node_errors[node_id]["dependent_outputs"].append(output)
