"""The bricks' held-out figures in one table (markdown + JSON), read from each trained model's metrics.json."""

from __future__ import annotations

import json
from pathlib import Path

from ..imageio import atomic_write_json, atomic_write_text


def _load(path: str | Path) -> dict:
    p = Path(path) / "metrics.json"
    return json.loads(p.read_text()) if p.is_file() else {}


def _fmt(v, digits=3) -> str:
    return "-" if v is None else f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def summarize(segmentation, placement, captioning, edit_base, edit_loras: list, critic, out_md, out_json) -> dict:
    seg, pla, cap, base, cri = (_load(p) for p in (segmentation, placement, captioning, edit_base, critic))
    loras = {Path(p).name: _load(p) for p in edit_loras}
    rows = [
        ("RES", "mask IoU", seg.get("iou_RES"), "target >= 0.8"),
        (
            "RES",
            "finds the referred object (IoU >= 0.5)",
            seg.get("hit_RES"),
            "a miss sends the workflow's edit to the wrong object",
        ),
        ("SOS", "mask IoU", seg.get("iou_SOS"), "target >= 0.8"),
        ("MASK-SEG", "mask IoU", seg.get("iou_MASK-SEG"), ""),
        ("ADD-PRED", "box IoU", pla.get("box_iou"), f"parse rate {_fmt(pla.get('parse_rate'))}"),
        ("CMI-PRED", "caption token F1", cap.get("token_f1"), f"exact match {_fmt(cap.get('exact_match'))}"),
        (
            "critic",
            "ranks GT above a wrong edit",
            cri.get("ranking_accuracy"),
            "target >= 0.9; same category "
            + _fmt(cri.get("ranking_accuracy/same_category"))
            + ", other category "
            + _fmt(cri.get("ranking_accuracy/other_category")),
        ),
        (
            "critic",
            "orders the bricks' held-out outputs as PSNR does",
            cri.get("executed_agreement"),
            f"{cri.get('executed_pairs', 0)} pairs more than 1 dB apart",
        ),
    ]
    lines = ["| brick | metric | value | note |", "|---|---|---|---|"]
    lines += [f"| {b} | {m} | {_fmt(v)} | {n} |" for b, m, v, n in rows]
    lines += [
        "",
        "Edit bricks, PSNR (dB) vs the GT target on held-out samples, inside the mask (whole-image bricks: "
        "the image) and outside it. *start*: what a refining brick starts from (INPAINT: FASTINPAINT's fill; "
        "POSE: the geometrically turned object).",
        "",
        "| brick | LoRA | base only | copy input | FASTINPAINT | start | outside: LoRA | outside: base | "
        "beats copy | beats FASTINPAINT | at or above its start |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    edit_rows = {}
    for brick, m in sorted(loras.items()):
        lora_in = m.get(f"{brick}/psnr_in_model")
        r = {
            "lora": lora_in,
            "base": base.get(f"{brick}/psnr_in_model"),
            "copy": m.get(f"{brick}/psnr_in_copy"),
            "fastinpaint": m.get(f"{brick}/psnr_in_fastinpaint"),
            "start": m.get(f"{brick}/psnr_in_start"),
            "outside": m.get(f"{brick}/psnr_out_model"),
            "outside_base": base.get(f"{brick}/psnr_out_model"),
            "n": m.get(f"{brick}/n"),
        }
        for name in ("copy", "fastinpaint", "start"):
            r[f"beats_{name}"] = (
                None
                if lora_in is None or r[name] is None
                else lora_in >= r[name]
                if (name == "start")
                else lora_in > r[name]
            )
        edit_rows[brick] = r
        lines.append(
            f"| {brick} | {_fmt(r['lora'], 2)} | {_fmt(r['base'], 2)} | {_fmt(r['copy'], 2)} | "
            f"{_fmt(r['fastinpaint'], 2)} | {_fmt(r['start'], 2)} | {_fmt(r['outside'], 2)} | "
            f"{_fmt(r['outside_base'], 2)} | {r['beats_copy']} | {r['beats_fastinpaint']} | "
            f"{'-' if r['beats_start'] is None else r['beats_start']} |"
        )
    timing = {
        name: m.get("train_seconds")
        for name, m in [("segmentation", seg), ("edit_base", base)] + [(f"edit_lora/{b}", m) for b, m in loras.items()]
    }
    summary = {
        "rows": [{"brick": b, "metric": m, "value": v, "note": n} for b, m, v, n in rows],
        "edit": edit_rows,
        "train_seconds": timing,
    }
    atomic_write_text(out_md, "\n".join(lines) + "\n")
    atomic_write_json(out_json, summary)
    return summary
