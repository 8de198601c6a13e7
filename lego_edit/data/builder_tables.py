"""The Builder's instruction tables from the teacher's verdicts, mixed with the shapes world.

The kept rows (teacher workflows that passed the execution filter) become the ``gt`` table, with their workflows;
every other readable real instruction joins the ``open`` pool that stage 3 learns from without a GT. A seeded
``shapes_fraction`` of the shapes world's own gt and open tables is mixed in. Both tables have the columns of the
shapes world's instruction tables (``INSTRUCTION_SCHEMA``) plus ``origin``, so the Builder's stages read them
unchanged.
"""

from __future__ import annotations

import logging
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..imageio import atomic_write_text
from .dataset import INSTRUCTION_SCHEMA, load_instructions, write_table
from .teacher import STATUSES, verdict_schema

log = logging.getLogger(__name__)
TABLE_SCHEMA = INSTRUCTION_SCHEMA.append(pa.field("origin", pa.string()))


def _shapes_share(rows: list[dict], fraction: float, seed: int, stream: int) -> list[dict]:
    if fraction >= 1:
        return rows
    keep = np.random.default_rng([seed, stream]).random(len(rows)) < fraction
    return [r for r, k in zip(rows, keep) if k]


def _real_row(v: dict, domain: str) -> dict:
    return {
        "id": v["id"],
        "scene_id": None,
        "scene_seed": None,
        "split": v["split"],
        "domain": domain,
        "category": v["category"] or "real",
        "parts": [],
        "instruction": v["instruction"],
        "reasoning": v["reasoning"] if domain == "gt" else None,
        "workflow": v["workflow"] if domain == "gt" else None,
        "image_path": v["image_path"],
        "target_path": v["target_path"],
        "target_scene": None,
        "origin": v["origin"],
    }


def make_builder_tables(
    verdict_paths,
    shapes_gt,
    shapes_open,
    out_gt,
    out_open,
    out_verdicts,
    out_summary,
    rejected_path=None,
    shapes_fraction: float = 1.0,
    seed: int = 0,
) -> dict:
    """Write the gt and open tables, all verdicts in one table, and a summary; returns the counts."""
    verdicts = [r for p in verdict_paths for r in pq.read_table(p).to_pylist()]
    verdicts.sort(key=lambda r: r["id"])  # the chunks' order must not change the tables
    write_table(pa.Table.from_pylist(verdicts, schema=verdict_schema()), out_verdicts)
    gt = [_real_row(v, "gt") for v in verdicts if v["status"] == "kept"]
    open_ = [_real_row(v, "open") for v in verdicts if v["status"] != "kept"]
    shapes = {
        "gt": _shapes_share(load_instructions(shapes_gt), shapes_fraction, seed, 1),
        "open": _shapes_share(load_instructions(shapes_open), shapes_fraction, seed, 2),
    }
    for domain, real, out in (("gt", gt, out_gt), ("open", open_, out_open)):
        rows = [{**r, "origin": "shapes"} for r in shapes[domain]] + real
        write_table(pa.Table.from_pylist(rows, schema=TABLE_SCHEMA), out)
    rejected = pq.read_table(rejected_path).to_pylist() if rejected_path else []
    counts = {
        "statuses": Counter(v["status"] for v in verdicts),
        "gt_rows": {"real": len(gt), "shapes": len(shapes["gt"])},
        "open_rows": {"real": len(open_), "shapes": len(shapes["open"])},
        "bad_rows": len(rejected),
    }
    atomic_write_text(out_summary, summary_markdown(verdicts, rejected, counts))
    log.info("builder tables: %s", counts)
    return counts


def kept_share(verdicts: list[dict]) -> float | None:
    """Kept answers over answers received (a failed request is no answer)."""
    answered = [v for v in verdicts if v["status"] != "request_failed"]
    return sum(v["status"] == "kept" for v in answered) / len(answered) if answered else None


def summary_markdown(verdicts: list[dict], rejected: list[dict], counts: dict) -> str:
    share = kept_share(verdicts)
    lines = [
        "# Builder data from the builder sources",
        "",
        f"{len(verdicts)} readable rows asked of the teacher, {counts['bad_rows']} bad rows skipped; "
        + (f"{share:.1%} of the teacher's answers kept." if share is not None else "no answers received."),
        "",
        f"GT table: {counts['gt_rows']['real']} teacher rows + {counts['gt_rows']['shapes']} shapes-world rows; "
        f"open pool: {counts['open_rows']['real']} real + {counts['open_rows']['shapes']} shapes-world rows.",
        "",
        "| origin | " + " | ".join(STATUSES) + " |",
        "|---|" + "---:|" * len(STATUSES),
    ]
    by_origin: dict[str, Counter] = {}
    for v in verdicts:
        by_origin.setdefault(v["origin"], Counter())[v["status"]] += 1
    for origin, c in sorted(by_origin.items()):
        lines.append(f"| {origin} | " + " | ".join(str(c[s]) for s in STATUSES) + " |")
    reasons = Counter(_reason_kind(v) for v in verdicts if v["status"] not in ("kept",))
    if reasons:
        lines += ["", "Most frequent rejection reasons:", ""]
        lines += [f"- {n} x {r}" for r, n in reasons.most_common(10)]
    if rejected:
        lines += ["", "Bad rows (skipped before the teacher):", ""]
        bad = Counter(r["reason"].split(":")[0] for r in rejected)
        lines += [f"- {n} x {r}" for r, n in bad.most_common(10)]
    return "\n".join(lines) + "\n"


def _reason_kind(v: dict) -> str:
    """A reason without its row-specific numbers, so that like reasons count together."""
    reason = v["reason"] or ""
    head = reason.split(":")[0] if v["status"] in ("invalid", "unparseable", "execution_failed") else v["status"]
    return f"{v['status']}: {head}" if head != v["status"] else v["status"]
