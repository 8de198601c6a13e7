"""Evaluation tables and before/after grids from the per-item rows that the chunk jobs wrote."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from PIL import Image, ImageDraw

from ..imageio import atomic_write_text, load_image
from ..workflow.values import rgb
from .judge import aggregate_gedit, aggregate_imgedit, to_markdown
from .judge_report import judge_note, judges_table, published_section, shapes_note
from .metrics import ordering_agreement

BUILDER_ORDER = ["base", "sft", "grpo_gt", "grpo_critic", "api", "oracle"]


def load_rows(paths: list[str | Path]) -> pd.DataFrame:
    frames = [pq.read_table(p).to_pandas() for p in paths if Path(p).is_file()]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _mean(s: pd.Series) -> float:
    v = pd.to_numeric(s, errors="coerce").dropna()
    return float(v.mean()) if len(v) else math.nan


def _order(builders) -> list[str]:
    return sorted(set(builders), key=lambda b: (BUILDER_ORDER.index(b) if b in BUILDER_ORDER else 99, b))


SHAPES_SPLITS = {"shapes_gt": "gt", "shapes_open": "open"}
STAGES = ["base", "sft", "grpo_gt", "grpo_critic"]  # each stage is compared with the one before it
REWARD_MODEL = "reward_model_score"  # the critic's score: what stage 3 optimised, never a measure of quality


def _rate(p: pd.DataFrame, col: str) -> float:
    return _mean(p[col].astype(float)) if col in p and len(p) else math.nan


def _scored(p: pd.DataFrame, col: str) -> float:
    return _mean(p[col]) if col in p else math.nan


def _judged(p: pd.DataFrame, col: str) -> tuple[float, int]:
    """(mean score, unscored count): a failed item scores 0; an edited item the judge left unscored is left out
    and counted, never given a score."""
    if col not in p or not len(p):
        return math.nan, 0
    edited = p["executed"].fillna(False).astype(bool)
    values = pd.to_numeric(p[col], errors="coerce")
    kept = ~edited | values.notna()
    return _mean(values.where(edited, 0.0)[kept]), int((edited & values.isna()).sum())


def builder_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per Builder. Both shapes-world splits against their exact GT targets: edit success, PSNR and region
    IoU (failed items count as the unedited input); the GT split also parse / valid / executable rates, brick F1
    and exact match against the GT workflow; each split the reward model's mean score (a failed item scores 0)."""
    rows = []
    for b in _order(df["builder"]):
        row = {"builder": b}
        for set_name, tag in SHAPES_SPLITS.items():
            p = df[(df["builder"] == b) & (df["set"] == set_name)]
            figures = {
                "n": len(p),
                "valid_rate": _rate(p, "valid"),
                "success": _rate(p, "success"),
                "psnr": _scored(p, "psnr"),
                "region_iou": _scored(p, "region_iou"),
            }
            if tag == "gt":
                figures.update(
                    parse_rate=_rate(p, "parsed"),
                    executable_rate=_rate(p, "executed"),
                    brick_f1=_scored(p, "brick_f1"),
                    exact_match=_rate(p, "exact_match"),
                )
            figures[REWARD_MODEL], figures["reward_model_unscored"] = _judged(p, "critic")
            if "judge_score" in df:  # a judge other than the reward model scored the splits too
                figures["judge_score"], figures["judge_unscored"] = _judged(p, "judge_score")
            row.update({f"{tag}_{k}": v for k, v in figures.items()})
        rows.append(row)
    return pd.DataFrame(rows)


def category_table(df: pd.DataFrame, set_name: str = "shapes_gt") -> pd.DataFrame:
    """Per Builder and category of one split: valid and executable rate, edit success, PSNR and region IoU against
    the GT target, and the reward model's score."""
    d = df[df["set"] == set_name]
    rows = []
    for b in _order(d["builder"]):
        for cat in sorted(set(d["category"])):
            p = d[(d["builder"] == b) & (d["category"] == cat)]
            row = {
                "builder": b,
                "category": cat,
                "n": len(p),
                "valid": _rate(p, "valid"),
                "executable": _rate(p, "executed"),
                "success": _rate(p, "success"),
                "psnr": _scored(p, "psnr"),
                "region_iou": _scored(p, "region_iou"),
                REWARD_MODEL: _judged(p, "critic")[0],
            }
            if "judge_score" in d:
                row["judge_score"] = _judged(p, "judge_score")[0]
            rows.append(row)
    return pd.DataFrame(rows)


