"""Workflow + brick registry -> every problem at once, and a plan the executor can run.

Checks: unknown brick, unknown or missing input, a call that fits none of the brick's modes, references
to steps that do not exist, come later or are the step itself, references to outputs the referenced
brick does not produce or the step did not store, type mismatches, Float ranges, literal string length,
duplicate step numbers or stored names, step count, an empty or image-less result. Unused steps and
masks in the result are warnings.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

from .errors import Issue, WorkflowValidationError
from .limits import DEFAULT_LIMITS, Limits
from .structure import INIT_KEYS, Ref, Step, Workflow
from .values import Kind, is_number


@dataclass
class StepPlan:
    step: Step
    spec: object  # BrickSpec (kept untyped so this module does not import the bricks package)
    mode: object  # Mode
    stored: dict[str, Kind] = field(default_factory=dict)  # stored name -> kind


@dataclass
class ValidationReport:
    errors: list[Issue] = field(default_factory=list)
    warnings: list[Issue] = field(default_factory=list)
    plan: list[StepPlan] = field(default_factory=list)
    needed: set[int] = field(default_factory=set)
    result: list[Ref] = field(default_factory=list)  # image references of the result, masks dropped

    @property
    def ok(self) -> bool:
        return not self.errors


def _a(kind) -> str:
    """'an Image', 'a Mask'."""
    return ("an " if str(kind)[0] in "AEIOU" else "a ") + str(kind)


def _suggest(name: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(name.upper(), candidates, n=2, cutoff=0.6)
    return f" (did you mean {' or '.join(close)}?)" if close else ""


def _mode_problem(spec, given: set[str]) -> str:
    modes = spec.all_modes
    if len(modes) == 1:
        m = modes[0]
        missing = [n for n in m.requires if n not in given]
        extra = sorted(given - set(m.requires) - set(m.allows))
        parts = []
        if missing:
            parts.append(f"missing required input(s) {', '.join(missing)}")
        if extra:
            parts.append(f"input(s) {', '.join(extra)} cannot be used here")
        return "; ".join(parts)
    alternatives = " or ".join(
        "[" + ", ".join(m.requires) + (f" (+ optional {', '.join(m.allows)})" if m.allows else "") + "]" for m in modes
    )
    return f"{spec.name} takes {alternatives} as non-null inputs; got [{', '.join(sorted(given)) or 'nothing'}]"


class _Checker:
    def __init__(self, workflow: Workflow, registry, has_mask: bool | None, limits: Limits):
        self.wf = workflow
        self.registry = registry
        self.limits = limits
        self.report = ValidationReport()
        self.available: dict[str, Kind | None] = {"init[image]": Kind.IMAGE}
        if has_mask is not False:
            self.available["init[mask]"] = Kind.MASK
        self.has_mask = has_mask
        self.position = {s.number: i for i, s in enumerate(workflow.steps)}
        self.specs: dict[int, object] = {}
        self.modes: dict[int, object] = {}
        self.done: set[int] = set()
        self.rejected: dict[str, str] = {}  # stored name -> why the step could not store it
        self.edges: dict[int, set[int]] = {}

    def error(self, msg, step=None, fld=None, code="invalid"):
        self.report.errors.append(Issue(msg, step, fld, code))

    def warn(self, msg, step=None, fld=None, code="warning"):
        self.report.warnings.append(Issue(msg, step, fld, code))

    def ref_kind(self, ref: Ref, step: int | None, fld: str) -> tuple[bool, Kind | None]:
        """(resolved, kind) of a reference used by ``step``; records an error when it does not resolve."""
        name = str(ref)
        if ref.is_init:
            if ref.key not in INIT_KEYS:
                self.error(
                    f"{name} is not an initial input (there are init[image] and init[mask])", step, fld, "bad_reference"
                )
                return False, None
            if ref.key == "mask" and self.has_mask is False:
                self.error("init[mask] is used but no mask was given with the image", step, fld, "no_mask")
                return False, None
            return True, self.available[name]
        if ref.step == step:
            self.error(f"{name} refers to the step's own output", step, fld, "self_reference")
            return False, None
        if ref.step not in self.done:
            where = "comes later" if ref.step in self.position else "does not exist"
            self.error(f"{name} refers to step {ref.step}, which {where}", step, fld, "bad_reference")
            return False, None
        if name in self.available:
            return True, self.available[name]
        if name in self.rejected:
            self.error(f"{name} is not available: {self.rejected[name]}", step, fld, "unknown_output")
            return False, None
        spec = self.specs.get(ref.step)
        target = self.wf.step(ref.step)
        stored = [str(r) for r in target.outputs.values() if r is not None] if target else []
        if (
            spec is not None
            and spec.output(ref.key) is None
            and ref.key not in {r.key for r in target.outputs.values() if r}
        ):
            self.error(
                f"{name}: {spec.name} produces no '{ref.key}' (it produces {', '.join(p.name for p in spec.outputs)})",
                step,
                fld,
                "unknown_output",
            )
        else:
            self.error(
                f"{name} is not stored by step {ref.step} (it stores {', '.join(stored) or 'nothing'})",
                step,
                fld,
                "unknown_output",
            )
        return False, None

    def check_step(self, s: Step) -> None:
        n = s.number
        spec = self.registry.resolve(s.brick)
        if spec is None:
            self.error(
                f"unknown brick {s.brick!r}{_suggest(s.brick, self.registry.all_names())}", n, "model", "unknown_brick"
            )
            for ref in s.outputs.values():  # keep going without cascading errors
                if ref is not None:
                    self.available.setdefault(str(ref), None)
            return
        self.specs[n] = spec
        given: set[str] = set()
        self.edges[n] = set()
        for name, value in s.inputs.items():
            fld = f"input.{name}"
            port = spec.input(name)
            if port is None:
                self.error(
                    f"{spec.name} has no input {name!r} (inputs: {', '.join(p.name for p in spec.inputs)})",
                    n,
                    fld,
                    "unknown_input",
                )
                continue
            if value is None:
                continue
            given.add(name)
            if isinstance(value, Ref):
                ok, kind = self.ref_kind(value, n, fld)
                if ok and value.step is not None:
                    self.edges[n].add(value.step)
                if ok and kind is not None and kind != port.kind:
                    self.error(f"needs {_a(port.kind)}, but {value} is {_a(kind)}", n, fld, "type_mismatch")
                continue
            self.check_literal(spec, port, value, n, fld, s)
        mode = spec.select_mode(given)
        if mode is None:
            self.error(_mode_problem(spec, given), n, "input", "bad_inputs")
        self.modes[n] = mode
        stored: dict[str, Kind] = {}
        for key, ref in s.outputs.items():
            fld = f"output.{key}"
            port = spec.output(key)
            if port is None:
                msg = f"{spec.name} has no output {key!r} (outputs: {', '.join(p.name for p in spec.outputs)})"
                self.error(msg, n, fld, "unknown_output")
                if ref is not None:
                    self.rejected[str(ref)] = f"step {n} stores it from output {key!r}, which {spec.name} lacks"
                continue
            if ref is None:
                continue
            if str(ref) in self.available or str(ref) in stored:
                self.error(f"{ref} is stored twice", n, fld, "duplicate_output")
                continue
            if mode is not None and key not in mode.produces:
                msg = f"{spec.name} called this way produces no '{key}'"
                self.warn(f"{msg}; {ref} stays empty", n, fld, "not_produced")
                self.rejected[str(ref)] = f"in step {n}, {msg}"
                continue
            stored[str(ref)] = port.kind
        self.available.update(stored)
        self.report.plan.append(StepPlan(s, spec, mode, stored))

    def check_literal(self, spec, port, value, n, fld, s) -> None:
        if port.kind == Kind.FLOAT:
            number = value
            if isinstance(value, str):
                try:
                    number = float(value)
                except ValueError:
                    self.error(f"needs a number, got {value!r}", n, fld, "type_mismatch")
                    return
                s.inputs[port.name] = number  # the published executor also reads numeric strings
            if not is_number(number) or number != number or number in (float("inf"), float("-inf")):
                self.error(f"needs a finite number, got {value!r}", n, fld, "type_mismatch")
                return
            if port.range and not (port.range[0] <= number <= port.range[1]):
                self.error(
                    f"{number:g} is outside the allowed range [{port.range[0]:g}, {port.range[1]:g}]",
                    n,
                    fld,
                    "out_of_range",
                )
        elif port.kind == Kind.STR:
            if not isinstance(value, str):
                self.error(f"needs a string, got {value!r}", n, fld, "type_mismatch")
            elif len(value) > self.limits.max_string_chars:
                self.error(
                    f"the string is {len(value)} characters long, above the {self.limits.max_string_chars} bound",
                    n,
                    fld,
                    "too_long",
                )
        else:
            self.error(
                f"needs a reference to {_a(port.kind)} (such as init[image] or stepN[{port.name}]), got the "
                f"literal {value!r}",
                n,
                fld,
                "type_mismatch",
            )

    def run(self) -> ValidationReport:
        steps = self.wf.steps
        if len(steps) > self.limits.max_steps:
            self.error(
                f"the workflow has {len(steps)} steps, above the bound of {self.limits.max_steps}",
                None,
                "pipeline",
                "too_many_steps",
            )
            return self.report
        if not steps and not self.wf.result:
            self.error("the workflow has no steps and no result", None, "pipeline", "empty")
        for s in steps:
            if s.number in self.done:
                self.error(f"step number {s.number} is used twice", s.number, "step", "duplicate_step")
                continue
            self.check_step(s)
            self.done.add(s.number)
        self.check_result()
        return self.report

    def check_result(self) -> None:
        images: list[Ref] = []
        for ref in self.wf.result:
            ok, kind = self.ref_kind(ref, None, "result")
            if not ok:
                continue
            if kind == Kind.MASK:
                self.warn(f"{ref} is a mask; masks are dropped from the result", None, "result", "mask_in_result")
            elif kind in (Kind.STR, Kind.FLOAT):
                self.warn(f"{ref} is a {kind}; only images are returned", None, "result", "value_in_result")
            else:
                images.append(ref)
        if not self.wf.result:
            self.error("the result is empty", None, "result", "empty_result")
        elif not images and not self.report.errors:
            self.error("the result holds no image", None, "result", "empty_result")
        self.report.result = images
        needed: set[int] = set()
        todo = [r.step for r in images if r.step is not None]
        while todo:
            n = todo.pop()
            if n in needed:
                continue
            needed.add(n)
            todo.extend(self.edges.get(n, ()))
        self.report.needed = needed
        for s in self.wf.steps:
            if s.number not in needed and not self.report.errors:
                self.warn(
                    f"step {s.number} ({s.brick}) does not contribute to the result and is skipped",
                    s.number,
                    None,
                    "unused_step",
                )


def validate_workflow(
    workflow: Workflow, registry=None, *, has_mask: bool | None = None, limits: Limits = DEFAULT_LIMITS
) -> ValidationReport:
    """Check a parsed workflow against a brick registry; never raises for a bad workflow.

    ``has_mask``: whether a user mask comes with the image (None: unknown, init[mask] is allowed).
    """
    if registry is None:
        from ..bricks.registry import default_registry

        registry = default_registry()
    return _Checker(workflow, registry, has_mask, limits).run()


def check_workflow(workflow: Workflow, registry=None, **kwargs) -> ValidationReport:
    """Like validate_workflow, but raise WorkflowValidationError listing every error."""
    report = validate_workflow(workflow, registry, **kwargs)
    if report.errors:
        raise WorkflowValidationError(report.errors)
    return report
