"""Published benchmark scores (ANCHORS.md) and when ours may stand beside them.

A published row is comparable with ours only when both were judged under the benchmark's published protocol (its
prompts, image order and answer parsing, read from the user's checkout) and by the same judge model; otherwise the
report prints the published rows in a separate, labelled table.
"""

from __future__ import annotations

import pandas as pd

_LEGO_IMGEDIT = {
    "add": 3.67,
    "adjust": 3.82,
    "extract": 2.47,
    "replace": 3.22,
    "remove": 3.39,
    "background": 4.47,
    "style": 4.01,
    "hybrid": 3.18,
    "action": 3.24,
}
PUBLISHED_SCORES: dict[str, list[dict]] = {
    "imgedit": [
        {
            "model": "Lego-Edit",
            "task_type": t,
            "score": s,
            "source": "paper" if t == "hybrid" else "later report",
            "verified": True,
        }
        for t, s in _LEGO_IMGEDIT.items()
    ]
    + [{"model": "Lego-Edit", "task_type": "overall", "score": 3.50, "source": "paper", "verified": True}]
    + [
        {"model": m, "task_type": "overall", "score": s, "source": "published", "verified": True}
        for m, s in (
            ("ICEdit", 3.05),
            ("Step1X-Edit", 3.06),
            ("BAGEL", 3.42),
            ("OmniGen2", 3.44),
            ("FLUX.1-Kontext-dev", 3.71),
            ("GPT-4o-Image", 4.20),
            ("Qwen-Image-Edit", 4.27),
        )
    ],
    "gedit_en": [
        {
            "model": "Lego-Edit",
            "sc": 5.99,
            "pq": 7.45,
            "overall": 6.64,
            "source": "unverified, secondary source",
            "verified": False,
        }
    ]
    + [
        {"model": m, "sc": sc, "pq": pq, "overall": o, "source": "published", "verified": True}
        for m, sc, pq, o in (
            ("Step1X-Edit v1.0", 7.09, 6.76, 6.70),
            ("BAGEL", 7.36, 6.83, 6.52),
            ("FLUX.1-Kontext-dev", 6.52, 7.38, 6.00),
            ("GPT-4o", 7.85, 7.62, 7.53),
            ("Qwen-Image-Edit", 8.00, 7.86, 7.56),
        )
    ],
}
# The judge model behind the published rows: GEdit-Bench's scorer (Step1X-Edit's test_gedit_score.py, backbone
# gpt4o) calls "gpt-4.1"; ImgEdit's basic_bench.py calls "gpt-4o".
PUBLISHED_JUDGES = {"gedit_en": "gpt-4.1", "imgedit": "gpt-4o"}
BENCHMARK_OF_SET = {"gedit": "gedit_en", "imgedit": "imgedit"}


def published_table(benchmark: str) -> pd.DataFrame:
    """The published comparison rows for "imgedit" or "gedit_en" as a DataFrame, with the judge model behind them."""
    if benchmark not in PUBLISHED_SCORES:
        raise ValueError(f"no published scores for {benchmark!r}; have {sorted(PUBLISHED_SCORES)}")
    return pd.DataFrame(PUBLISHED_SCORES[benchmark]).assign(judge=PUBLISHED_JUDGES[benchmark])


def same_judge_model(ours: str, published: str) -> bool:
    """The same model name, or a dated snapshot of it ("gpt-4o-2024-08-06" is gpt-4o; "gpt-4o-mini" is not)."""
    ours, published = ours.strip().lower(), published.strip().lower()
    snapshot = ours[len(published) + 1 :] if ours.startswith(published + "-") else ""
    return ours == published or snapshot.replace("-", "").isdigit()


def comparison_blockers(
    benchmark: str, judge_models: set[str], published_protocol: bool, languages: set[str] | None = None
) -> list[str]:
    """Why our rows of ``benchmark`` cannot stand beside the published ones (empty: they can)."""
    expected = PUBLISHED_JUDGES[benchmark]
    reasons = []
    if not published_protocol:
        reasons.append(
            "ours were not judged under the published protocol (no checkout of the benchmark's "
            "evaluation code configured in evaluation.protocols)"
        )
    models = sorted(m for m in judge_models if m)
    if not models:
        reasons.append(f"ours were judged by a local critic, the published rows by {expected}")
    elif len(models) > 1 or not same_judge_model(models[0], expected):
        reasons.append(f"ours were judged by {', '.join(models)}, the published rows by {expected}")
    if benchmark == "gedit_en" and languages is not None and "en" not in languages:
        reasons.append("the published rows are GEdit-Bench-EN; this run judged no English rows")
    return reasons
