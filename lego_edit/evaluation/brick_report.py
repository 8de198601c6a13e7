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
        ("SOS", "mask IoU", seg.get("iou_SOS"), "target >= 0.8"),
        ("MASK-SEG", "mask IoU", seg.get("iou_MASK-SEG"), ""),
        ("ADD-PRED", "box IoU", pla.get("box_iou"), f"parse rate {_fmt(pla.get('parse_rate'))}"),
        ("CMI-PRED", "caption token F1", cap.get("token_f1"), f"exact match {_fmt(cap.get('exact_match'))}"),
        ("critic", "ranks GT above a wrong edit", cri.get("ranking_accuracy"), "target >= 0.9"),
    ]
    lines = ["| brick | metric | value | note |", "|---|---|---|---|"]
    lines += [f"| {b} | {m} | {_fmt(v)} | {n} |" for b, m, v, n in rows]
    lines += ["", "Edit bricks, PSNR (dB) vs the GT target on held-out samples:", "",
              "| brick | inside mask: LoRA | base only | copy input | FASTINPAINT | outside mask | beats copy |",
              "|---|---|---|---|---|---|---|"]
    edit_rows = {}
    for brick, m in sorted(loras.items()):
        lora_in = m.get(f"{brick}/psnr_in_model")
        copy_in = m.get(f"{brick}/psnr_in_copy")
        r = {"lora": lora_in, "base": base.get(f"{brick}/psnr_in_model"), "copy": copy_in,
             "fastinpaint": m.get(f"{brick}/psnr_in_fastinpaint"), "outside": m.get(f"{brick}/psnr_out_model"),
             "n": m.get(f"{brick}/n")}
        r["beats_copy"] = None if lora_in is None or copy_in is None else lora_in > copy_in
        edit_rows[brick] = r
        lines.append(f"| {brick} | {_fmt(r['lora'], 2)} | {_fmt(r['base'], 2)} | {_fmt(r['copy'], 2)} | "
                     f"{_fmt(r['fastinpaint'], 2)} | {_fmt(r['outside'], 2)} | {r['beats_copy']} |")
    timing = {name: m.get("train_seconds") for name, m in
              [("segmentation", seg), ("edit_base", base)] + [(f"edit_lora/{b}", m) for b, m in loras.items()]}
    summary = {"rows": [{"brick": b, "metric": m, "value": v, "note": n} for b, m, v, n in rows],
               "edit": edit_rows, "train_seconds": timing}
    atomic_write_text(out_md, "\n".join(lines) + "\n")
    atomic_write_json(out_json, summary)
    return summary
