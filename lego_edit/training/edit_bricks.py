"""Train the edit bricks' diffusion model: a shared base on every edit brick's samples, then one LoRA per brick.

python -m lego_edit.training.edit_bricks --config cfg.json          (base, or a LoRA when `brick` is set)
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..bricks.functions import fastinpaint
from ..bricks.models import PREIMAGE_BRICKS, load_edit_model, start_strength
from ..data.brick_samples import EDIT_BRICKS
from ..data.shard_index import ShardSamples, first_of_each, sample_meta
from ..evaluation.metrics import psnr
from ..imageio import atomic_write_json
from ..models.inpainting import UNetInpainter, edit_text
from .common import is_main_process, rank_finished, write_metrics
from .config_sections import EditSection, JobSettings
from .loop import LoopConfig, train

log = logging.getLogger(__name__)


@dataclass
class EditTrainConfig(EditSection, JobSettings):
    """The config's ``bricks.edit`` block as it stands, and the job's paths, seed and threads: the shared base
    trains with ``base``, one brick's LoRA (``brick`` set) with ``lora``."""

    shards: str = field(default="", metadata={"help": "Edit shard folder."})
    output_dir: str = field(default="", metadata={"help": "Model folder (base) or adapter folder (LoRA)."})
    brick: str | None = field(default=None, metadata={"help": "Train this brick's LoRA on the base; None: the base."})
    base_dir: str = field(default="", metadata={"help": "The trained base (needed for a LoRA)."})
    eval_split: str = field(default="test", metadata={"help": "Held-out split for the PSNR figures."})
    samples_in_memory: bool = field(
        default=True,
        metadata={
            "help": "Keep decoded training samples in memory (false: the flux_fill backend reads each batch's "
            "samples from the shards, so a paper-scale split is never held; the unet backend cuts every sample into "
            "windows up front either way)."
        },
    )

    def __post_init__(self):
        if not self.shards or not self.output_dir:
            raise ValueError("shards and output_dir are required")
        if self.brick is not None and (self.brick not in EDIT_BRICKS or not self.base_dir):
            raise ValueError(f"a LoRA needs brick in {EDIT_BRICKS} and base_dir; got {self.brick!r}, {self.base_dir!r}")

    @property
    def loop(self) -> LoopConfig:
        """The training loop of this job: the LoRA's or the base's."""
        return self.lora.train if self.brick else self.base


class BalancedSampler:
    """Training items drawn brick by brick: each batch slot picks an edit brick uniformly, then one of its items.
    Whole-image bricks (STYLE, ENV, CBG) cut into several windows per sample would otherwise fill most batches."""

    def __init__(self, bricks: list[str]):
        names = sorted(set(bricks))
        self.groups = [torch.tensor([i for i, b in enumerate(bricks) if b == name]) for name in names]

    def __call__(self, batch: int, gen: torch.Generator) -> torch.Tensor:
        which = torch.randint(len(self.groups), (batch,), generator=gen)
        picks = torch.rand(batch, generator=gen)
        return torch.stack([g[int(p * len(g))] for g, p in zip((self.groups[int(w)] for w in which), picks)])


GAIN_GRID = np.linspace(0.0, 1.0, 21)


def calibrate_start_gain(model, samples: list[dict], bricks, per_brick: int, seed: int) -> dict[str, float]:
    """For each brick that refines a start (INPAINT, POSE): the share g of the model's change to its start, on a
    grid from 0 to 1, that gives the highest mean PSNR to the target inside the mask on ``samples`` (the brick
    table's figure), kept only where its paired gain over the start is clearly above 0, so that start + g * change is
    not worse than the start. Sets ``model.start_gain``."""
    if not hasattr(model, "start_gain"):
        return {}  # a backend without refining starts (flux_fill runs its own schedule)
    fitted = {}
    for brick in bricks:
        rows = [
            s for s in samples if s["brick"] == brick and brick in PREIMAGE_BRICKS and s.get("preimage") is not None
        ][:per_brick]
        if not rows:
            continue
        model.start_gain.pop(brick, None)
        pre = [s["preimage"] for s in rows]
        edited = model.edit(
            brick,
            [s["source"] for s in rows],
            [s["mask"] for s in rows],
            [s.get("prompt", "") for s in rows],
            preimages=pre,
            strengths=[start_strength(brick, p, s.get("score")) for s, p in zip(rows, pre)],
            styles=[s.get("style") for s in rows],
            seed=seed,
        )
        starts = [p.astype(np.float64) for p in pre]
        changes = [e.astype(np.float64) - p for e, p in zip(edited, starts)]
        scores = np.array(
            [
                [
                    psnr(np.clip(np.rint(p + g * c), 0, 255).astype(np.uint8), s["target"], s["mask"] > 0)
                    for p, c, s in zip(starts, changes, rows)
                ]
                for g in GAIN_GRID
            ]
        )
        best = int(np.argmax(scores.mean(axis=1)))
        # A gain is kept only if its paired improvement over the start is clear of noise (mean minus two standard
        # errors above 0): a gain picked by a tiny edge on validation did not carry over to the test split.
        gain = scores[best] - scores[0]
        clear = len(gain) > 1 and gain.mean() - 2 * gain.std(ddof=1) / np.sqrt(len(gain)) > 0
        if not clear:
            best = 0
        fitted[brick] = round(float(GAIN_GRID[best]), 4)
        model.start_gain[brick] = fitted[brick]
    return fitted


