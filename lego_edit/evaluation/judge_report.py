"""What the report says about the judge of each table: which model judged it, under which protocol, how many
edited items it left unscored (never given a score), and a warning on the table when the judge is the stage-3
reward model; then the published rows of a benchmark, beside ours only when protocol and judge model match.

Everything is read from the per-item rows, whose chunk jobs recorded their judge (``EvaluationJudge.row_labels``).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .benchmarks import IMGEDIT_TYPES
from .judge import to_markdown
from .protocols import NOT_PUBLISHED
from .published import BENCHMARK_OF_SET, PUBLISHED_JUDGES, comparison_blockers, published_table

REWARD_MODEL_WARNING = "**Warning: judged by the stage-3 reward model**"
NOT_RECORDED = "not recorded"


def _values(rows: pd.DataFrame, column: str) -> list[str]:
    return sorted({str(v) for v in rows[column].dropna() if str(v)}) if column in rows else []


def judge_info(rows: pd.DataFrame) -> dict:
    """Who judged these rows: labels, endpoint model names, protocol, and whether it is the reward model."""
    recorded = "judge_is_reward_model" in rows and rows["judge_is_reward_model"].notna().any()
    return {
        "judge": "; ".join(_values(rows, "judge")) or NOT_RECORDED,
        "models": set(_values(rows, "judge_model")),
        "protocol": "; ".join(_values(rows, "judge_protocol")) or NOT_PUBLISHED,
        "published": bool(
            recorded
            and "judge_protocol_published" in rows
            and rows["judge_protocol_published"].fillna(False).astype(bool).all()
        ),
        "is_reward_model": bool(recorded and rows["judge_is_reward_model"].fillna(False).astype(bool).any()),
        "reward_model": "; ".join(_values(rows, "reward_model")) or NOT_RECORDED,
    }


def unscored(rows: pd.DataFrame, columns: list[str]) -> tuple[int, int]:
    """(edited items the judge left without a score in any of ``columns``, edited items)."""
    edited = rows["executed"].fillna(False).astype(bool) if "executed" in rows else pd.Series(False, rows.index)
    missing = pd.Series(False, index=rows.index)
    for column in columns:
        values = pd.to_numeric(rows[column], errors="coerce") if column in rows else pd.Series(np.nan, rows.index)
        missing |= values.isna()
    return int((edited & missing).sum()), int(edited.sum())


def warning_line(reward_model: str) -> str:
    return (
        f"{REWARD_MODEL_WARNING} ({reward_model}): stage 3 was optimised against this judge, so the stage-3 "
        "row is measured by what it was trained to please. Set `evaluation.judge` to another model."
    )


def judge_note(rows: pd.DataFrame, score_columns: list[str], what: str = "this table") -> list[str]:
    """The lines under a judged table: judge, protocol, unscored count, and the warning where it applies."""
    info = judge_info(rows)
    missing, edited = unscored(rows, score_columns)
    lines = [
        f"Judge of {what}: {info['judge']}; protocol: {info['protocol']}. Unscored by the judge: {missing} of "
        f"{edited} edited items (left out of the means, never given a score)."
    ]
    if info["is_reward_model"]:
        lines.append(warning_line(info["reward_model"]))
    return lines


def shapes_note(df: pd.DataFrame) -> list[str]:
    """The lines under the shapes-split tables: the reward model's column, and the judge's (or the warning)."""
    rows = df[df["set"].isin(["shapes_gt", "shapes_open"])] if "set" in df else df.iloc[:0]
    if rows.empty:
        return ["No shapes-split rows were evaluated."]
    info = judge_info(rows)
    missing, edited = unscored(rows, ["critic"])
    lines = [
        f"`reward_model_score`: the stage-3 reward model ({info['reward_model']}), what stage 3 was trained "
        f"to please, not a measure of quality (a failed item scores 0); unscored: {missing} of {edited} edited "
        "items."
    ]
    if "judge_score" in rows:
        missing, edited = unscored(rows, ["judge_score"])
        lines.append(
            f"`judge_score`: judged by {info['judge']}, protocol: {info['protocol']} (a failed item scores "
            f"0); unscored by the judge: {missing} of {edited} edited items (left out, never given a score)."
        )
    elif info["is_reward_model"] or info["judge"] == NOT_RECORDED:
        lines.append(
            warning_line(info["reward_model"]) + " No other judge scored these splits; the GT figures "
            "(success, PSNR, region IoU) are the measure here."
        )
    return lines


def judges_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per evaluation set: its judge, protocol, whether that is the reward model, unscored items."""
    score_columns = {"gedit": ["sc", "pq"], "imgedit": ["imgedit_score"]}
    out = []
    for set_name in sorted(set(df["set"])) if "set" in df else []:
        rows = df[df["set"] == set_name]
        separate = "judge_score" in rows and rows["judge_score"].notna().any()
        columns = score_columns.get(set_name, ["judge_score"] if separate else ["critic"])
        if set_name == "imgedit" and "imgedit_score" not in rows:
            columns = ["critic"]  # a local critic: the rubric score is its proxy
        info = judge_info(rows)
        missing, edited = unscored(rows, columns)
        out.append(
            {
                "set": set_name,
                "judge": info["judge"],
                "protocol": info["protocol"],
                "judge_is_reward_model": info["is_reward_model"],
                "edited": edited,
                "unscored": missing,
                "warning": warning_line(info["reward_model"]).replace("**", "") if info["is_reward_model"] else "",
            }
        )
    return pd.DataFrame(
        out, columns=["set", "judge", "protocol", "judge_is_reward_model", "edited", "unscored", "warning"]
    )


