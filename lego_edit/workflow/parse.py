"""Text -> Workflow, tolerant of the published Builder's habits and nothing more.

Accepted: reasoning before the JSON (free text, ``<think>...</think>``, a ```json fence, ``<answer>``
tags), trailing commas, full-width commas/colons between fields (the published prompt has one), and a
top-level ``result`` outside ``pipeline``. Rejected with a ``WorkflowParseError`` that says where:
single-quoted strings, comments, NaN/Infinity, duplicate keys, unknown fields, malformed references.
"""

from __future__ import annotations

import json
import math
import re
import reprlib

from .errors import Issue, WorkflowParseError
from .structure import REF_LIKE_RE, Ref, Step, Workflow
from .values import is_number

MAX_TEXT_CHARS = 200_000
MAX_NESTING = 32
MAX_INT_DIGITS = 100
STEP_FIELDS = ("step", "model", "input", "output")
TOP_FIELDS = ("process", "pipeline", "result")
_FULLWIDTH = {"\uff0c": ",", "\uff1a": ":"}
_THINK_RE = re.compile(r"<think>(.*?)</think>", re.DOTALL)
_FENCE_RE = re.compile(r"```(?:json|json5)?\s*\n(.*?)```", re.DOTALL)
_REPR = reprlib.Repr()  # for values quoted in messages: bounded depth and length (a dict source may nest deeply)
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother = 3, 80, 80


def _line_col(text: str, pos: int) -> tuple[int, int]:
    line = text.count("\n", 0, pos) + 1
    return line, pos - (text.rfind("\n", 0, pos) + 1) + 1


def split_reasoning(text: str) -> tuple[str, str]:
    """Split a Builder answer into (reasoning, text that should hold the JSON object)."""
    reasoning_parts = []
    if "</think>" in text:
        head, _, body = text.rpartition("</think>")
        reasoning_parts = [m.strip() for m in _THINK_RE.findall(head + "</think>")]
        if not reasoning_parts:  # "</think>" without an opening tag: everything before it is reasoning
            reasoning_parts = [head.replace("<think>", "").strip()]
    elif "<think>" in text:
        raise WorkflowParseError(Issue("'<think>' is never closed with '</think>'", code="syntax"))
    else:
        body = text
    body = body.replace("<answer>", "").replace("</answer>", "")
    fence = _FENCE_RE.search(body)
    if fence:
        before = body[: fence.start()].strip()
        if before:
            reasoning_parts.append(before)
        return "\n".join(p for p in reasoning_parts if p), fence.group(1)
    start = body.find("{")
    if start > 0 and body[:start].strip():
        reasoning_parts.append(body[:start].strip())
    return "\n".join(p for p in reasoning_parts if p), body[start:] if start >= 0 else body


def normalise_json(text: str) -> str:
    """Cut out the first JSON object and repair the accepted slips, scanning strings correctly.

    Outside string literals: full-width commas/colons become ASCII, trailing commas are dropped.
    Raises WorkflowParseError for single quotes, comments, nesting deeper than MAX_NESTING, or an
    object that is never closed.
    """
    start = text.find("{")
    if start < 0:
        raise WorkflowParseError(Issue("no JSON object found in the answer", code="syntax"))
    out: list[str] = []
    depth = 0
    in_str = False
    escape = False
    i = start
    n = len(text)
    while i < n:
        ch = text[i]
        if in_str:
            out.append(ch)
            if escape:
                escape = False
            elif ch == "\\":
                escape = True
            elif ch == '"':
                in_str = False
            i += 1
            continue
        ch = _FULLWIDTH.get(ch, ch)
        if ch == '"':
            in_str = True
        elif ch == "'":
            line, col = _line_col(text, i)
            raise WorkflowParseError(
                Issue(
                    f"single quotes are not accepted (line {line}, column {col}); JSON strings use double quotes",
                    code="syntax",
                )
            )
        elif ch == "/" and i + 1 < n and text[i + 1] in "/*":
            line, col = _line_col(text, i)
            raise WorkflowParseError(Issue(f"comments are not accepted (line {line}, column {col})", code="syntax"))
        elif ch in "{[":
            depth += 1
            if depth > MAX_NESTING:
                raise WorkflowParseError(Issue(f"JSON nested deeper than {MAX_NESTING} levels", code="syntax"))
        elif ch in "}]":
            depth -= 1
        elif ch == ",":
            j = i + 1
            while j < n and text[j] in " \t\r\n":
                j += 1
            if j < n and text[j] in "}]":  # trailing comma: drop it
                i += 1
                continue
        out.append(ch)
        i += 1
        if depth == 0:
            return "".join(out)
    line, col = _line_col(text, start)
    raise WorkflowParseError(
        Issue(f"the JSON object that starts at line {line}, column {col} is never closed", code="syntax")
    )


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict:
    obj: dict = {}
    for k, v in pairs:
        if k in obj:
            raise WorkflowParseError(Issue(f"key {k!r} is given twice in one object", code="syntax"))
        obj[k] = v
    return obj


