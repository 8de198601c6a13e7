"""Teacher-written workflows: a large VLM behind an OpenAI-compatible endpoint writes a workflow for each real
instruction; the trained bricks run it; it is kept only if the result passes a filter.

The published system wrote its GT workflows with a large VLM; here every answer is checked by execution before it
becomes training data. The chain for one row: ask the teacher (the system prompt rendered from the registry in the
published format, the same request the Builder gets) -> parse -> validate -> execute with the trained bricks ->
filter: with the dataset's target image, the output must remove at least ``1 - max_error_ratio`` of the input's
squared error to it (the evaluation's edit success at the default 0.5); without one, the evaluation judge
(``evaluation.judge``, an endpoint) must score it at least ``min_judge_score``. Each row gets one status:

  kept              passed the filter: its workflow joins the Builder's GT table
  request_failed    the endpoint failed after retries (a rerun asks again)
  unparseable       no workflow could be read from the answer
  invalid           the workflow breaks the registry's rules (the validator's errors are the reason)
  execution_failed  a brick failed or the run timed out
  filtered          it ran, but the result failed the filter (the score is recorded)
  unscored          no target, and the judge gave no score
  unfiltered        no target and no judge endpoint: nothing to filter by, so not kept

Every answer is written to a journal (sqlite, keyed by model, sampling parameters, prompt and image bytes) the
moment it arrives, so a job killed midway and run again sends only the requests that had not been answered.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
from tqdm import tqdm

from ..imageio import load_image, load_mask
from .dataset import write_table

log = logging.getLogger(__name__)
STATUSES = (
    "kept",
    "request_failed",
    "unparseable",
    "invalid",
    "execution_failed",
    "filtered",
    "unscored",
    "unfiltered",
)


@dataclass
class TeacherConfig:
    """The teacher VLM that writes workflows for data.builder_sources, and the filter its workflows must pass."""

    base_url: str = field(default="", metadata={"help": "OpenAI-compatible endpoint of the teacher VLM."})
    model: str = field(default="", metadata={"help": "Model the endpoint serves."})
    api_key_env: str = field(default="TEACHER_API_KEY", metadata={"help": "Environment variable with the key."})
    prompt_style: Literal["registry", "instruction"] = field(
        default="registry",
        metadata={
            "help": "registry: the brick library rendered from the registry as the system prompt (the published "
            "format); instruction: the bare instruction (a teacher trained as the tiny Builder)."
        },
    )
    concurrency: int = field(default=8, metadata={"help": "Requests in flight at a time.", "minimum": 1})
    timeout: float = field(default=120.0, metadata={"help": "Seconds per request before it counts as failed."})
    max_retries: int = field(
        default=3, metadata={"help": "Retries of a transport failure (connection, time-out, 408/409/429/5xx)."}
    )
    max_tokens: int = field(default=2048, metadata={"help": "Answer length limit.", "minimum": 1})
    temperature: float | None = field(default=0.0, metadata={"help": "Sampling temperature; null sends none."})
    with_masks: bool = field(
        default=False,
        metadata={"help": "Give the teacher and the bricks a row's mask (the user drew it); else masks only place."},
    )
    max_error_ratio: float = field(
        default=0.5,
        metadata={
            "help": "With a target image: keep when MSE(output, target) / MSE(input, target) is at most this "
            "(0.5 = the evaluation's edit success)."
        },
    )
    min_judge_score: float = field(
        default=0.6, metadata={"help": "Without a target: keep when the evaluation judge scores at least this (0-1)."}
    )
    execution_seconds: float = field(default=120.0, metadata={"help": "Time limit of one workflow's execution."})
    chunks: int = field(
        default=1, metadata={"help": "Chunk jobs the rows are split across (scattergather).", "minimum": 1}
    )
    journal: str = field(
        default="results/data/teacher/journal.sqlite",
        metadata={"help": "sqlite journal of the teacher's answers: a rerun sends only unanswered requests."},
    )
    shapes_fraction: float = field(
        default=1.0,
        metadata={
            "help": "Share of the shapes world's instructions mixed into the Builder's tables (0-1).",
            "minimum": 0,
            "maximum": 1,
        },
    )
    placement: bool = field(
        default=False,
        metadata={
            "help": "ADD-PRED learns from the sources' add rows (box of the mask, or of the target's change) "
            "instead of the shapes world."
        },
    )
    max_side: int = field(
        default=1024, metadata={"help": "Images are scaled so their long side is at most this.", "minimum": 1}
    )

    def __post_init__(self):
        if self.concurrency < 1 or self.chunks < 1 or self.max_tokens < 1 or self.max_retries < 0:
            raise ValueError("data.teacher: concurrency, chunks and max_tokens must be >= 1, max_retries >= 0")
        if not 0 <= self.shapes_fraction <= 1:
            raise ValueError(f"data.teacher.shapes_fraction must be in [0, 1], got {self.shapes_fraction}")

    @property
    def journal_model(self) -> str:
        """The journal's model key: the model and every parameter that changes its answer."""
        return f"{self.model}|{self.prompt_style}|max_tokens={self.max_tokens}|temperature={self.temperature}"