def evaluate(model: UNetInpainter, samples: list[dict], bricks, per_brick: int, seed: int) -> dict:
    """PSNR inside / outside the mask vs the target, for the model and the baselines: copy the input, FASTINPAINT,
    and for a brick that refines a start (INPAINT, POSE) the start alone (FASTINPAINT's fill, the turned object)."""
    out = {}
    for brick in bricks:
        rows = [s for s in samples if s["brick"] == brick][:per_brick]
        if not rows:
            continue
        pre = [s.get("preimage") if brick in PREIMAGE_BRICKS else None for s in rows]
        edited = model.edit(
            brick,
            [s["source"] for s in rows],
            [s["mask"] for s in rows],
            [s.get("prompt", "") for s in rows],
            preimages=pre,
            strengths=[start_strength(brick, p, s.get("score")) for s, p in zip(rows, pre)],
            styles=[s.get("style") for s in rows],
            seed=seed,
        )
        figures = {"model": [], "copy": [], "fastinpaint": [], "start": []}
        outside = []
        for s, e, p in zip(rows, edited, pre):
            m = s["mask"] > 0
            figures["model"].append(psnr(e, s["target"], m))
            figures["copy"].append(psnr(s["source"], s["target"], m))
            figures["fastinpaint"].append(psnr(fastinpaint(None, s["source"], s["mask"])["image"], s["target"], m))
            figures["start"].append(None if p is None else psnr(p, s["target"], m))
            outside.append(psnr(e, s["target"], ~m))
        for name, vals in figures.items():
            vals = [v for v in vals if v is not None]
            out[f"{brick}/psnr_in_{name}"] = round(float(np.mean(vals)), 3) if vals else None
        vals = [v for v in outside if v is not None]
        out[f"{brick}/psnr_out_model"] = round(float(np.mean(vals)), 3) if vals else None
        out[f"{brick}/n"] = len(rows)
    return out


def main(cfg: EditTrainConfig) -> dict:
    torch.manual_seed(cfg.seed)
    bricks = [cfg.brick] if cfg.brick else cfg.bricks
    train_samples = ShardSamples(cfg.shards, "train", kinds=bricks, keep_decoded=cfg.samples_in_memory)
    if not len(train_samples):
        raise ValueError(f"{cfg.shards} has no training samples for {bricks}")
    if cfg.brick:
        model = load_edit_model(cfg.base_dir).train()  # straight onto the GPU when there is one
        for p in model.parameters():
            p.requires_grad_(False)
        model.add_lora(cfg.brick, cfg.lora.rank)
    else:
        metas = [sample_meta(train_samples, i) for i in range(len(train_samples))]
        texts = [edit_text(m["brick"], m.get("prompt", ""), m.get("style")) for m in metas]
        if cfg.backend == "flux_fill":
            from ..models.flux_fill import FluxFillEditor

            model = FluxFillEditor.build(cfg.flux, texts)
        else:
            model = UNetInpainter.build(cfg.model, texts)
    data = model.training_data(train_samples)
    n = data["size"]
    log.info(
        "edit %s: %d samples, %d training items, %d trainable parameters",
        cfg.brick or "base",
        len(train_samples),
        n,
        sum(p.numel() for p in model.parameters() if p.requires_grad),
    )

    sampler = BalancedSampler(data["brick"])

    def loss_fn(step, gen, rank, world):
        idx = sampler(max(1, cfg.loop.batch_size // world), gen)
        return {"loss": model.training_loss(data, idx, gen)}

    out = Path(cfg.output_dir)
    name = cfg.brick or "base"
    if any(p.requires_grad for p in model.parameters()):
        history = train(
            model,
            loss_fn,
            cfg.loop,
            cfg.seed,
            cfg.checkpoint_dir or out.parent / f".{out.name}-ckpt",
            out / "metrics.jsonl",
            desc=f"edit {name}",
            threads=cfg.threads,
        )
        if not rank_finished(f"edit {name}", cfg.loop.steps):
            return {}
    else:  # a pretrained base (FLUX.1-Fill-dev) is used as it is; only its LoRAs are trained
        if not is_main_process():
            return {}
        if torch.cuda.is_available():  # its calibration and evaluation below run on the GPU, not the CPU
            model.to("cuda")
        history = []
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.jsonl").write_text("")
    # calibration and evaluation score the first eval_per_brick samples of each brick: only these are decoded
    refined = [b for b in bricks if b in PREIMAGE_BRICKS]
    val = ShardSamples(cfg.shards, "val", kinds=refined) if refined else []
    val = first_of_each(val, "brick", refined, cfg.eval_per_brick, images=["preimage"])
    gains = calibrate_start_gain(model, val, bricks, cfg.eval_per_brick, cfg.seed)
    if cfg.brick:
        model.save_lora(cfg.brick, out)
    else:
        model.save_pretrained(out)
    test = first_of_each(ShardSamples(cfg.shards, cfg.eval_split, kinds=bricks), "brick", bricks, cfg.eval_per_brick)
    metrics = {
        "brick": name,
        "samples": len(train_samples),
        "training_items": n,
        "steps": cfg.loop.steps,
        "final_loss": history[-1]["loss"] if history else None,
        "train_seconds": history[-1]["seconds"] if history else None,
        "eval_split": cfg.eval_split,
        **{f"{b}/start_gain": g for b, g in gains.items()},
        **evaluate(model, test, bricks, cfg.eval_per_brick, cfg.seed),
    }
    write_metrics(out, metrics)
    atomic_write_json(out / "train_config.json", asdict(cfg))
    log.info("edit %s metrics: %s", name, metrics)
    return metrics


if __name__ == "__main__":
    from .common import cli

    cli(EditTrainConfig, main)
