"""Evaluation tables and before/after grids from the per-item rows that the chunk jobs wrote."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from PIL import Image, ImageDraw

from ..imageio import atomic_write_text, load_image
from ..workflow.values import rgb
from .judge import aggregate_gedit, aggregate_imgedit, published_table, to_markdown

BUILDER_ORDER = ["base", "sft", "grpo_gt", "grpo_critic", "api", "oracle"]


def load_rows(paths: list[str | Path]) -> pd.DataFrame:
    frames = [pq.read_table(p).to_pandas() for p in paths if Path(p).is_file()]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _mean(s: pd.Series) -> float:
    v = pd.to_numeric(s, errors="coerce").dropna()
    return float(v.mean()) if len(v) else math.nan


def _order(builders) -> list[str]:
    return sorted(set(builders), key=lambda b: (BUILDER_ORDER.index(b) if b in BUILDER_ORDER else 99, b))


def builder_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per Builder: GT test split (parse, valid, executable, brick F1, exact match, PSNR, SSIM) and the
    open-domain test split (valid rate, mean critic score of the executed result)."""
    rows = []
    for b in _order(df["builder"]):
        gt = df[(df["builder"] == b) & (df["set"] == "shapes_gt")]
        op = df[(df["builder"] == b) & (df["set"] == "shapes_open")]
        rows.append({
            "builder": b, "n_gt": len(gt), "parse_rate": _mean(gt["parsed"].astype(float)) if len(gt) else math.nan,
            "valid_rate": _mean(gt["valid"].astype(float)) if len(gt) else math.nan,
            "executable_rate": _mean(gt["executed"].astype(float)) if len(gt) else math.nan,
            "brick_f1": _mean(gt["brick_f1"]) if "brick_f1" in gt else math.nan,
            "exact_match": _mean(gt["exact_match"].astype(float)) if "exact_match" in gt and len(gt) else math.nan,
            "psnr": _mean(gt["psnr"]) if "psnr" in gt else math.nan,
            "ssim": _mean(gt["ssim"]) if "ssim" in gt else math.nan,
            "n_open": len(op), "open_valid_rate": _mean(op["valid"].astype(float)) if len(op) else math.nan,
            "open_critic": _mean(op["critic"].fillna(0.0)) if "critic" in op and len(op) else math.nan,
        })
    return pd.DataFrame(rows)


def category_table(df: pd.DataFrame, set_name: str = "shapes_gt") -> pd.DataFrame:
    """Per Builder and category: valid and executable rate, PSNR, SSIM, edited-region IoU, critic score."""
    d = df[df["set"] == set_name]
    rows = []
    for b in _order(d["builder"]):
        for cat in sorted(set(d["category"])):
            p = d[(d["builder"] == b) & (d["category"] == cat)]
            rows.append({"builder": b, "category": cat, "n": len(p), "valid": _mean(p["valid"].astype(float)),
                         "executable": _mean(p["executed"].astype(float)),
                         "psnr": _mean(p["psnr"]) if "psnr" in p else math.nan,
                         "ssim": _mean(p["ssim"]) if "ssim" in p else math.nan,
                         "region_iou": _mean(p["region_iou"]) if "region_iou" in p else math.nan,
                         "critic": _mean(p["critic"].fillna(0.0)) if "critic" in p else math.nan})
    return pd.DataFrame(rows)


def benchmark_tables(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """GEdit-Bench (SC/PQ/O per task type and language) and ImgEdit-Bench (per type, overall) per Builder.

    A failed item counts as scored 0 (the published protocols score every sample's output; a workflow that did
    not run produced no edit); an unreadable judge answer leaves the item unscored (coverage < 1)."""
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
            frames.append(agg.assign(builder=b))
        if frames:
            out[name] = pd.concat(frames, ignore_index=True)
    return out


def write_tables(df: pd.DataFrame, out_dir: str | Path) -> dict[str, Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    bt, ct = builder_table(df), category_table(df)
    text = ["# Builders on the shapes-world test split", "", to_markdown(bt, ".3f"), "",
            "# Per category (GT test split)", "", to_markdown(ct, ".3f")]
    for name, table in benchmark_tables(df).items():
        text += ["", f"# {name}", "", to_markdown(table, ".3f"), "", f"Published ({name}):", "",
                 to_markdown(published_table(name if name == "imgedit" else "gedit_en"), ".2f")]
    paths["markdown"] = out_dir / "tables.md"
    atomic_write_text(paths["markdown"], "\n".join(text) + "\n")
    for name, table in (("builders", bt), ("categories", ct)):
        paths[name] = out_dir / f"{name}.csv"
        table.to_csv(paths[name], index=False)
    return paths


def _label(img: np.ndarray, text: str, width: int = 96) -> Image.Image:
    tile = Image.fromarray(rgb(img)[:, :, :3]).resize((width, round(width * img.shape[0] / img.shape[1])),
                                                      Image.NEAREST)
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


def workflow_of(answer: str | None) -> str:
    try:
        from ..workflow import parse_workflow

        return json.dumps(parse_workflow(answer).to_dict()) if answer else ""
    except Exception:
        return ""


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
