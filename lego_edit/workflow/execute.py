"""Run a validated workflow: each needed step once, in dependency order, with typed values.

Bricks are called as ``implementation(ctx, **inputs)``. The executor checks every produced value against
the brick's declared output kind and the size bounds, times each step (so that executor overhead can be
measured apart from brick compute), and turns any brick failure into an ExecutionError naming the step.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .errors import BrickUnavailableError, ExecutionError, Issue, LimitExceededError, WorkflowError
from .limits import DEFAULT_LIMITS, Limits
from .structure import Ref, Workflow
from .validate import ValidationReport, check_workflow
from .values import Kind, as_mask, check_value


@dataclass
class BrickContext:
    """What a brick may use besides its inputs: bounds, a seed, and a cache for loaded models."""

    limits: Limits = DEFAULT_LIMITS
    seed: int = 0
    device: str | None = None
    cache: dict = field(default_factory=dict)


@dataclass
class StepRecord:
    step: int
    brick: str
    seconds: float


@dataclass
class ExecutionResult:
    images: list[np.ndarray]
    values: dict[str, object]
    steps: list[StepRecord]
    warnings: list[Issue]
    seconds: float

    @property
    def brick_seconds(self) -> float:
        return sum(r.seconds for r in self.steps)


class Executor:
    def __init__(self, registry=None, context: BrickContext | None = None):
        if registry is None:
            from ..bricks.registry import default_registry
            registry = default_registry()
        self.registry = registry
        self.ctx = context or BrickContext()

    @property
    def limits(self) -> Limits:
        return self.ctx.limits

    def validate(self, workflow: Workflow, has_mask: bool) -> ValidationReport:
        return check_workflow(workflow, self.registry, has_mask=has_mask, limits=self.limits)

    def run(self, workflow: Workflow, image: np.ndarray, mask: np.ndarray | None = None,
            report: ValidationReport | None = None) -> ExecutionResult:
        """Validate (unless ``report``, a passing validation of this workflow with the same mask presence, is
        given: a batch running one workflow on many images validates it once), then execute.
        Raises WorkflowError (invalid) or ExecutionError (a step failed)."""
        start = time.perf_counter()
        image = check_value(Kind.IMAGE, image, "the input image")
        self.limits.check_size(*image.shape[:2], what="the input image")
        values: dict[str, object] = {"init[image]": image}
        if mask is not None:
            mask = as_mask(mask)
            if mask.shape != image.shape[:2]:
                raise WorkflowError(Issue(f"the mask is {mask.shape[1]}x{mask.shape[0]} but the image is "
                                          f"{image.shape[1]}x{image.shape[0]}", None, "init[mask]", "bad_mask"))
            values["init[mask]"] = mask
        if report is None or report.errors:
            report = self.validate(workflow, has_mask=mask is not None)
        records: list[StepRecord] = []
        for plan in report.plan:
            s = plan.step
            if s.number not in report.needed:
                continue
            impl = self.registry.implementation(plan.spec.name)
            if impl is None:
                raise BrickUnavailableError(f"no model configured for {plan.spec.name}", s.number, plan.spec.name)
            inputs = {}
            for name, value in s.inputs.items():
                if value is None:
                    continue
                inputs[name] = values[str(value)] if isinstance(value, Ref) else value
            t0 = time.perf_counter()
            try:
                outputs = impl(self.ctx, **inputs)
            except ExecutionError as e:
                if e.step is None:
                    raise type(e)(str(e), s.number, plan.spec.name) from e
                raise
            except MemoryError as e:
                raise ExecutionError("ran out of memory", s.number, plan.spec.name) from e
            except Exception as e:
                raise ExecutionError(f"{type(e).__name__}: {e}", s.number, plan.spec.name) from e
            records.append(StepRecord(s.number, plan.spec.name, time.perf_counter() - t0))
            if not isinstance(outputs, dict):
                raise ExecutionError(f"returned {type(outputs).__name__}, not a dict of outputs", s.number,
                                     plan.spec.name)
            for key, ref in s.outputs.items():
                if ref is None or str(ref) not in plan.stored:
                    continue
                if outputs.get(key) is None:
                    raise ExecutionError(f"did not produce its '{key}' output", s.number, plan.spec.name)
                try:
                    value = check_value(plan.stored[str(ref)], outputs[key], f"output '{key}'")
                except (TypeError, ValueError) as e:
                    raise ExecutionError(str(e), s.number, plan.spec.name) from e
                if isinstance(value, np.ndarray):
                    try:
                        self.limits.check_size(*value.shape[:2], what=f"output '{key}'")
                    except LimitExceededError as e:
                        raise LimitExceededError(str(e), s.number, plan.spec.name) from None
                values[str(ref)] = value
        images = [values[str(r)] for r in report.result]
        return ExecutionResult(images, values, records, report.warnings, time.perf_counter() - start)


def run_workflow(workflow: Workflow, image: np.ndarray, mask: np.ndarray | None = None, registry=None,
                 context: BrickContext | None = None) -> ExecutionResult:
    return Executor(registry, context).run(workflow, image, mask)