def paired_bootstrap(diff: np.ndarray, resamples: int = 10_000, seed: int = 0) -> tuple[float, float, float]:
    """Mean of per-item differences and its 95% percentile-bootstrap interval (items resampled with replacement)."""
    diff = np.asarray(diff, dtype=np.float64)
    if len(diff) == 0:
        return math.nan, math.nan, math.nan
    idx = np.random.default_rng(seed).integers(0, len(diff), size=(resamples, len(diff)))
    means = diff[idx].mean(axis=1)
    return float(diff.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


STAGE_FIGURES = ("success", "psnr", "region_iou", "exact_match")


def stage_table(df: pd.DataFrame, resamples: int = 10_000) -> pd.DataFrame:
    """Each Builder stage against the one before it, on each shapes split: the mean per-item difference in edit
    success, PSNR, region IoU (and exact match on the GT split), with a paired bootstrap 95% CI over the items
    both rows edited. Region IoU pairs only items whose target changes something."""
    rows = []
    for set_name in SHAPES_SPLITS:
        d = df[df["set"] == set_name]
        present = [b for b in STAGES if b in set(d["builder"])]
        for before, after in zip(present, present[1:]):
            a = d[d["builder"] == before].set_index("id")
            b = d[d["builder"] == after].set_index("id")
            ids = a.index.intersection(b.index)
            for figure in STAGE_FIGURES:
                if figure not in a or figure not in b:
                    continue
                x = pd.to_numeric(a.loc[ids, figure].astype(float), errors="coerce")
                y = pd.to_numeric(b.loc[ids, figure].astype(float), errors="coerce")
                ok = x.notna() & y.notna()
                if not ok.any():
                    continue
                mean, lo, hi = paired_bootstrap((y[ok] - x[ok]).to_numpy(), resamples)
                rows.append(
                    {
                        "set": set_name,
                        "stage": after,
                        "vs": before,
                        "figure": figure,
                        "n": int(ok.sum()),
                        "before": float(x[ok].mean()),
                        "after": float(y[ok].mean()),
                        "difference": mean,
                        "ci_low": lo,
                        "ci_high": hi,
                    }
                )
    return pd.DataFrame(
        rows, columns=["set", "stage", "vs", "figure", "n", "before", "after", "difference", "ci_low", "ci_high"]
    )


def reward_model_agreement(df: pd.DataFrame, min_db: float = 1.0) -> pd.DataFrame:
    """How often the reward model orders two executed outputs for the same instruction (from different rows) the
    way their PSNR to the GT target does, over the pairs whose PSNR differs by more than ``min_db`` (a tie in the
    reward model's score counts as a disagreement)."""
    rows = []
    for set_name in SHAPES_SPLITS:
        d = df[(df["set"] == set_name) & df["executed"].astype(bool)]
        if "critic" not in d or "psnr" not in d:
            continue
        d = d[pd.to_numeric(d["critic"], errors="coerce").notna()]
        agree = pairs = 0
        for _, g in d.groupby("id"):
            a, n = ordering_agreement(
                pd.to_numeric(g["psnr"], errors="coerce").to_numpy(),
                pd.to_numeric(g["critic"], errors="coerce").to_numpy(),
                min_db,
            )
            agree, pairs = agree + a, pairs + n
        rows.append({"set": set_name, "pairs": pairs, "agreement": agree / pairs if pairs else math.nan})
    return pd.DataFrame(rows, columns=["set", "pairs", "agreement"])


def benchmark_tables(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """GEdit-Bench (SC/PQ/O per task type and language) and ImgEdit-Bench (per type, overall) per Builder.

    A failed item counts as scored 0 (the published protocols score every sample's output; a workflow that did
    not run produced no edit); an unreadable judge answer leaves the item unscored (``n_unscored``, coverage < 1)."""
    out = {}
    for name in ("gedit", "imgedit"):
        d = df[df["set"] == name]
        frames = []
        for b in _order(d["builder"]):
            p = d[d["builder"] == b].copy()
            failed = ~p["executed"].astype(bool)
            if name == "gedit":
                sc = pd.to_numeric(p["sc"] if "sc" in p else pd.Series(np.nan, index=p.index), errors="coerce")
                pq = pd.to_numeric(p["pq"] if "pq" in p else pd.Series(np.nan, index=p.index), errors="coerce")
                p["sc"] = np.where(failed, 0.0, sc)
                # A critic that gives no PQ (the local one) leaves PQ unscored for every item, failed ones too.
                p["pq"] = np.where(failed & pq.notna().any(), 0.0, pq)
                p["task_type"] = p["category"]
                p["intersection_exist"] = p.get("x_intersection_exist", False)
                agg = aggregate_gedit(p[["task_type", "language", "sc", "pq", "intersection_exist"]])
            else:
                judge = pd.to_numeric(p.get("imgedit_score"), errors="coerce") if "imgedit_score" in p else None
                proxy = 1 + 4 * pd.to_numeric(p.get("critic"), errors="coerce")
                p["score"] = np.where(failed, 1.0, judge if judge is not None else proxy)
                p["task_type"] = p["category"]
                agg = aggregate_imgedit(p[["task_type", "score"]])
            frames.append(agg.assign(builder=b, n_unscored=agg["n_total"] - agg["n_scored"]))
        if frames:
            out[name] = pd.concat(frames, ignore_index=True)
    return out


def write_tables(df: pd.DataFrame, out_dir: str | Path) -> dict[str, Path]:
    from .edit_success import DEFINITION

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    tables = {
        "builders": builder_table(df),
        "categories": pd.concat([category_table(df, s).assign(set=s) for s in SHAPES_SPLITS], ignore_index=True),
        "stages": stage_table(df),
        "reward_model": reward_model_agreement(df),
        "judges": judges_table(df),
    }
    text = [
        "# Builders on the shapes-world test splits",
        "",
        f"Measured against the exact GT targets; {DEFINITION}.",
        "",
        *shapes_note(df),
        "",
        to_markdown(tables["builders"], ".3f"),
        "",
        "# Each stage against the one before (paired bootstrap 95% CI over the same items)",
        "",
        to_markdown(tables["stages"], ".3f"),
        "",
        "# Per category",
        "",
        to_markdown(tables["categories"], ".3f"),
        "",
        "# Does the reward model order outputs as the GT does? (pairs of outputs for one instruction whose "
        "PSNR differs by more than 1 dB)",
        "",
        to_markdown(tables["reward_model"], ".3f"),
        "",
        "# Who judged each set",
        "",
        to_markdown(tables["judges"], ".3f"),
    ]
    for name, table in benchmark_tables(df).items():
        rows = df[df["set"] == name]
        score_columns = ["sc", "pq"] if name == "gedit" else ["imgedit_score" if "imgedit_score" in rows else "critic"]
        text += [
            "",
            f"# {name}",
            "",
            *judge_note(rows, score_columns, name),
            "",
            to_markdown(table, ".3f"),
            "",
            *published_section(name, table, rows),
        ]
    paths["markdown"] = out_dir / "tables.md"
    atomic_write_text(paths["markdown"], "\n".join(text) + "\n")
    for name, table in tables.items():
        paths[name] = out_dir / f"{name}.csv"
        table.to_csv(paths[name], index=False)
    return paths


def _label(img: np.ndarray, text: str, width: int = 96) -> Image.Image:
    tile = Image.fromarray(rgb(img)[:, :, :3]).resize(
        (width, round(width * img.shape[0] / img.shape[1])), Image.NEAREST
    )
    canvas = Image.new("RGB", (width, tile.height + 12), "white")
    canvas.paste(tile, (0, 12))
    ImageDraw.Draw(canvas).text((2, 0), text[:16], fill="black")
    return canvas


def grid(df: pd.DataFrame, items: dict[str, dict], category: str, out_png: str | Path, per_category: int = 2) -> None:
    """Rows = samples of a category; columns = input, each Builder's output, GT target; instruction below."""
    d = df[(df["set"] == "shapes_gt") & (df["category"] == category)]
    ids = sorted(set(d["id"]))[:per_category]
    builders = _order(d["builder"])
    rows = []
    for iid in ids:
        info = items[iid]
        tiles = [_label(load_image(info["image_path"]), "input")]
        for b in builders:
            r = d[(d["id"] == iid) & (d["builder"] == b)]
            out = r["output"].iloc[0] if len(r) and isinstance(r["output"].iloc[0], str) else None
            img = load_image(out) if out else np.full((64, 64, 3), 200, np.uint8)
            tiles.append(_label(img, b if out else f"{b}: failed"))
        tiles.append(_label(load_image(info["target_path"], min_side=1), "GT"))
        h = max(t.height for t in tiles)
        row = Image.new("RGB", (sum(t.width for t in tiles), h + 14), "white")
        x = 0
        for t in tiles:
            row.paste(t, (x, 0))
            x += t.width
        ImageDraw.Draw(row).text((2, h + 1), info["instruction"][:90], fill="black")
        rows.append(row)
    if not rows:
        rows = [Image.new("RGB", (200, 20), "white")]
    canvas = Image.new("RGB", (max(r.width for r in rows), sum(r.height for r in rows)), "white")
    y = 0
    for r in rows:
        canvas.paste(r, (0, y))
        y += r.height
    Path(out_png).parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out_png)


def summarize_evaluation(chunk_paths: list, gt_table, out_dir, items_path, grids_dir, per_category: int = 2) -> None:
    import pyarrow as pa

    from ..data.dataset import load_instructions, write_table

    df = load_rows(chunk_paths)
    write_table(pa.Table.from_pandas(df, preserve_index=False), items_path)
    write_tables(df, out_dir)
    items = {r["id"]: r for r in load_instructions(gt_table)}
    grids_dir = Path(grids_dir)
    grids_dir.mkdir(parents=True, exist_ok=True)
    for category in sorted(set(df.loc[df["set"] == "shapes_gt", "category"])):
        grid(df, items, category, grids_dir / f"{category}.png", per_category)
