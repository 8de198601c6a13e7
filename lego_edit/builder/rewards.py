"""Reward functions for the Builder's GRPO stages, with TRL's signature ``(prompts, completions, **kwargs)``.

Stage 2 (GT-based) sums format, validity and agreement with the GT workflow (brick multiset F1, dependency
edge F1, argument agreement), each logged on its own. Stage 3 (GT-free) uses ``CriticReward``: validate,
execute with the trained bricks, score the result with the critic. All are pure functions of their inputs
except CriticReward (which runs models); none raises on a bad completion.
"""

from __future__ import annotations

import json
import signal
import threading
from collections import Counter
from contextlib import contextmanager

from ..workflow import Limits, WorkflowError, parse_workflow, validate_workflow
from ..workflow.structure import Ref, Workflow
from ..workflow.values import Kind

INVALID_PENALTY = -1.0  # stage 3: the answer is not a valid workflow
FAILED_PENALTY = -0.2  # stage 3: a valid workflow whose execution failed (a brick error, a time-out)


def completion_text(completion) -> str:
    """TRL passes completions as strings or as [{"role": "assistant", "content": ...}] conversations."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        content = completion[-1].get("content", "")
        if isinstance(content, list):
            return "".join(p.get("text", "") for p in content if isinstance(p, dict))
        return str(content)
    return str(completion)


def try_parse(text: str) -> Workflow | None:
    try:
        return parse_workflow(text)
    except WorkflowError:
        return None


def _registry():
    from ..bricks.registry import default_registry

    if not hasattr(_registry, "cached"):
        _registry.cached = default_registry(plugins=False)
    return _registry.cached


def _canonical(name: str) -> str:
    spec = _registry().resolve(name)
    return spec.name if spec is not None else name.upper()


def _f1(pred: Counter, gold: Counter) -> float:
    if not pred and not gold:
        return 1.0
    common = sum((pred & gold).values())
    if common == 0:
        return 0.0
    p, r = common / sum(pred.values()), common / sum(gold.values())
    return 2 * p * r / (p + r)


def _gold(workflow) -> Workflow | None:
    if workflow is None:
        return None
    return try_parse(workflow if isinstance(workflow, str) else json.dumps(workflow))


def brick_multiset(wf: Workflow) -> Counter:
    return Counter(_canonical(s.brick) for s in wf.steps)


def dependency_edges(wf: Workflow) -> Counter:
    """(producer brick, output key, consumer brick, input name); the initial image is producer 'init'."""
    bricks = {s.number: _canonical(s.brick) for s in wf.steps}
    edges = Counter()
    for s in wf.steps:
        for name, ref in s.references():
            producer = "init" if ref.is_init else bricks.get(ref.step, "?")
            edges[(producer, ref.key, _canonical(s.brick), name)] += 1
    for ref in wf.result:
        edges[("init" if ref.is_init else bricks.get(ref.step, "?"), ref.key, "RESULT", "")] += 1
    return edges


def _literal_value(brick: str, name: str, v: str | float) -> object:
    """A literal as compared: strings stripped and lower-cased, numbers rounded; a numeric string given to a Float
    input is a number (the validator and executor read it as one)."""
    if isinstance(v, str):
        spec = _registry().resolve(brick)
        port = spec.input(name) if spec is not None else None
        if port is not None and port.kind == Kind.FLOAT:
            try:
                return round(float(v), 4)
            except ValueError:
                pass
        return v.strip().lower()
    return round(float(v), 4)


def _literals(wf: Workflow) -> list[tuple[str, str, object]]:
    out = []
    for s in wf.steps:
        for name, v in s.inputs.items():
            if v is not None and not isinstance(v, Ref):
                out.append((_canonical(s.brick), name, _literal_value(s.brick, name, v)))
    return out


def format_reward(prompts=None, completions=(), **kwargs) -> list[float]:
    """1 if the answer parses as a workflow, else 0.

    >>> format_reward(completions=['{"pipeline": [{"result": "init[image]"}]}', "no json"])
    [1.0, 0.0]
    """
    return [float(try_parse(completion_text(c)) is not None) for c in completions]


def validity_reward(prompts=None, completions=(), **kwargs) -> list[float]:
    """1 if the answer parses and validates against the brick registry, else 0."""
    out = []
    for c in completions:
        wf = try_parse(completion_text(c))
        out.append(float(wf is not None and validate_workflow(wf, _registry(), has_mask=None, limits=Limits()).ok))
    return out


def _against_gt(completions, workflow, score) -> list[float | None]:
    """``score(answer or None, gold)`` per completion; None where the row has no GT workflow."""
    golds = workflow if isinstance(workflow, list) else [workflow] * len(completions)
    out: list[float | None] = []
    for c, g in zip(completions, golds):
        gold = _gold(g)
        out.append(None if gold is None else score(try_parse(completion_text(c)), gold))
    return out


def brick_f1_reward(prompts=None, completions=(), workflow=None, **kwargs) -> list[float | None]:
    """F1 between the multisets of bricks used by the answer and by the GT workflow (None without a GT)."""
    return _against_gt(completions, workflow,
                       lambda wf, gold: 0.0 if wf is None else _f1(brick_multiset(wf), brick_multiset(gold)))


def edge_f1_reward(prompts=None, completions=(), workflow=None, **kwargs) -> list[float | None]:
    """F1 between the dependency edges of the answer and of the GT workflow (None without a GT)."""
    return _against_gt(completions, workflow,
                       lambda wf, gold: 0.0 if wf is None else _f1(dependency_edges(wf), dependency_edges(gold)))


def _argument_share(wf: Workflow | None, gold: Workflow) -> float:
    want = Counter(_literals(gold))
    if not want:
        return 1.0 if wf is not None else 0.0
    got = Counter(_literals(wf)) if wf is not None else Counter()
    return sum((want & got).values()) / sum(want.values())


def argument_reward(prompts=None, completions=(), workflow=None, **kwargs) -> list[float | None]:
    """Share of the GT workflow's literal arguments (brick, input, value) that the answer reproduces."""
    return _against_gt(completions, workflow, _argument_share)


