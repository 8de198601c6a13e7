"""Run a validated workflow: each needed step once, in dependency order, with typed values.

Bricks are called as ``implementation(ctx, **inputs)``. The executor checks every produced value against
the brick's declared output kind and the size bounds, times each step (so that executor overhead can be
measured apart from brick compute), and turns any brick failure into an ExecutionError naming the step.
"""

from __future__ import annotations

import hashlib
import signal
import threading
import time
from contextlib import contextmanager
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
        self.reused_calls = 0  # model-brick calls that run_batch answered from an identical earlier call

    @property
    def limits(self) -> Limits:
        return self.ctx.limits

    def validate(self, workflow: Workflow, has_mask: bool) -> ValidationReport:
        return check_workflow(workflow, self.registry, has_mask=has_mask, limits=self.limits)

    def _start(
        self, workflow: Workflow, image: np.ndarray, mask: np.ndarray | None, report: ValidationReport | None
    ) -> tuple[dict[str, object], ValidationReport]:
        """The initial values and a passing validation report; raises WorkflowError."""
        image = check_value(Kind.IMAGE, image, "the input image")
        self.limits.check_size(*image.shape[:2], what="the input image")
        values: dict[str, object] = {"init[image]": image}
        if mask is not None:
            mask = as_mask(mask)
            if mask.shape != image.shape[:2]:
                raise WorkflowError(
                    Issue(
                        f"the mask is {mask.shape[1]}x{mask.shape[0]} but the image is "
                        f"{image.shape[1]}x{image.shape[0]}",
                        None,
                        "init[mask]",
                        "bad_mask",
                    )
                )
            values["init[mask]"] = mask
        if report is None or report.errors:
            report = self.validate(workflow, has_mask=mask is not None)  # raises WorkflowValidationError
        return values, report

    @staticmethod
    def _inputs(plan, values: dict[str, object]) -> dict:
        return {
            name: values[str(v)] if isinstance(v, Ref) else v for name, v in plan.step.inputs.items() if v is not None
        }

    def _implementation(self, plan):
        impl = self.registry.implementation(plan.spec.name)
        if impl is None:
            raise BrickUnavailableError(f"no model configured for {plan.spec.name}", plan.step.number, plan.spec.name)
        return impl

    @staticmethod
    def _failure(e: BaseException, plan) -> ExecutionError:
        """A brick's exception as an ExecutionError naming the step."""
        s = plan.step
        if isinstance(e, ExecutionError):
            return e if e.step is not None else type(e)(str(e), s.number, plan.spec.name)
        if isinstance(e, MemoryError):
            return ExecutionError("ran out of memory", s.number, plan.spec.name)
        return ExecutionError(f"{type(e).__name__}: {e}", s.number, plan.spec.name)

    def _store(self, plan, outputs, values: dict[str, object]) -> None:
        """Check a step's outputs against its declared kinds and the size bounds, and keep the needed ones."""
        s = plan.step
        if not isinstance(outputs, dict):
            raise ExecutionError(f"returned {type(outputs).__name__}, not a dict of outputs", s.number, plan.spec.name)
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

    def run(
        self,
        workflow: Workflow,
        image: np.ndarray,
        mask: np.ndarray | None = None,
        report: ValidationReport | None = None,
    ) -> ExecutionResult:
        """Validate (unless ``report``, a passing validation of this workflow with the same mask presence, is
        given: a batch running one workflow on many images validates it once), then execute.
        Raises WorkflowError (invalid) or ExecutionError (a step failed)."""
        start = time.perf_counter()
        values, report = self._start(workflow, image, mask, report)
        records: list[StepRecord] = []
        for plan in report.plan:
            if plan.step.number not in report.needed:
                continue
            impl = self._implementation(plan)
            inputs = self._inputs(plan, values)
            t0 = time.perf_counter()
            try:
                outputs = impl(self.ctx, **inputs)
            except Exception as e:
                raise self._failure(e, plan) from e
            records.append(StepRecord(plan.step.number, plan.spec.name, time.perf_counter() - t0))
            self._store(plan, outputs, values)
        images = [values[str(r)] for r in report.result]
        return ExecutionResult(images, values, records, report.warnings, time.perf_counter() - start)

    def run_batch(
        self, workflows: list[Workflow], images: list[np.ndarray], masks: list[np.ndarray | None] | None = None
    ) -> list[ExecutionResult | WorkflowError | ExecutionError]:
        """Run many workflows together: the k-th needed step of every workflow runs in one round, and the calls of
        a round to the same brick go to its ``batch`` implementation in one call where it has one (a model brick
        then runs one forward pass for all of them). Per workflow: its ExecutionResult, or the WorkflowError /
        ExecutionError that stopped it; one failure never stops the others. A brick's batch implementation must
        give each call the output it would give alone (seeded per call, not per batch); so a model brick's call
        whose inputs equal an earlier call's in the same batch is answered with that call's outputs, not run."""
        masks = masks if masks is not None else [None] * len(workflows)
        out: list[ExecutionResult | WorkflowError | ExecutionError | None] = [None] * len(workflows)
        state = {}
        memo: dict[str, object] = {}  # model-brick results of this batch by the digest of brick and inputs
        for i, (wf, img, m) in enumerate(zip(workflows, images, masks)):
            try:
                values, report = self._start(wf, img, m, None)
            except (ExecutionError, TypeError, ValueError) as e:  # invalid (WorkflowError), a bad or too large image
                out[i] = e
                continue
            plans = [pl for pl in report.plan if pl.step.number in report.needed]
            state[i] = (values, report, plans, [], time.perf_counter())
        for k in range(max((len(st[2]) for st in state.values()), default=0)):
            rounds: dict[str, list[tuple[int, object]]] = {}
            for i, (_, _, plans, _, _) in state.items():
                if out[i] is None and k < len(plans):
                    rounds.setdefault(plans[k].spec.name, []).append((i, plans[k]))
            for name, calls in rounds.items():
                todo = []
                for i, plan in calls:
                    try:
                        todo.append((i, plan, self._implementation(plan), self._inputs(plan, state[i][0])))
                    except ExecutionError as e:
                        out[i] = e
                if not todo:
                    continue
                # A model brick's output depends only on its inputs (seeded per call), so a call repeating one
                # already made in this batch (the same leading steps of a group's answers on its one image) is not
                # run again: it gets the first call's outputs.
                keys = [_call_key(name, c[3]) if c[1].spec.backend == "model" else None for c in todo]
                runs, slots = [], []  # the calls to make; per call, where its result comes from
                for j, key in enumerate(keys):
                    if key is not None and key in memo:
                        slots.append(("memo", key))
                        continue
                    if key is not None:
                        memo[key] = None  # claimed: a repeat in this round takes this run's result
                    slots.append(("run", len(runs)))
                    runs.append(todo[j])
                t0 = time.perf_counter()
                ran = self._call_round(runs)
                for (kind, ref), key in zip(slots, keys):
                    if kind == "run" and key is not None:
                        memo[key] = ran[ref]
                results = [ran[ref] if kind == "run" else memo[ref] for kind, ref in slots]
                self.reused_calls += len(todo) - len(runs)
                share = (time.perf_counter() - t0) / len(todo)
                for (i, plan, _, _), result in zip(todo, results):
                    try:
                        if isinstance(result, BaseException):
                            raise self._failure(result, plan) from result
                        state[i][3].append(StepRecord(plan.step.number, name, share))
                        self._store(plan, result, state[i][0])
                    except ExecutionError as e:
                        out[i] = e
        for i, (values, report, _, records, t_start) in state.items():
            if out[i] is None:
                out[i] = ExecutionResult(
                    [values[str(r)] for r in report.result],
                    values,
                    records,
                    report.warnings,
                    time.perf_counter() - t_start,
                )
        return out

    def _call_round(self, todo: list) -> list:
        """One round's calls to one brick: its ``batch`` implementation in one call where it has one, else each
        call alone. A failed call gives its exception as its result. A TimeoutError (the caller's time bound on
        the whole batch) is not a brick failure: it stops the batch, so that the caller can rerun its workflows
        one at a time."""
        batch = getattr(todo[0][2], "batch", None) if todo else None
        if batch is not None and len(todo) > 1:
            try:
                return list(batch(self.ctx, [c[3] for c in todo]))
            except TimeoutError:
                raise
            except Exception as e:  # the whole call failed: each workflow gets the failure
                return [e] * len(todo)
        results = []
        for _, _, impl, inputs in todo:
            try:
                results.append(impl(self.ctx, **inputs))
            except TimeoutError:
                raise
            except Exception as e:
                results.append(e)
        return results


