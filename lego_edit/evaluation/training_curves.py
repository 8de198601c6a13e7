"""The report's training curves, drawn from the ``metrics.jsonl`` a training stage leaves in its model folder.

Training writes numbers only; the report rule draws them, so restyling a plot reruns that rule, not the training.
A critic ensemble's folder holds one ``metrics.jsonl`` per member (``member-<k>/``): each member is a line.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..layout import member_folders

# The curves worth a panel, in panel order, when a stage logged them (GRPO logs reward terms, the critic its
# pair accuracy); a stage that logged none of them gets its loss.
PANEL_KEYS = ("loss", "pair_accuracy")
GRPO_KEYS = ("reward", "frac_reward_zero_std", "kl")
PANELS_PER_ROW = 4

TITLES = {
    "segmentation": "segmentation (RES, SOS, MASK-SEG)",
    "placement": "ADD-PRED (placement adapter)",
    "captioning": "CMI-PRED (captioning adapter)",
    "edit_base": "edit base",
    "critic": "critic",
}


def metrics_files(model_dir: str | Path) -> list[Path]:
    """The model's ``metrics.jsonl``, or its members' in member order; FileNotFoundError when it has none."""
    model_dir = Path(model_dir)
    own = model_dir / "metrics.jsonl"
    if own.is_file():
        return [own]
    members = [d / "metrics.jsonl" for d in member_folders(model_dir) if (d / "metrics.jsonl").is_file()]
    if not members:
        raise FileNotFoundError(f"{model_dir}: no metrics.jsonl (nor member-*/metrics.jsonl) to draw a curve from")
    return members


def read_metrics(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def curve_keys(rows: list[dict]) -> tuple[str, ...]:
    """The panels for one stage's logged rows: a GRPO stage's reward, zero-variance share, KL and reward terms;
    otherwise its loss (and pair accuracy, for the critic)."""
    logged = {k for r in rows for k, v in r.items() if v is not None}
    grpo = [k for k in GRPO_KEYS if k in logged]
    if grpo:
        terms = sorted(k for k in logged if k.startswith("rewards/") and k.endswith("/mean"))
        return tuple(grpo + terms)
    return tuple(k for k in PANEL_KEYS if k in logged) or ("loss",)


def curve_title(name: str) -> str:
    """The title of a model's curve from its name in the report (``builder_sft``, ``edit_lora_FILL``, ...)."""
    if name.startswith("builder_"):
        return f"Builder {name.removeprefix('builder_')}"
    if name.startswith("edit_lora_"):
        return f"edit {name.removeprefix('edit_lora_')}"
    return TITLES.get(name, name)


def plot_training_curve(model_dir: str | Path, out_png: str | Path, title: str) -> list[Path]:
    """One panel per logged curve (``curve_keys``), a line per metrics file; returns the files it read."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = metrics_files(model_dir)
    runs = [read_metrics(f) for f in files]
    keys = curve_keys([r for rows in runs for r in rows])
    cols = min(len(keys), PANELS_PER_ROW)
    rows = -(-len(keys) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.flat[len(keys) :]:
        ax.set_visible(False)
    for ax, key in zip(axes.flat, keys):
        for path, rows in zip(files, runs):
            pts = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
            if pts:
                ax.plot(*zip(*pts), lw=1.2, label=path.parent.name if len(files) > 1 else None)
        ax.set_xlabel("step")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        if len(files) > 1:
            ax.legend(fontsize=7)
    fig.suptitle(title if len(files) == 1 else f"{title} ({len(files)} members)")
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=90)
    plt.close(fig)
    return files