def _reject_constant(name: str) -> float:
    raise WorkflowParseError(Issue(f"{name} is not a valid JSON number", code="syntax"))


def _parse_int(digits: str) -> int:
    if len(digits) > MAX_INT_DIGITS:  # Python refuses to convert more than 4300 digits; no workflow needs 100
        raise WorkflowParseError(
            Issue(
                f"the integer {digits[:12]}... has {len(digits)} digits, too many for a workflow value", code="syntax"
            )
        )
    return int(digits)


def loads(text: str) -> object:
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant, parse_int=_parse_int)
    except json.JSONDecodeError as e:
        raise WorkflowParseError(
            Issue(f"invalid JSON: {e.msg} (line {e.lineno}, column {e.colno} of the JSON object)", code="syntax")
        ) from None
    except RecursionError:
        raise WorkflowParseError(Issue("JSON nested too deeply", code="syntax")) from None


def _parse_input_value(value: object, where: str, step: int | None, issues: list[Issue]):
    if value is None:
        return None
    if isinstance(value, str):
        ref = Ref.parse(value)
        if ref is not None:
            return ref
        if REF_LIKE_RE.match(value):
            issues.append(
                Issue(
                    f"{value!r} is not a valid reference (use init[image], init[mask] or stepN[key])",
                    step,
                    where,
                    "bad_reference",
                )
            )
            return None
        return value
    if is_number(value):
        try:
            number = float(value)
        except OverflowError:  # an integer beyond the float range
            number = math.inf
        if not math.isfinite(number):
            issues.append(Issue(f"{number!r} is not a finite number", step, where, "bad_value"))
            return None
        return number
    issues.append(
        Issue(
            f"a {type(value).__name__} is not a valid value (expected a reference, a string, a number or null)",
            step,
            where,
            "bad_value",
        )
    )
    return None