def _call_key(brick: str, inputs: dict) -> str | None:
    """A digest of a brick call: the brick and its inputs (arrays by dtype, shape and bytes); None for an input it
    cannot hash. The brick is part of it: SOS and CMI-PRED's caption mode both take just the image."""
    h = hashlib.sha1(brick.encode() + b"\0")
    for name in sorted(inputs):
        value = inputs[name]
        h.update(name.encode() + b"\0")
        if isinstance(value, np.ndarray):
            h.update(f"{value.dtype.str}{value.shape}".encode())
            h.update(np.ascontiguousarray(value).data)
        elif value is None or isinstance(value, str | int | float | bool):
            h.update(repr(value).encode())
        else:
            return None
    return h.hexdigest()


@contextmanager
def time_limit(seconds: float):
    """Raise TimeoutError in the block after ``seconds`` (a SIGALRM timer; no limit off the main thread)."""
    if seconds <= 0 or threading.current_thread() is not threading.main_thread():
        yield
        return

    def fire(signum, frame):
        raise TimeoutError(f"workflow execution exceeded {seconds:g} s")

    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def run_bounded(
    executor: Executor,
    workflows: list[Workflow],
    images: list[np.ndarray],
    seconds: float,
    masks: list[np.ndarray | None] | None = None,
) -> list[ExecutionResult | Exception]:
    """``executor.run_batch`` bounded by ``seconds`` per workflow: a batch that overruns the sum is rerun one workflow
    at a time, each bounded by ``seconds``, so a slow workflow fails alone (TimeoutError) and the others run."""
    masks = masks if masks is not None else [None] * len(workflows)
    try:
        with time_limit(seconds * max(1, len(workflows))):
            return executor.run_batch(workflows, images, masks)
    except TimeoutError:
        results: list[ExecutionResult | Exception] = []
        for wf, img, m in zip(workflows, images, masks):
            try:
                with time_limit(seconds):
                    results.append(executor.run(wf, img, m))
            except Exception as e:
                results.append(e)
        return results


def run_workflow(
    workflow: Workflow,
    image: np.ndarray,
    mask: np.ndarray | None = None,
    registry=None,
    context: BrickContext | None = None,
) -> ExecutionResult:
    return Executor(registry, context).run(workflow, image, mask)
