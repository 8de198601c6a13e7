"""Figures of the data stage for the report: instruction counts, and sample scenes with their instructions."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from PIL import Image, ImageDraw


def plot_data_stats(scenes_path, instruction_paths: list, out_stats, out_samples, n_samples: int = 12) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenes = pd.read_parquet(scenes_path)
    inst = pd.concat([pd.read_parquet(p) for p in instruction_paths], ignore_index=True)
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.6))
    counts = inst.groupby(["category", "domain"]).size().unstack(fill_value=0)
    counts.plot.bar(ax=axes[0], title="instructions per category")
    inst.groupby(["split", "domain"]).size().unstack(fill_value=0).plot.bar(ax=axes[1], title="instructions per split")
    scenes["n_objects"].value_counts().sort_index().plot.bar(ax=axes[2], title="objects per scene")
    fig.tight_layout()
    Path(out_stats).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_stats, dpi=90)
    plt.close(fig)
    gt = inst[(inst["domain"] == "gt") & (inst["split"] == "train")]
    picks = gt.groupby("category").head(1).head(n_samples)
    tiles = []
    for _, r in picks.iterrows():
        src = Image.open(r["image_path"]).convert("RGB").resize((96, 96), Image.NEAREST)
        tgt = Image.open(r["target_path"]).convert("RGBA")
        bg = Image.new("RGBA", tgt.size, "white")
        tgt = Image.alpha_composite(bg, tgt).convert("RGB")
        tgt = tgt.resize((96, round(96 * tgt.height / tgt.width)), Image.NEAREST)
        tile = Image.new("RGB", (200, max(96, tgt.height) + 26), "white")
        tile.paste(src, (0, 0))
        tile.paste(tgt, (104, 0))
        d = ImageDraw.Draw(tile)
        d.text((2, max(96, tgt.height) + 2), f"{r['category']}: {r['instruction']}"[:34], fill="black")
        d.text((2, max(96, tgt.height) + 13), f"{r['instruction']}"[34:68], fill="black")
        tiles.append(tile)
    cols = 4
    rows = (len(tiles) + cols - 1) // cols
    h = max((t.height for t in tiles), default=20)
    canvas = Image.new("RGB", (cols * 204, max(1, rows) * (h + 4)), "white")
    for i, t in enumerate(tiles):
        canvas.paste(t, ((i % cols) * 204, (i // cols) * (h + 4)))
    canvas.save(out_samples)
