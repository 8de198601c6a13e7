"""Reward functions for the Builder's GRPO stages, with TRL's signature ``(prompts, completions, **kwargs)``.

Stage 2 (GT-based) sums weighted terms, each logged on its own: format, validity, agreement with the GT
workflow (brick multiset F1, dependency edge F1, exact and graded argument agreement) and, grounded in
execution, ``ExecutionReward``: run the answer with the trained bricks and measure how much of the input's
error to the exact GT target it removes. Stage 3 (GT-free) uses ``CriticReward``: validate, execute with the
trained bricks, score the result with the critic. Both execute a batch of answers together
(``Executor.run_batch``), each distinct (image, workflow) once. The GT-workflow terms are pure functions of
their inputs; none raises on a bad completion.
"""

from __future__ import annotations

import json
from collections import Counter

from ..workflow import Limits, WorkflowError, parse_workflow, validate_workflow
from ..workflow.execute import run_bounded
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
    return _against_gt(
        completions, workflow, lambda wf, gold: 0.0 if wf is None else _f1(brick_multiset(wf), brick_multiset(gold))
    )


def edge_f1_reward(prompts=None, completions=(), workflow=None, **kwargs) -> list[float | None]:
    """F1 between the dependency edges of the answer and of the GT workflow (None without a GT)."""
    return _against_gt(
        completions, workflow, lambda wf, gold: 0.0 if wf is None else _f1(dependency_edges(wf), dependency_edges(gold))
    )


def _argument_share(wf: Workflow | None, gold: Workflow) -> float:
    want = Counter(_literals(gold))
    if not want:
        return 1.0 if wf is not None else 0.0
    got = Counter(_literals(wf)) if wf is not None else Counter()
    return sum((want & got).values()) / sum(want.values())


def argument_reward(prompts=None, completions=(), workflow=None, **kwargs) -> list[float | None]:
    """Share of the GT workflow's literal arguments (brick, input, value) that the answer reproduces."""
    return _against_gt(completions, workflow, _argument_share)


def _value_similarity(a: object, b: object) -> float:
    """1 for equal values; for two strings the F1 of their words ("small red circle" vs "red circle": 0.8);
    0 otherwise (numbers count only when equal)."""
    if a == b:
        return 1.0
    if isinstance(a, str) and isinstance(b, str):
        x, y = Counter(a.split()), Counter(b.split())
        common = sum((x & y).values())
        return 0.0 if common == 0 else 2 * common / (sum(x.values()) + sum(y.values()))
    return 0.0


def _graded_argument_share(wf: Workflow | None, gold: Workflow) -> float:
    """Each GT literal matched to the answer's most similar unused literal of the same (brick, input), summed
    and divided by the larger of the two literal counts (an extra argument costs as a missing one does)."""
    if wf is None:
        return 0.0
    want, got = _literals(gold), _literals(wf)
    if not want:
        return 1.0 if not got else 0.0
    free = list(got)
    total = 0.0
    for brick, name, value in want:
        options = [(k, _value_similarity(value, v)) for k, (b, n, v) in enumerate(free) if (b, n) == (brick, name)]
        if options:
            k, sim = max(options, key=lambda o: o[1])
            total += sim
            free.pop(k)
    return total / max(len(want), len(got))


def graded_argument_reward(prompts=None, completions=(), workflow=None, **kwargs) -> list[float | None]:
    """Graded agreement of the literal arguments with the GT workflow's: a referring expression or a colour that
    is partly right earns part of the reward, which exact string equality gives only when all of it is right."""
    return _against_gt(completions, workflow, _graded_argument_share)


def exact_match(answer: Workflow | None, gold: Workflow | None) -> bool:
    """Same steps (canonical bricks, inputs, outputs) and result; ``process`` and reasoning are ignored."""
    if answer is None or gold is None:
        return False
    norm = lambda wf: json.dumps(
        [{**s.to_dict(), "model": _canonical(s.brick)} for s in wf.steps]  # noqa: E731
        + [[str(r) for r in wf.result]],
        sort_keys=True,
    )
    return norm(answer) == norm(gold)


GT_REWARDS = {
    "format": format_reward,
    "validity": validity_reward,
    "brick_f1": brick_f1_reward,
    "edge_f1": edge_f1_reward,
    "arguments": argument_reward,
    "graded_arguments": graded_argument_reward,
}


def _as_array(img):
    import numpy as np

    if img is None:
        return None
    return np.asarray(img.convert("RGB")) if hasattr(img, "convert") else np.asarray(img)


def _per_completion(value, n: int) -> list:
    return value if isinstance(value, list) else [value] * n


