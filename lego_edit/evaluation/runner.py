"""Batch-edit an evaluation set with one Builder (or the GT "oracle workflow" row) and score every item.

A chunk job: load the items of chunk i of n, generate workflows in batches, execute them with the trained
bricks (bounded in time and size), save each output image, and record per item: parse / valid / executable,
and where a GT exists the edit success, PSNR and edited-region IoU against the exact target (``edit_success``: a
failed item counts as the unedited input, never dropped), brick F1 and exact match; plus the reward model's (or
the judge's) score of the executed edit. Failures are recorded per item; the chunk always completes.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from ..data.dataset import load_instructions, write_table
from ..imageio import ImageReadError, load_image, save_image
from ..layout import RunLayout
from ..workflow import BrickContext, Executor, Limits, WorkflowError, parse_workflow
from ..workflow.execute import run_bounded
from ..workflow.values import rgb
from .edit_success import load_target, score_edit

log = logging.getLogger(__name__)
SHAPES_SETS = {"shapes_gt": "gt", "shapes_open": "open"}


@dataclass
class EvalItem:
    id: str
    set: str
    category: str
    instruction: str
    image: object  # a path, or a zero-argument loader
    target: str | None = None
    workflow: str | None = None  # the GT workflow (JSON)
    language: str = "en"
    extra: dict = field(default_factory=dict)
    judge_image: object = None  # a zero-argument loader of what the judge compares with; None: the source

    def load(self) -> np.ndarray:
        return self.image() if callable(self.image) else load_image(self.image)

    def load_judge_source(self, source: np.ndarray) -> np.ndarray:
        return source if self.judge_image is None else self.judge_image()


def load_items(set_name: str, spec: dict, max_items: int = 0) -> list[EvalItem]:
    """The items of an evaluation set: shapes_gt / shapes_open (test split tables), gedit, imgedit."""
    if set_name in SHAPES_SETS:
        rows = load_instructions(spec["table"], "test")
        items = [
            EvalItem(
                r["id"], set_name, r["category"], r["instruction"], r["image_path"], r["target_path"], r["workflow"]
            )
            for r in rows
        ]
    elif set_name == "gedit":
        from .benchmarks import read_gedit

        items = [
            EvalItem(
                b.key,
                set_name,
                b.task_type,
                b.instruction,
                b.load_image,
                language=b.language,
                extra={"intersection_exist": bool(b.extra.get("intersection_exist", False))},
                judge_image=b.load_judge_image if b.judge_image is not None else None,
            )
            for b in read_gedit(
                spec["path"],
                languages=tuple(spec.get("languages", ["en", "cn"])),
                published_inputs=spec.get("published_inputs", True),
            )
        ]
    elif set_name == "imgedit":
        from .benchmarks import read_imgedit

        # The raw edit type ("compose", "alter") picks the published prompt; the category is the reported type.
        items = [
            EvalItem(
                b.key, set_name, b.task_type, b.instruction, b.load_image, extra={"edit_type": b.extra["edit_type"]}
            )
            for b in read_imgedit(spec["json"], spec["images"])
        ]
    else:
        raise ValueError(f"unknown evaluation set {set_name!r}")
    if max_items and len(items) > max_items:
        # An even spread over the set keeps every category in a reduced run.
        idx = np.linspace(0, len(items) - 1, max_items).round().astype(int)
        items = [items[i] for i in sorted(set(idx.tolist()))]
    return items


def chunk_of(items: list, index: int, count: int) -> list:
    """Chunk ``index`` (0-based) of ``count``: every ``count``-th item from the ``index``-th."""
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"chunk index must be in 0..{count - 1} (count={count}), got {index}")
    return items[index::count]


def make_builder(spec: dict, builder_dir: str | Path | None):
    """A GenerationBackend for a Builder row: a trained stage, the untrained base, or an API model."""
    from ..builder.backends import LocalVLMBackend, OpenAIChatBackend
    from ..training.vlm_sft import resolve_base

    if spec["kind"] == "openai":
        return OpenAIChatBackend(
            spec["base_url"],
            spec["model"],
            api_key_env=spec.get("api_key_env", "OPENAI_API_KEY"),
            max_tokens=spec.get("max_tokens", 1024),
            concurrency=spec.get("concurrency", 4),
        )
    path = resolve_base(Path(builder_dir))
    return LocalVLMBackend(path, max_new_tokens=spec.get("max_new_tokens", 384), batch_size=spec.get("batch_size", 16))


def _critic_scores(critic, set_name, items, sources, outputs, prefix: str = "") -> list[dict]:
    """Per item {critic, sc, pq} (GEdit under its protocol when the judge has one) and {imgedit_score} (ImgEdit);
    with ``prefix`` "judge_", a second judge's figures beside the reward model's {judge_score, judge_sc, ...}."""
    idx = [i for i, o in enumerate(outputs) if o is not None]
    out = [dict() for _ in items]
    if critic is None or not idx:
        return out
    texts, srcs, outs = [items[i].instruction for i in idx], [sources[i] for i in idx], [outputs[i] for i in idx]
    if set_name == "gedit" and hasattr(critic, "gedit_scores"):
        scores = critic.gedit_scores(texts, srcs, outs)
    else:
        scores = critic.score(texts, srcs, outs)
    for i, s in zip(idx, scores):
        # A judge answers SC and PQ itself; the local critic's one score stands for SC (PQ stays unscored).
        out[i] = {
            "critic": s.score,
            "sc": s.sc if s.sc is not None else (None if s.score is None else 10 * s.score),
            "pq": s.pq,
            "critic_error": s.error,
        }
        if prefix:
            out[i] = {prefix + ("score" if k == "critic" else k.removeprefix("critic_")): v for k, v in out[i].items()}
    if set_name == "imgedit" and hasattr(critic, "imgedit_scores"):
        kinds = [items[i].extra.get("edit_type", items[i].category) for i in idx]
        for i, v in zip(idx, critic.imgedit_scores(texts, kinds, srcs, outs)):
            out[i]["imgedit_score"] = v
    return out


def _judge_inputs(batch, sources, outputs, rows):
    """What the judge compares each edit with (GEdit's published protocol: another image than the editor's input).
    An item whose judge image cannot be read is left unscored, with the reason in its row."""
    judged_sources, judged_outputs = [], []
    for it, src, out, row in zip(batch, sources, outputs, rows):
        try:
            judged_sources.append(None if src is None or out is None else it.load_judge_source(src))
            judged_outputs.append(out)
        except ImageReadError as e:
            judged_sources.append(None)
            judged_outputs.append(None)
            row["error"] = f"judge image: {e}"
    return judged_sources, judged_outputs


def run_chunk(
    items: list[EvalItem],
    builder: dict,
    models,
    out_dir: str | Path,
    table_path: str | Path,
    registry=None,
    critic=None,
    style: str = "instruction",
    seed: int = 0,
    seconds: float = 60.0,
    batch_size: int = 64,
    judge=None,
    builder_dir: str | Path | None = None,
) -> pa.Table:
    """Edit and score ``items``. ``models``: the brick models (``layout.BrickModels``, a mapping of their
    folders, or a run folder); ``builder_dir``: a local Builder's folder (default: the stage's folder in the run
    folder ``models``). ``critic`` is the reward model; ``judge`` (an ``EvaluationJudge``) scores the
    benchmarks, and the shapes splits too when it is another model; each row records who judged it."""
    from ..bricks.models import bind_model_bricks
    from ..bricks.registry import default_registry
    from ..builder.generation import build_workflows
    from ..builder.rewards import _f1, brick_multiset, exact_match

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if registry is None:
        registry = default_registry()
        bind_model_bricks(registry, models)
    executor = Executor(registry, BrickContext(seed=seed, limits=Limits()))
    if builder_dir is None and builder["kind"] == "vlm" and isinstance(models, (str, Path)):
        builder_dir = RunLayout(models).builder(builder["stage"])
    backend = None if builder["kind"] == "oracle" else make_builder(builder, builder_dir)
    rows: list[dict] = []
    for start in range(0, len(items), batch_size):
        batch = items[start : start + batch_size]
        sources, load_errors = [], []
        for it in batch:
            try:
                sources.append(it.load())
                load_errors.append(None)
            except Exception as e:  # a broken benchmark image fails that item only
                sources.append(None)
                load_errors.append(f"image: {e}")
        t0 = time.perf_counter()
        if backend is None:
            answers = [(it.workflow, None) for it in batch]
        else:
            ok = [i for i, s in enumerate(sources) if s is not None]
            built = (
                build_workflows(backend, [sources[i] for i in ok], [batch[i].instruction for i in ok], registry, style)
                if ok
                else []
            )
            answers = [(None, "not generated")] * len(batch)
            for i, a in zip(ok, built):
                answers[i] = (a.text, None if a.text is not None else a.error)
        gen_seconds = (time.perf_counter() - t0) / max(1, len(batch))
        workflows: list = []
        for src, (text, _) in zip(sources, answers):
            try:
                workflows.append(None if src is None or text is None else parse_workflow(text))
            except WorkflowError as e:
                workflows.append(e)
        runnable = [i for i, wf in enumerate(workflows) if wf is not None and not isinstance(wf, WorkflowError)]
        executed = dict(
            zip(
                runnable,
                run_bounded(executor, [workflows[i] for i in runnable], [sources[i] for i in runnable], seconds),
            )
        )
        outputs: list[np.ndarray | None] = []
        for j, (it, src, load_err, (text, gen_err)) in enumerate(zip(batch, sources, load_errors, answers)):
            row = {
                "id": it.id,
                "set": it.set,
                "category": it.category,
                "language": it.language,
                "instruction": it.instruction,
                "builder": builder["name"],
                "answer": text,
                "parsed": False,
                "valid": False,
                "executed": False,
                "error": load_err or gen_err,
                "builder_seconds": gen_seconds,
                "execute_seconds": None,
                "output": None,
                **{f"x_{k}": v for k, v in it.extra.items()},
            }
            output = raw = None
            wf = workflows[j] if j in executed else None
            result = executed.get(j)
            if isinstance(workflows[j], WorkflowError):
                row["error"] = f"invalid: {workflows[j]}"
            elif result is not None:
                row["parsed"] = True
                if isinstance(result, WorkflowError):
                    row["error"] = f"invalid: {result}"
                elif isinstance(result, Exception):  # brick failures and time-outs are recorded, the chunk goes on
                    row["valid"] = True
                    row["error"] = f"execution: {type(result).__name__}: {result}"
                else:
                    row.update(valid=True, executed=True, execute_seconds=result.brick_seconds)
                    raw = result.images[0]  # a cut-out keeps its alpha: extract is scored as RGBA
                    output = rgb(raw)[:, :, :3]
                    path = out_dir / f"{it.id}.png"
                    save_image(path, raw)
                    row["output"] = str(path)
            if it.workflow is not None:
                gold = parse_workflow(it.workflow)
                row["brick_f1"] = 0.0 if wf is None else _f1(brick_multiset(wf), brick_multiset(gold))
                row["exact_match"] = exact_match(wf, gold)
            if it.target is not None and src is not None:
                row.update(score_edit(src, raw, load_target(it.target)).as_row())
            outputs.append(output)
            rows.append(row)
        set_name = batch[0].set
        benchmark = set_name not in SHAPES_SETS
        sources, outputs = _judge_inputs(batch, sources, outputs, rows[-len(batch) :])
        scorer = judge.scorer if judge is not None and (benchmark or judge.is_reward_model) else critic
        for row, extra in zip(rows[-len(batch) :], _critic_scores(scorer, set_name, batch, sources, outputs)):
            row.update(extra)
        if judge is not None and not benchmark and not judge.is_reward_model:
            for row, extra in zip(
                rows[-len(batch) :], _critic_scores(judge.scorer, set_name, batch, sources, outputs, prefix="judge_")
            ):
                row.update(extra)
        if judge is not None:
            for row in rows[-len(batch) :]:
                row.update(judge.row_labels())
        log.info("%s/%s: %d/%d items", builder["name"], batch[0].set, start + len(batch), len(items))
    # Every row gets every column: pyarrow takes the columns from the first row, and a first item that failed
    # has no score columns.
    keys = list(dict.fromkeys(k for r in rows for k in r))
    table = pa.Table.from_pylist(
        [{k: (json.dumps(r[k]) if isinstance(r.get(k), (dict, list)) else r.get(k)) for k in keys} for r in rows]
    )
    write_table(table, table_path)
    return table


def evaluate_chunk(
    set_name: str,
    spec: dict,
    chunk: tuple[int, int],
    builder: dict,
    models,
    critic_dir,
    images_dir,
    rows_path,
    style: str = "instruction",
    seed: int = 0,
    seconds: float = 60.0,
    judge: dict | None = None,
    protocol: str | None = None,
    builder_dir: str | Path | None = None,
) -> pa.Table:
    """The pipeline's chunk job: chunk (index, count) of the set's items, edited by ``builder``; the shapes splits
    scored by the run's critic (the reward model), the benchmarks by ``judge`` (``evaluation.judge``; empty: the
    critic) under the published protocol of the checkout at ``protocol`` when given."""
    from ..models.critic import load_critic_dir
    from .judging import EvaluationJudgeConfig, load_evaluation_judge

    items = chunk_of(load_items(set_name, spec, spec.get("max_items", 0)), *chunk)
    judge_cfg = EvaluationJudgeConfig.from_dict(judge)
    reward = load_critic_dir(critic_dir) if set_name in SHAPES_SETS or not judge_cfg.base_url else None
    evaluation_judge = load_evaluation_judge(judge_cfg, critic_dir, set_name, protocol, reward_critic=reward)
    try:
        return run_chunk(
            items,
            builder,
            models,
            images_dir,
            rows_path,
            critic=reward,
            style=style,
            seed=seed,
            seconds=seconds,
            judge=evaluation_judge,
            builder_dir=builder_dir,
        )
    finally:
        evaluation_judge.close()