def request_messages(request) -> list[dict]:
    """A request as the journal keys it: roles, texts and image placeholders (the images go in by their bytes)."""
    head = [{"role": "system", "content": request.system}] if request.system is not None else []
    parts = [{"type": "image"} for _ in request.images] + [{"type": "text", "text": request.user}]
    return head + [{"role": "user", "content": parts}]


def teacher_backend(cfg: TeacherConfig):
    from ..builder.backends import OpenAIChatBackend

    return OpenAIChatBackend(
        cfg.base_url,
        cfg.model,
        api_key_env=cfg.api_key_env,
        timeout=cfg.timeout,
        max_retries=cfg.max_retries,
        max_tokens=cfg.max_tokens,
        temperature=cfg.temperature,
        concurrency=cfg.concurrency,
    )


def ask_teacher(cfg: TeacherConfig, requests: list, backend=None, journal=None) -> tuple[list, dict]:
    """One answer (text, or a BackendError) per request: from the journal when it holds one, else from the
    endpoint, each journaled the moment it arrives. Returns (answers, {"sent": n, "journaled": n})."""
    from ..builder.backends import BackendError
    from ..evaluation.judge_cache import JudgeCache, request_key

    if backend is None:
        backend = teacher_backend(cfg)
    own_journal = journal is None
    journal = JudgeCache(cfg.journal) if own_journal else journal
    try:
        keys = [request_key(cfg.journal_model, request_messages(r), r.images) for r in requests]
        answers: list = [journal.get(k) for k in keys]
        todo = [i for i, a in enumerate(answers) if a is None]
        log.info(
            "teacher: %d of %d answers in the journal, %d to ask", len(requests) - len(todo), len(requests), len(todo)
        )
        for j, result in tqdm(
            backend.stream([requests[i] for i in todo]), total=len(todo), desc="teacher", mininterval=5
        ):
            i = todo[j]
            if not isinstance(result, BackendError) and result.strip():
                journal.put(keys[i], cfg.journal_model, result)
            answers[i] = result
        return answers, {"sent": len(todo), "journaled": len(requests) - len(todo)}
    finally:
        if own_journal:
            journal.close()


def _verdict(row: dict, status: str, reason: str = "", **extra) -> dict:
    return {**row, "status": status, "reason": reason, **extra}


def filter_score(source: np.ndarray, raw_output: np.ndarray, target_path: str) -> float:
    """MSE(output, target) / MSE(input, target): 0 is the target exactly, 1 is no better than the input."""
    from ..evaluation.edit_success import load_target, score_edit

    return score_edit(source, raw_output, load_target(target_path)).error_ratio


def teacher_chunk(
    rows: list[dict],
    cfg: TeacherConfig,
    models,
    out_path,
    judge: dict | None = None,
    critic_dir=None,
    seed: int = 0,
    backend=None,
    batch_size: int = 16,
) -> Counter:
    """Ask, parse, validate, execute and filter ``rows`` (the builder-sources table's rows); write one verdict per
    row to ``out_path``. ``models``: the brick models (``layout.BrickModels``, a mapping of their folders, or a
    run folder). ``judge`` is evaluation.judge (an endpoint scores rows without a target)."""
    from ..bricks.models import bind_model_bricks
    from ..bricks.registry import default_registry
    from ..evaluation.judge_cache import JudgeCache
    from ..workflow import BrickContext, Executor, Limits

    registry = default_registry()
    bind_model_bricks(registry, models)
    executor = Executor(registry, BrickContext(seed=seed, limits=Limits()))
    scorer = _judge_scorer(judge, critic_dir)
    backend = backend if backend is not None else teacher_backend(cfg)
    journal = JudgeCache(cfg.journal)  # one client and one journal connection for the whole chunk
    try:
        verdicts, stats = _teacher_batches(rows, cfg, registry, executor, scorer, backend, journal, batch_size)
    finally:
        journal.close()
    stats.update(v["status"] for v in verdicts)
    write_table(pa.Table.from_pylist(verdicts, schema=verdict_schema()), out_path)
    log.info("teacher chunk: %s", dict(stats))
    return stats