class BatchExecution:
    """Runs answers with the trained bricks, a batch at a time (one model pass per brick and step), each distinct
    (image, workflow) pair once and remembered, so a group's identical samples and a prompt seen again cost
    nothing; bounded by ``seconds`` per workflow (``run_bounded``). Counts outcomes in ``stats``."""

    def __init__(self, executor, seconds: float = 20.0, memory: int = 20_000):
        self.executor, self.seconds, self.memory = executor, seconds, memory
        self.stats = Counter()
        self._done: dict[tuple, object] = {}

    def _key(self, wf: Workflow, source) -> tuple:
        import hashlib

        return (
            hashlib.blake2b(source.tobytes(), digest_size=16).hexdigest(),
            source.shape,
            json.dumps(wf.to_dict(), sort_keys=True),
        )

    def run(self, completions, images, count: bool = True) -> list[tuple[str, object]]:
        """Per completion ("invalid" | "failed" | "executed", the output image or None); counted in ``stats``
        unless ``count`` is False (runs that are not answers, e.g. the GT workflow a reward compares with)."""
        n = len(completions)
        workflows = [try_parse(completion_text(c)) for c in completions]
        sources = [_as_array(img) for img in _per_completion(images, n)]
        keys = [None if wf is None or src is None else self._key(wf, src) for wf, src in zip(workflows, sources)]
        todo = {k: i for i, k in enumerate(keys) if k is not None and k not in self._done}
        if todo:
            idx = list(todo.values())
            results = run_bounded(self.executor, [workflows[i] for i in idx], [sources[i] for i in idx], self.seconds)
            if len(self._done) + len(idx) > self.memory:
                self._done.clear()
            for i, result in zip(idx, results):  # only the output image is kept, not every step's values
                self._done[keys[i]] = result if isinstance(result, Exception) else result.images[0]
        out = []
        for wf, src, key in zip(workflows, sources, keys):
            if wf is None:
                outcome = ("invalid", None)
            elif src is None:
                outcome = ("failed", None)
            else:
                result = self._done[key]
                if isinstance(result, WorkflowError):
                    outcome = ("invalid", None)
                elif isinstance(result, Exception):
                    outcome = ("failed", None)
                else:
                    outcome = ("executed", result)
            if count:
                self.stats[outcome[0]] += 1
            out.append(outcome)
        return out


class ExecutionReward:
    """Stage 2, grounded in execution: run the answer with the trained bricks on the training image and reward
    the share of the unedited input's squared error to the exact GT target that the output removes,
    1 - MSE(output, target) / MSE(input, target), clipped to [-1, 1] (the evaluation's edit success is this share
    reaching 0.5). An answer that is not a valid workflow, or fails to run, edits nothing: 0.

    With ``gate`` the term speaks only where the GT workflow itself, run by the same bricks, is an edit success:
    where the bricks fail the GT, a wrong answer can out-score it (a no-op beats a bad edit), and the term would
    teach the Builder away from the GT. There it is None for every sample (TRL leaves it out of the sum)."""

    __name__ = "execution"

    def __init__(self, executor, seconds: float = 20.0, gate: bool = False):
        self.execution = BatchExecution(executor, seconds)
        self.gate = gate
        self.gated = 0  # completions whose term was left out because the bricks fail their GT

    @property
    def stats(self) -> Counter:
        return self.execution.stats

    def __call__(
        self, prompts=None, completions=(), image=None, target=None, workflow=None, **kwargs
    ) -> list[float | None]:
        from ..evaluation.edit_success import SUCCESS_SHARE, load_target, score_edit

        n = len(completions)
        targets = _per_completion(target, n)
        sources = [_as_array(img) for img in _per_completion(image, n)]
        loaded: dict[str, object] = {}

        def ratios(runs):
            out = []
            for (status, output), src, tgt in zip(runs, sources, targets):
                if tgt is None or src is None:
                    out.append(None)
                    continue
                if tgt not in loaded:
                    loaded[tgt] = load_target(tgt)
                out.append(score_edit(src, output if status == "executed" else None, loaded[tgt]).error_ratio)
            return out

        answer = ratios(self.execution.run(completions, sources))
        gt = [None] * n
        if self.gate and workflow is not None:  # the GT runs once per image and is remembered (often a sample)
            gold = [w if w is None or isinstance(w, str) else json.dumps(w) for w in _per_completion(workflow, n)]
            runs = self.execution.run([w or "" for w in gold], sources, count=False)
            gt = [None if w is None else r for w, r in zip(gold, ratios(runs))]
        rewards: list[float | None] = []
        for a, g in zip(answer, gt):
            if a is None or (g is not None and g > SUCCESS_SHARE):
                self.gated += a is not None
                rewards.append(None)
            else:
                rewards.append(float(max(-1.0, min(1.0, 1.0 - a))))
        return rewards


class CriticReward:
    """Stage 3: reward = the critic's score of the executed edit (in [0, 1]) for a valid, executable workflow;
    INVALID_PENALTY for an answer that is not a valid workflow, FAILED_PENALTY when execution fails or runs
    out of time. Execution is bounded by the executor's limits (steps, image sizes) and ``seconds`` per workflow."""

    __name__ = "critic"

    def __init__(self, executor, critic, seconds: float = 20.0):
        self.critic = critic
        self.execution = BatchExecution(executor, seconds)

    @property
    def stats(self) -> Counter:
        return self.execution.stats

    def __call__(self, prompts=None, completions=(), image=None, instruction=None, **kwargs) -> list[float]:
        from ..workflow.values import rgb

        n = len(completions)
        sources = [_as_array(img) for img in _per_completion(image, n)]
        texts = _per_completion(instruction, n)
        rewards: list[float | None] = []
        pending = []
        for i, ((status, output), src, text) in enumerate(
            zip(self.execution.run(completions, sources), sources, texts)
        ):
            if status == "executed":
                rewards.append(None)
                pending.append((i, src, rgb(output), text))
            else:
                rewards.append(INVALID_PENALTY if status == "invalid" else FAILED_PENALTY)
        if pending:
            scores = self.critic.score([p[3] for p in pending], [p[1] for p in pending], [p[2] for p in pending])
            for (i, *_), s in zip(pending, scores):
                rewards[i] = FAILED_PENALTY if s.score is None else float(s.score)
        return rewards
