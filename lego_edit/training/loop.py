"""The training loop of the UNet-based bricks (segmentation, edit base and LoRAs).

Reproducible and resumable: the batch of step s and every random draw inside it come from a generator
seeded by (seed, s), so a run resumed from a checkpoint at step s continues exactly as an uninterrupted
run would. Runs under ``accelerate``: one process, or one per GPU (or several on a CPU, gloo) as
``launch.run_stage`` starts them.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from tqdm import tqdm

from .state import latest_checkpoint, load_checkpoint, save_checkpoint

log = logging.getLogger(__name__)


@dataclass
class LoopConfig:
    """Optimisation settings of the UNet-based bricks' training loop."""

    steps: int = field(default=1000, metadata={"help": "Optimizer steps."})
    batch_size: int = field(default=32, metadata={"help": "Global batch size (split across processes)."})
    lr: float = field(default=1e-3, metadata={"help": "Peak learning rate (AdamW)."})
    min_lr_ratio: float = field(default=0.0, metadata={"help": "Final learning rate as a share of the peak (cosine)."})
    warmup_steps: int = field(default=20, metadata={"help": "Linear warm-up steps."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    grad_clip: float = field(default=1.0, metadata={"help": "Gradient norm clip (0: off)."})
    checkpoint_every: int = field(default=200, metadata={"help": "Steps between resumable checkpoints."})
    checkpoints_kept: int = field(default=2, metadata={"help": "Checkpoints kept after rotation."})
    log_every: int = field(default=10, metadata={"help": "Steps between metric lines."})

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("steps and batch_size must be at least 1")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError("min_lr_ratio must be in [0, 1]")
        if min(self.checkpoint_every, self.checkpoints_kept, self.log_every) < 1:
            raise ValueError(
                "checkpoint_every, checkpoints_kept and log_every must be at least 1 (a resumed run "
                "starts from the latest kept checkpoint)"
            )


def step_generator(seed: int, step: int, rank: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + int(step) * 7919 + rank)


def lr_at(cfg: LoopConfig, step: int) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    t = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t)))


def train(
    model: torch.nn.Module,
    loss_fn: Callable[[int, torch.Generator, int, int], dict],
    cfg: LoopConfig,
    seed: int,
    checkpoint_dir: str | Path,
    metrics_path: str | Path,
    desc: str = "train",
    threads: int = 1,
) -> list[dict]:
    """Run ``cfg.steps`` steps of ``loss_fn(step, generator, rank, world) -> {"loss": tensor, ...}``.

    Only parameters with ``requires_grad`` are optimised and checkpointed (so LoRA runs save adapters
    only). Metrics go to ``metrics_path`` as JSON lines; a resumed run rewrites the lines it repeats.
    """
    torch.set_num_threads(max(1, threads))
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    # The model is not wrapped in DDP: loss_fn calls its methods directly, which would bypass DDP's gradient
    # hooks. Gradients are averaged across processes explicitly after each backward instead.
    raw = model.to(accelerator.device)
    trainable = {n: p for n, p in raw.named_parameters() if p.requires_grad}
    optimizer = torch.optim.AdamW(trainable.values(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    start, history = 0, []
    ckpt = latest_checkpoint(checkpoint_dir)
    if ckpt is not None:
        state = load_checkpoint(ckpt, raw, optimizer)
        start, history = state["step"], state.get("history", [])
        log.info("resumed from %s at step %d", ckpt, start)
    raw.train()
    metrics_path = Path(metrics_path)
    metrics_path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    bar = tqdm(
        range(start, cfg.steps),
        desc=desc,
        initial=start,
        total=cfg.steps,
        mininterval=10,
        disable=not accelerator.is_main_process,
    )
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = lr_at(cfg, step)
        out = loss_fn(
            step,
            step_generator(seed, step, accelerator.process_index),
            accelerator.process_index,
            accelerator.num_processes,
        )
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(out["loss"])
        if accelerator.num_processes > 1:
            for p in trainable.values():
                if p.grad is not None:
                    torch.distributed.all_reduce(p.grad, op=torch.distributed.ReduceOp.AVG)
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(list(trainable.values()), cfg.grad_clip)
        optimizer.step()
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            row = {
                "step": step + 1,
                "lr": lr_at(cfg, step),
                "seconds": round(time.perf_counter() - t0, 2),
                **{k: float(v.detach()) if torch.is_tensor(v) else v for k, v in out.items()},
            }
            history.append(row)
            bar.set_postfix(loss=f"{row['loss']:.4f}")
        if accelerator.is_main_process and ((step + 1) % cfg.checkpoint_every == 0) and step + 1 < cfg.steps:
            params = {n: p for n, p in raw.named_parameters() if p.requires_grad}
            save_checkpoint(checkpoint_dir, step + 1, params, optimizer, {"history": history}, cfg.checkpoints_kept)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        metrics_path.write_text("".join(json.dumps(r) + "\n" for r in history))
    return history
