"""POST /prompt validation, reproducing ComfyUI's error types, messages and node_errors layout."""

from __future__ import annotations

import sys
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .nodes import Env, JsonDict, NodeDef, Sections

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
    visiting: set[Any] = field(default_factory=set)
    sections: dict[str, Sections] = field(default_factory=dict)

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


def _check_constant(x: str, info: list[Any], val: Any) -> JsonDict | None:
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
    if isinstance(input_type, list) and val not in input_type:
        config: list[Any] | None = info
        if len(input_type) > 20:
            listed = f"(list of length {len(input_type)})"
            config = None
        else:
            listed = str(input_type)
        return _error(
            "value_not_in_list",
            "Value not in list",
            f"{x}: '{val}' not in {listed}",
            input_name=x,
            input_config=config,
            received_value=val,
        )
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
        return (False, [], node_id)  # a cycle: invalid, with nothing to report
    run.visiting.add(node_id)
    try:
        verdict = _validate_fresh(run, node_id)
    finally:
        run.visiting.discard(node_id)
    run.validated[node_id] = verdict
    return verdict


def _validate_fresh(run: _Run, node_id: Any) -> NodeVerdict:
    inputs = run.prompt[node_id]["inputs"]
    node_def = run.registry[run.prompt[node_id]["class_type"]]
    errors: list[JsonDict] = []
    valid = True
    for section, x, spec in _declared(run.inputs_of(node_def.name)):
        info = [spec[0], spec[1] if len(spec) > 1 else {}]
        if x not in inputs:
            if section == "required":
                missing = _error(
                    "required_input_missing", "Required input is missing", x, input_name=x
                )
                errors.append(missing)
            continue
        val = inputs[x]
        if isinstance(val, list):
            error, upstream_ok = _check_link(run, x, info, val)
            valid = valid and upstream_ok
        else:
            try:
                val = inputs[x] = _convert(info[0], val)
            except Exception as ex:
                message = f"Failed to convert an input value to a {info[0]} value"
                errors.append(
                    _error(
                        "invalid_input_type",
                        message,
                        f"{x}, {val}, {ex}",
                        input_name=x,
                        input_config=info,
                        received_value=val,
                        exception_message=str(ex),
                    )
                )
                continue
            error = None if x in node_def.validate_args else _check_constant(x, info, val)
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


def _find_outputs(
    prompt: JsonDict, registry: Mapping[str, NodeDef], partial: list[Any] | None
) -> tuple[list[str], JsonDict | None]:
    outputs: list[str] = []
    for x in prompt:
        if "class_type" not in prompt[x]:
            message = "Cannot execute because a node is missing the class_type property."
            return [], _error("invalid_prompt", message, f"Node ID '#{x}'")
        class_type = prompt[x]["class_type"]
        node_def = registry.get(class_type)
        if node_def is None:
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
    outputs, error = _find_outputs(prompt, registry, partial)
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