def _teacher_batches(rows, cfg, registry, executor, scorer, backend, journal, batch_size) -> tuple[list, Counter]:
    from ..builder.generation import answer_from, requests_for
    from ..workflow.execute import run_bounded

    verdicts, stats = [], Counter()
    for start in range(0, len(rows), batch_size * cfg.concurrency):
        batch = rows[start : start + batch_size * cfg.concurrency]
        images = [load_image(r["image_path"]) for r in batch]
        masks = [load_mask(r["mask_path"]) if cfg.with_masks and r["mask_path"] else None for r in batch]
        has_masks = [m is not None for m in masks]
        requests = requests_for(images, [r["instruction"] for r in batch], registry, cfg.prompt_style, has_masks)
        answers, sent = ask_teacher(cfg, requests, backend, journal)
        stats.update(sent)
        pending = []  # (index in batch, workflow) of the valid answers
        for i, (row, result) in enumerate(zip(batch, answers)):
            a = answer_from(result, registry, has_mask=has_masks[i])
            base = {**row, "answer": a.text, "workflow": None, "reasoning": None, "score": None, "score_kind": None}
            if a.text is None:
                verdicts.append(_verdict(base, "request_failed", a.error))
            elif a.workflow is None:
                verdicts.append(_verdict(base, "unparseable", a.error))
            elif not a.valid:
                verdicts.append(_verdict(base, "invalid", a.error))
            else:
                base.update(workflow=a.workflow.to_json(), reasoning=a.workflow.reasoning or "")
                pending.append((i, a.workflow, base))
        for k in range(0, len(pending), batch_size):
            part = pending[k : k + batch_size]
            results = run_bounded(
                executor,
                [wf for _, wf, _ in part],
                [images[i] for i, _, _ in part],
                cfg.execution_seconds,
                [masks[i] for i, _, _ in part],
            )
            judged = []
            for (i, _, base), result in zip(part, results):
                if isinstance(result, Exception):
                    verdicts.append(_verdict(base, "execution_failed", f"{type(result).__name__}: {result}"))
                elif base["target_path"]:
                    ratio = filter_score(images[i], result.images[0], base["target_path"])
                    if ratio is None or not math.isfinite(ratio):
                        verdicts.append(_verdict(base, "filtered", "the target equals the input image"))
                    elif ratio <= cfg.max_error_ratio:
                        verdicts.append(_verdict(base, "kept", score=ratio, score_kind="error_ratio"))
                    else:
                        reason = f"error ratio {ratio:.3f} > {cfg.max_error_ratio}"
                        verdicts.append(_verdict(base, "filtered", reason, score=ratio, score_kind="error_ratio"))
                elif scorer is None:
                    verdicts.append(_verdict(base, "unfiltered", "no target image and no judge endpoint"))
                else:
                    judged.append((i, base, result.images[0]))
            verdicts.extend(_judged(scorer, judged, images, cfg.min_judge_score))
        log.info("teacher: %d/%d rows", min(start + len(batch), len(rows)), len(rows))
    return verdicts, stats


def _judge_scorer(judge: dict | None, critic_dir):
    """The evaluation judge when it is an endpoint; None otherwise (the run's critic is trained on the Builder's
    answers, so it cannot filter the Builder's own training data without a cycle)."""
    from ..evaluation.judging import EvaluationJudgeConfig, load_evaluation_judge

    cfg = EvaluationJudgeConfig.from_dict(judge)
    if not cfg.base_url:
        return None
    return load_evaluation_judge(cfg, critic_dir or "", "teacher").scorer


def _judged(scorer, judged: list, images: list, threshold: float) -> list[dict]:
    from ..workflow.values import rgb

    if not judged:
        return []
    scores = scorer.score(
        [base["instruction"] for _, base, _ in judged],
        [images[i] for i, _, _ in judged],
        [rgb(out)[:, :, :3] for _, _, out in judged],
    )
    out = []
    for (_, base, _), s in zip(judged, scores):
        if s.score is None:
            out.append(_verdict(base, "unscored", s.error or "the judge gave no score"))
        elif s.score >= threshold:
            out.append(_verdict(base, "kept", score=s.score, score_kind="judge"))
        else:
            reason = f"judge score {s.score:.3f} < {threshold}"
            out.append(_verdict(base, "filtered", reason, score=s.score, score_kind="judge"))
    return out


def verdict_schema() -> pa.Schema:
    from .builder_sources import ROW_COLUMNS

    return pa.schema(
        [
            *ROW_COLUMNS,
            ("answer", pa.string()),
            ("workflow", pa.string()),
            ("reasoning", pa.string()),
            ("status", pa.string()),
            ("reason", pa.string()),
            ("score", pa.float64()),
            ("score_kind", pa.string()),
        ]
    )


def run_teacher_chunk(cfg: TeacherConfig, rows_path, chunk: tuple[int, int], models, out_path, judge=None, seed=0):
    """The pipeline's chunk job: chunk (index, count) of the real rows."""
    import pyarrow.parquet as pq

    from ..evaluation.runner import chunk_of

    Path(cfg.journal).parent.mkdir(parents=True, exist_ok=True)
    rows = chunk_of(pq.read_table(rows_path).to_pylist(), *chunk)
    return teacher_chunk(rows, cfg, models, out_path, judge=judge, critic_dir=None, seed=seed)
