"""VLM-judge scoring of edits as GEdit-Bench (VIEScore) and ImgEdit-Bench report them, and their aggregation.

The judge model is injected as ``chat(messages, images) -> str``: ``messages`` are chat turns whose content parts
``{"type": "image"}`` stand, in order, for the arrays in ``images``. No network client lives here.
An answer that cannot be read is retried; if it still cannot, the sample is UNSCORED (``ok=False``) and counted
in coverage. Unlike the published GEdit scorer, no score is ever substituted.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
from PIL import Image

from .benchmarks import GEDIT_LANGUAGES, GEDIT_TASK_TYPES, IMGEDIT_ALIASES, IMGEDIT_TYPES
from .judge_prompts import (  # noqa: F401 - also re-exported: this module was their import path
    _RETRY,
    IMGEDIT_RUBRICS,
    PQ_PROMPT,
    SC_PROMPT,
    imgedit_prompt,
)

Chat = Callable[[list[dict], list[np.ndarray]], str]


class ParseFailure(ValueError):
    """A judge answer with no usable scores (missing, wrong count, out of range, not numbers)."""


# ---------------------------------------------------------------- answer parsing
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)$")
_FENCE = re.compile(r"```[A-Za-z0-9]*\s*(.*?)```", re.S)
_LABELLED = re.compile(
    r"^\s*[-*#\s]*([A-Za-z][^:\n]{0,60}?)\s*\**\s*[:：]\s*\**\s*([+-]?\d+(?:\.\d+)?)"
    r"\s*(?:/\s*\d+)?\s*\**\s*$",
    re.M,
)


def _number(value: object) -> float:
    if isinstance(value, bool):  # JSON true/false are not scores, though Python treats them as ints
        raise ParseFailure(f"score {value!r} is not a number")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str) and _NUMBER.match(value.strip()):
        return float(value.strip())
    raise ParseFailure(f"score {value!r} is not a number")


def _objects(text: str):
    """JSON objects found in text: fenced blocks first, then every balanced {...}; light repair for slips."""
    chunks = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    for chunk in chunks:
        for start in [i for i, ch in enumerate(chunk) if ch == "{"][:100]:  # bounded work on hostile text
            end = _matching_brace(chunk, start)
            if end is None:
                continue
            snippet = chunk[start : end + 1]
            for candidate in (snippet, _repair(snippet)):
                try:
                    obj = json.loads(candidate)
                except json.JSONDecodeError:
                    continue
                if isinstance(obj, dict):
                    yield obj
                    break


def _matching_brace(s: str, start: int) -> int | None:
    depth, quote, escape = 0, None, False
    for i in range(start, len(s)):
        ch = s[i]
        if quote:
            if escape:
                escape = False
            elif ch == "\\":
                escape = True
            elif ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i
    return None


def _repair(snippet: str) -> str:
    s = re.sub(r",\s*([}\]])", r"\1", snippet)  # trailing commas
    return s.replace("'", '"') if '"' not in s else s  # a Python-style dict


def parse_scores(text: str, n: int, lo: float, hi: float) -> list[float]:
    """The ``n`` scores in a judge answer, each in [lo, hi]; ParseFailure otherwise.

    Reads ``{"score": [7, 8], "reasoning": ...}`` also inside code fences, after ``<think>`` blocks or prose,
    with numbers as strings or trailing commas; failing JSON, exactly ``n`` lines "Label: 4" (ImgEdit's format).
    """
    if not isinstance(text, str) or not text.strip():
        raise ParseFailure("empty or non-text answer")
    body = re.sub(r"<think>.*?</think>", " ", text[:20000], flags=re.S)
    values = None
    for obj in _objects(body):
        key = next((k for k in obj if str(k).lower() in ("score", "scores")), None)
        if key is not None:
            raw = obj[key]
            values = [_number(v) for v in (raw if isinstance(raw, list) else [raw])]
            break
    if values is None:
        labelled = [float(m.group(2)) for m in _LABELLED.finditer(body)]
        if len(labelled) != n:
            raise ParseFailure(
                f"no JSON object with a 'score' list, and {len(labelled)} labelled scores instead of {n}"
            )
        values = labelled
    if len(values) != n:
        raise ParseFailure(f"expected {n} scores, got {len(values)}: {values}")
    for v in values:
        if not math.isfinite(v) or not lo <= v <= hi:
            raise ParseFailure(f"score {v:g} is outside [{lo:g}, {hi:g}]")
    return values


# ---------------------------------------------------------------- judges
@dataclass
class JudgeResult:
    """GEdit/VIEScore result of one sample; sc, pq, overall are None when the sample is unscored."""

    sc: float | None
    pq: float | None
    overall: float | None
    raw_answers: list[str] = field(default_factory=list)
    ok: bool = False
    error: str | None = None
    sc_scores: list[float] | None = None  # [editing success, over-editing]
    pq_scores: list[float] | None = None  # [naturalness, artifacts]

    def as_row(self) -> dict:
        return asdict(self)


@dataclass
class ImgEditResult:
    """ImgEdit result of one sample: the three rubric scores and their mean, or None when unscored."""

    score: float | None
    scores: list[float] | None = None
    raw_answers: list[str] = field(default_factory=list)
    ok: bool = False
    error: str | None = None
    capped: bool = False  # scores 2/3 were lowered to score 1, as the rubric requires

    def as_row(self) -> dict:
        return asdict(self)


def _resize_to(image: np.ndarray, like: np.ndarray) -> np.ndarray:
    h, w = like.shape[:2]
    if image.shape[:2] == (h, w):
        return image
    return np.asarray(Image.fromarray(image).resize((w, h), Image.Resampling.BICUBIC))


def _user(text: str, n_images: int) -> dict:
    return {"role": "user", "content": [{"type": "image"}] * n_images + [{"type": "text", "text": text}]}


def _ask(
    chat: Chat,
    prompt: str,
    images: list[np.ndarray],
    n: int,
    lo: float,
    hi: float,
    max_retries: int,
    answers: list[str],
    check: Callable[[list[float]], None] | None = None,
) -> tuple[list[float] | None, str]:
    """Ask, parse, and on an unreadable answer ask again with the reason, up to ``max_retries`` more times."""
    messages, reason = [_user(prompt, len(images))], ""
    slots = ", ".join(["<n>"] * n)
    for _ in range(1 + max_retries):
        try:
            answer = chat(messages, images)
        except Exception as e:  # a backend failure is one failed attempt, never a crash of the batch
            reason = f"judge call failed: {type(e).__name__}: {e}"
            answers.append("")
            continue
        answers.append(answer if isinstance(answer, str) else repr(answer))
        try:
            scores = parse_scores(answer, n, lo, hi)
            if check:
                check(scores)
            return scores, ""
        except ParseFailure as e:
            reason = str(e)
        fix = _RETRY.format(reason=reason, slots=slots, n=n, lo=lo, hi=hi)
        messages = [messages[0], {"role": "assistant", "content": answers[-1]}, _user(fix, 0)]
    return None, reason


class VIEScoreJudge:
    """GEdit-Bench scoring: SC = min(success, over-editing) from both images, PQ = min(naturalness, artifacts)
    from the edited image, O = sqrt(SC*PQ); 0-10. The edited image is resized to the source size first."""

    def __init__(self, chat: Chat, max_retries: int = 2):
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, not {max_retries}")
        self.chat, self.max_retries = chat, max_retries

    def score(self, instruction: str, source: np.ndarray, edited: np.ndarray) -> JudgeResult:
        edited = _resize_to(edited, source)
        answers: list[str] = []
        sc_scores, err = _ask(
            self.chat,
            SC_PROMPT.replace("{instruction}", instruction),
            [source, edited],
            2,
            0,
            10,
            self.max_retries,
            answers,
        )
        if sc_scores is None:  # the sample is unscored either way, so PQ is not asked
            return JudgeResult(None, None, None, answers, False, f"unscored: SC answer unreadable: {err}")
        pq_scores, err = _ask(self.chat, PQ_PROMPT, [edited], 2, 0, 10, self.max_retries, answers)
        if pq_scores is None:
            return JudgeResult(
                None, None, None, answers, False, f"unscored: PQ answer unreadable: {err}", sc_scores=sc_scores
            )
        sc, pq = min(sc_scores), min(pq_scores)
        return JudgeResult(sc, pq, math.sqrt(sc * pq), answers, True, None, sc_scores, pq_scores)


class ImgEditJudge:
    """ImgEdit-Bench scoring: three 1-5 rubric scores per sample, sample score = their mean.

    ``cap`` handles an answer whose 2nd or 3rd score exceeds the 1st: "clip" lowers them to the 1st (the rubric's
    own rule, recorded in ``capped``); "reject" treats the answer as unreadable (retry, then unscored).
    """

    def __init__(self, chat: Chat, max_retries: int = 2, cap: str = "clip"):
        if cap not in ("clip", "reject"):
            raise ValueError(f"cap must be 'clip' or 'reject', not {cap!r}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, not {max_retries}")
        self.chat, self.max_retries, self.cap = chat, max_retries, cap

    def score(self, instruction: str, edit_type: str, source: np.ndarray, edited: np.ndarray) -> ImgEditResult:
        prompt = imgedit_prompt(edit_type, instruction)

        def check(s: list[float]) -> None:
            if self.cap == "reject" and max(s[1:]) > s[0]:
                raise ParseFailure(f"scores 2 and 3 {s[1:]} exceed score 1 ({s[0]:g})")

        answers: list[str] = []
        scores, err = _ask(self.chat, prompt, [source, edited], 3, 1, 5, self.max_retries, answers, check)
        if scores is None:
            return ImgEditResult(None, None, answers, False, f"unscored: answer unreadable: {err}")
        capped = max(scores[1:]) > scores[0]
        scores = [scores[0]] + [min(s, scores[0]) for s in scores[1:]]
        return ImgEditResult(sum(scores) / 3, scores, answers, True, None, capped)


# ---------------------------------------------------------------- aggregation
def _need(df: pd.DataFrame, cols: Sequence[str], what: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ValueError(f"{what}: missing column(s) {missing}; has {list(df.columns)}")


def _scored(df: pd.DataFrame, value_cols: Sequence[str]) -> pd.Series:
    mask = df[list(value_cols)].notna().all(axis=1)
    return mask & df["ok"].eq(True) if "ok" in df.columns else mask


def aggregate_gedit(df: pd.DataFrame) -> pd.DataFrame:
    """Per-sample GEdit scores -> tidy table of (subset, language, task_type) means and coverage.

    Input columns: task_type, language, sc, pq, intersection_exist, and optionally ok. Per-sample O is
    sqrt(sc*pq). Rows: each of the 11 types, then ``task_type="average"`` = unweighted mean of the type means
    (over the ``n_types`` types with a scored sample); subsets "fullset" and "intersection"
    (intersection_exist true). Unscored samples are left out of means and counted in n_total/coverage.
    """
    _need(df, ["task_type", "language", "sc", "pq", "intersection_exist"], "aggregate_gedit")
    unknown = sorted(set(df["task_type"]) - set(GEDIT_TASK_TYPES))
    if unknown:
        raise ValueError(f"aggregate_gedit: unknown task types {unknown}")
    d = df.assign(_scored=_scored(df, ["sc", "pq"]))
    d["overall"] = np.sqrt(d["sc"].astype(float) * d["pq"].astype(float))
    langs = [x for x in GEDIT_LANGUAGES if x in set(d["language"])] + sorted(set(d["language"]) - set(GEDIT_LANGUAGES))
    rows = []
    for subset, part in (("fullset", d), ("intersection", d[d["intersection_exist"].eq(True)])):
        for lang in langs:
            p = part[part["language"] == lang]
            type_rows = [
                _mean_row(p[p["task_type"] == t], ["sc", "pq", "overall"], task_type=t) for t in GEDIT_TASK_TYPES
            ]
            rows += [{"subset": subset, "language": lang, **r} for r in type_rows]
            rows.append({"subset": subset, "language": lang, **_average_row(type_rows, ["sc", "pq", "overall"])})
    return _tidy(
        rows, ["subset", "language", "task_type", "sc", "pq", "overall", "n_scored", "n_total", "coverage", "n_types"]
    )


def aggregate_imgedit(df: pd.DataFrame) -> pd.DataFrame:
    """Per-sample ImgEdit scores (task_type, score, optional ok) -> per-type means in the published order,
    then ``task_type="overall"`` = unweighted mean of the type means, with coverage. "compose" counts as hybrid."""
    _need(df, ["task_type", "score"], "aggregate_imgedit")
    d = df.assign(task_type=df["task_type"].map(lambda t: IMGEDIT_ALIASES.get(t, t)))
    unknown = sorted(set(d["task_type"]) - set(IMGEDIT_TYPES))
    if unknown:
        raise ValueError(f"aggregate_imgedit: unknown edit types {unknown}")
    d["_scored"] = _scored(d, ["score"])
    type_rows = [_mean_row(d[d["task_type"] == t], ["score"], task_type=t) for t in IMGEDIT_TYPES]
    rows = type_rows + [{**_average_row(type_rows, ["score"]), "task_type": "overall"}]
    return _tidy(rows, ["task_type", "score", "n_scored", "n_total", "coverage", "n_types"])


def _mean_row(part: pd.DataFrame, cols: list[str], **labels) -> dict:
    s = part[part["_scored"]]
    n, total = len(s), len(part)
    return {
        **labels,
        **{c: float(s[c].astype(float).mean()) if n else math.nan for c in cols},
        "n_scored": n,
        "n_total": total,
        "coverage": n / total if total else math.nan,
        "n_types": None,
    }


def _average_row(type_rows: list[dict], cols: list[str]) -> dict:
    present = [r for r in type_rows if r["n_scored"] > 0]
    n, total = sum(r["n_scored"] for r in type_rows), sum(r["n_total"] for r in type_rows)
    return {
        "task_type": "average",
        **{c: float(np.mean([r[c] for r in present])) if present else math.nan for c in cols},
        "n_scored": n,
        "n_total": total,
        "coverage": n / total if total else math.nan,
        "n_types": len(present),
    }


def _tidy(rows: list[dict], columns: list[str]) -> pd.DataFrame:
    out = pd.DataFrame(rows, columns=columns)
    return out.astype({"n_scored": "int64", "n_total": "int64", "n_types": "Int64"})


def to_markdown(df: pd.DataFrame, floatfmt: str = ".2f") -> str:
    """A GitHub pipe table (no extra dependency); NaN/None shown as 'n/a'."""

    def cell(v: object) -> str:
        if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
            return "n/a"
        return format(v, floatfmt) if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)