def _ours_gedit(table: pd.DataFrame) -> pd.DataFrame:
    rows = table[(table["subset"] == "fullset") & (table["language"] == "en") & (table["task_type"] == "average")]
    return pd.DataFrame(
        {
            "model": "ours: " + rows["builder"],
            "sc": rows["sc"],
            "pq": rows["pq"],
            "overall": rows["overall"],
            "coverage": rows["coverage"],
            "source": "this run",
        }
    )


def _ours_imgedit(table: pd.DataFrame) -> pd.DataFrame:
    wide = table.pivot_table(index="builder", columns="task_type", values="score", aggfunc="first", sort=False)
    wide = wide.reindex(columns=list(IMGEDIT_TYPES) + ["overall"])
    coverage = table[table["task_type"] == "overall"].set_index("builder")["coverage"]
    return (
        wide.assign(coverage=coverage, source="this run")
        .rename_axis("model")
        .reset_index()
        .assign(model=lambda d: "ours: " + d["model"])
    )


def _published_wide(benchmark: str) -> pd.DataFrame:
    rows = published_table(benchmark)
    if benchmark == "gedit_en":
        return rows[["model", "sc", "pq", "overall", "source"]].assign(coverage=math.nan)
    wide = rows.pivot_table(index="model", columns="task_type", values="score", aggfunc="first", sort=False)
    sources = rows.groupby("model", sort=False)["source"].agg(lambda s: ", ".join(dict.fromkeys(s)))
    return (
        wide.reindex(columns=list(IMGEDIT_TYPES) + ["overall"])
        .assign(coverage=math.nan, source=sources)
        .rename_axis("model")
        .reset_index()
    )


def published_section(set_name: str, table: pd.DataFrame, rows: pd.DataFrame) -> list[str]:
    """The published rows of a benchmark: in one table with ours when comparable, else apart with the reasons."""
    benchmark = BENCHMARK_OF_SET[set_name]
    info = judge_info(rows)
    languages = set(rows["language"]) if set_name == "gedit" and "language" in rows else None
    blockers = comparison_blockers(benchmark, info["models"], info["published"], languages)
    if not blockers:
        ours = _ours_gedit(table) if set_name == "gedit" else _ours_imgedit(table)
        both = pd.concat([ours, _published_wide(benchmark)], ignore_index=True)
        return [
            f"## {benchmark}: ours beside the published rows (same protocol, judge {PUBLISHED_JUDGES[benchmark]})",
            "",
            to_markdown(both, ".2f"),
        ]
    return [
        f"## Published scores ({benchmark}), NOT comparable with the table above",
        "",
        "Not comparable: " + "; ".join(blockers) + ".",
        "",
        to_markdown(published_table(benchmark), ".2f"),
    ]