def exact_match(answer: Workflow | None, gold: Workflow | None) -> bool:
    """Same steps (canonical bricks, inputs, outputs) and result; ``process`` and reasoning are ignored."""
    if answer is None or gold is None:
        return False
    norm = lambda wf: json.dumps([{**s.to_dict(), "model": _canonical(s.brick)} for s in wf.steps]  # noqa: E731
                                 + [[str(r) for r in wf.result]], sort_keys=True)
    return norm(answer) == norm(gold)


GT_REWARDS = {"format": format_reward, "validity": validity_reward, "brick_f1": brick_f1_reward,
              "edge_f1": edge_f1_reward, "arguments": argument_reward}


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


class CriticReward:
    """Stage 3: reward = the critic's score of the executed edit (in [0, 1]) for a valid, executable workflow;
    INVALID_PENALTY for an answer that is not a valid workflow, FAILED_PENALTY when execution fails or runs
    out of time. Execution is bounded by ``limits`` (steps, image sizes) and ``seconds`` per workflow."""

    __name__ = "critic"

    def __init__(self, executor, critic, seconds: float = 20.0):
        self.executor, self.critic, self.seconds = executor, critic, seconds
        self.stats = Counter()

    def __call__(self, prompts=None, completions=(), image=None, instruction=None, **kwargs) -> list[float]:
        import numpy as np

        from ..workflow.values import rgb

        images = image if isinstance(image, list) else [image] * len(completions)
        texts = instruction if isinstance(instruction, list) else [instruction] * len(completions)
        rewards: list[float | None] = []
        pending: list[tuple[int, np.ndarray, np.ndarray, str]] = []
        for i, (c, img, text) in enumerate(zip(completions, images, texts)):
            wf = try_parse(completion_text(c))
            source = np.asarray(img.convert("RGB")) if hasattr(img, "convert") else np.asarray(img)
            if wf is None:
                rewards.append(INVALID_PENALTY)
                self.stats["invalid"] += 1
                continue
            try:
                with time_limit(self.seconds):
                    result = self.executor.run(wf, source)
                rewards.append(None)
                pending.append((i, source, rgb(result.images[0]), text))
                self.stats["executed"] += 1
            except WorkflowError:
                rewards.append(INVALID_PENALTY)
                self.stats["invalid"] += 1
            except Exception:  # a brick failure or a time-out is a (small) penalty, never a crash of training
                rewards.append(FAILED_PENALTY)
                self.stats["failed"] += 1
        if pending:
            scores = self.critic.score([p[3] for p in pending], [p[1] for p in pending], [p[2] for p in pending])
            for (i, *_), s in zip(pending, scores):
                rewards[i] = FAILED_PENALTY if s.score is None else float(s.score)
        return rewards