def parse_result(value: object, issues: list[Issue]) -> list[Ref]:
    """Read ``"[step2[image], step3[image]]"``, ``"step2[image]"`` or a list of such strings."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("[") and text.endswith("]") and not Ref.parse(text):
            text = text[1:-1]
        items = [t.strip().strip("'\"") for t in text.split(",")] if text.strip() else []
    elif isinstance(value, list):
        items = value
    else:
        issues.append(
            Issue(f"result must be a string or a list, got {type(value).__name__}", None, "result", "bad_result")
        )
        return []
    refs: list[Ref] = []
    for item in items:
        ref = Ref.parse(item) if isinstance(item, str) else None
        if ref is None:
            issues.append(Issue(f"{_REPR.repr(item)} in the result is not a reference", None, "result", "bad_result"))
        else:
            refs.append(ref)
    if not items:
        issues.append(Issue("the result is empty", None, "result", "empty_result"))
    return refs


def _parse_step(item: dict, position: int, issues: list[Issue]) -> Step | None:
    raw_number = item.get("step")
    number: int | None = None
    if isinstance(raw_number, int) and not isinstance(raw_number, bool):
        number = raw_number
    elif isinstance(raw_number, str) and re.fullmatch(r"\s*[0-9]{1,9}\s*", raw_number):
        number = int(raw_number.strip())
    if number is None or number < 1:
        issues.append(
            Issue(
                f"pipeline item {position + 1}: 'step' must be a positive integer, got {_REPR.repr(raw_number)}",
                None,
                "step",
                "bad_step",
            )
        )
        number = None
    for key in item:
        if key not in STEP_FIELDS:
            issues.append(
                Issue(f"unknown field {key!r} (a step has {', '.join(STEP_FIELDS)})", number, str(key), "unknown_field")
            )
    brick = item.get("model")
    if not isinstance(brick, str) or not brick.strip():
        issues.append(Issue(f"'model' must name a brick, got {_REPR.repr(brick)}", number, "model", "bad_model"))
        brick = ""
    inputs_raw = item.get("input")
    outputs_raw = item.get("output")
    inputs: dict = {}
    outputs: dict = {}
    if not isinstance(inputs_raw, dict):
        issues.append(Issue("'input' must be an object", number, "input", "bad_input"))
    else:
        for k, v in inputs_raw.items():
            inputs[k] = _parse_input_value(v, f"input.{k}", number, issues)
    if not isinstance(outputs_raw, dict):
        issues.append(Issue("'output' must be an object", number, "output", "bad_output"))
    else:
        for k, v in outputs_raw.items():
            if v is None:
                outputs[k] = None
                continue
            ref = Ref.parse(v) if isinstance(v, str) else None
            if ref is None or ref.step is None:
                issues.append(
                    Issue(
                        f"{_REPR.repr(v)} must name a place to store the output, like 'step{number or 'N'}[{k}]'",
                        number,
                        f"output.{k}",
                        "bad_output",
                    )
                )
            elif number is not None and ref.step != number:
                issues.append(
                    Issue(
                        f"{v!r} stores the output under step {ref.step}; step {number} may only "
                        f"write step{number}[...]",
                        number,
                        f"output.{k}",
                        "bad_output",
                    )
                )
            else:
                outputs[k] = ref
    if number is None:
        return None
    return Step(number=number, brick=brick.strip(), inputs=inputs, outputs=outputs)


def workflow_from_obj(obj: object, reasoning: str = "") -> Workflow:
    """Build a Workflow from already-decoded JSON, collecting every structural problem."""
    issues: list[Issue] = []
    if not isinstance(obj, dict):
        raise WorkflowParseError(Issue(f"a workflow is a JSON object, got {type(obj).__name__}", code="structure"))
    for key in obj:
        if key not in TOP_FIELDS:
            issues.append(
                Issue(
                    f"unknown top-level field {key!r} (expected {', '.join(TOP_FIELDS)})",
                    None,
                    str(key),
                    "unknown_field",
                )
            )
    process = obj.get("process", "")
    if not isinstance(process, str):
        issues.append(Issue("'process' must be a string", None, "process", "bad_process"))
        process = ""
    pipeline = obj.get("pipeline")
    if not isinstance(pipeline, list):
        issues.append(Issue("'pipeline' must be a list of steps", None, "pipeline", "structure"))
        raise WorkflowParseError(issues)
    steps: list[Step] = []
    result_value: object = None
    result_seen = False
    if "result" in obj:  # a published slip: the result outside the pipeline
        result_value, result_seen = obj["result"], True
    for position, item in enumerate(pipeline):
        if not isinstance(item, dict):
            issues.append(
                Issue(
                    f"pipeline item {position + 1} is a {type(item).__name__}, not an object",
                    None,
                    "pipeline",
                    "structure",
                )
            )
            continue
        if "step" not in item and "result" in item:
            if result_seen:
                issues.append(Issue("the result is given more than once", None, "result", "bad_result"))
            extra = [k for k in item if k != "result"]
            if extra:
                issues.append(Issue(f"the result item has unknown fields {extra}", None, "result", "unknown_field"))
            if position != len(pipeline) - 1:
                issues.append(Issue("the result must be the last pipeline item", None, "result", "bad_result"))
            result_value, result_seen = item["result"], True
            continue
        step = _parse_step(item, position, issues)
        if step is not None:
            steps.append(step)
    result: list[Ref] = []
    if not result_seen:
        issues.append(Issue("the workflow has no result", None, "result", "empty_result"))
    else:
        result = parse_result(result_value, issues)
    if issues:
        raise WorkflowParseError(issues)
    return Workflow(process=process, steps=steps, result=result, reasoning=reasoning)


def parse_workflow(source: str | bytes | dict) -> Workflow:
    """Parse a Builder answer (reasoning + JSON) or an already-decoded object into a Workflow.

    Raises WorkflowParseError (a WorkflowError) and nothing else for any input.
    """
    if isinstance(source, dict):
        return workflow_from_obj(source)
    if isinstance(source, bytes):
        try:
            source = source.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise WorkflowParseError(
                Issue(f"the workflow is not UTF-8 text ({e.reason} at byte {e.start})", code="syntax")
            ) from None
    if not isinstance(source, str):
        raise WorkflowParseError(Issue(f"cannot parse a {type(source).__name__} as a workflow", code="syntax"))
    if len(source) > MAX_TEXT_CHARS:
        raise WorkflowParseError(
            Issue(f"the answer is {len(source)} characters long, above the {MAX_TEXT_CHARS} bound", code="too_large")
        )
    reasoning, body = split_reasoning(source.lstrip("\ufeff"))
    obj = loads(normalise_json(body))
    return workflow_from_obj(obj, reasoning=reasoning)
