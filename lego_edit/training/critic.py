"""Train the local critic: a VLM of the Builder's architecture fine-tuned to answer yes/no to "is the second
image the first one edited as instructed?". Reported: how often it ranks the GT target above a wrong edit
of the same instruction, on held-out pairs.

Two objectives (``objective``):
  * ``pairwise`` (default): on the verdict token only. Each batch holds whole groups (an instruction's GT
    target and its wrong edits); the loss is a Bradley-Terry term per (target, wrong edit) pair on the
    yes-minus-no logit plus a yes/no cross-entropy, as reward models for image editing are trained. The
    candidates of a pair share their text, so the instruction alone cannot lower the pairwise term: only
    what the images show can. On the shapes world it ranks as well as SFT (both near chance beyond "nothing
    changed" for a Builder-sized VLM) in half the time.
  * ``sft``: TRL SFT on the answer "yes|no. The edit: <what it does>".

    python -m lego_edit.training.critic --config cfg.json
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..bricks.vlm_prompts import CRITIC_PROMPT, critic_answer, critic_images
from ..data.shards import load_samples
from ..imageio import atomic_write_json
from ..models.critic import CRITIC_SPEC, LocalCritic, OpenAICriticConfig, load_critic_dir
from ..models.vlm import to_pil
from .common import plot_curves, write_metrics
from .vlm_sft import SFTSettings, resolve_base, sft

log = logging.getLogger(__name__)


@dataclass
class CriticTrainConfig:
    backend: str = field(default="local", metadata={"help": "local (train a VLM here) or openai (an endpoint)."})
    openai: OpenAICriticConfig = field(default_factory=OpenAICriticConfig)
    base: str = field(default="", metadata={"help": "Starting VLM (the untrained base for the tiny critic)."})
    shards: str = ""
    output_dir: str = ""
    checkpoint_dir: str = ""
    seed: int = 0
    objective: str = field(default="pairwise", metadata={
        "help": "pairwise (Bradley-Terry loss on the verdict over whole groups) or sft (TRL SFT on the answer)."})
    train: SFTSettings = field(default_factory=lambda: SFTSettings(steps=300, lr=2e-3))
    eval_split: str = "test"
    eval_instructions: int = field(default=300, metadata={"help": "Held-out instructions for the ranking figure."})


def rows(samples: list[dict]) -> list[dict]:
    return [{"images": [to_pil(im) for im in critic_images(s["source"], s["candidate"])],
             "prompt": [{"role": "user", "content": CRITIC_PROMPT.format(instruction=s["instruction"])}],
             "completion": [{"role": "assistant", "content": critic_answer(bool(s["label"]), s.get("shows"))}]}
            for s in samples]


def instruction_groups(samples: list[dict]) -> list[list[int]]:
    """Indices of each instruction's candidates (shard keys <instruction>_<candidate>), groups with a GT target
    and at least one wrong edit only, in key order."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(samples):
        groups[s["__key__"].rsplit("_", 1)[0]].append(i)
    return [g for _, g in sorted(groups.items())
            if any(samples[i]["label"] for i in g) and any(not samples[i]["label"] for i in g)]


def verdict_margins(model, processor, samples: list[dict]):
    """The yes-minus-no logit at the first answer position, per sample (with gradients)."""
    from ..bricks.vlm_prompts import CRITIC_CHOICES
    from ..models.critic import critic_messages
    from ..models.vlm import _tokenizer, choice_token_ids, next_token_logits

    yes, no = choice_token_ids(_tokenizer(processor), CRITIC_CHOICES)
    logits = next_token_logits(model, processor, [critic_messages(s["instruction"]) for s in samples],
                               [critic_images(s["source"], s["candidate"]) for s in samples])
    return logits[:, yes] - logits[:, no]


def pairwise_loss(margins, labels, groups: list[list[int]]) -> dict:
    """Bradley-Terry over every (target, wrong edit) pair of a group + yes/no cross-entropy on every sample."""
    import torch
    import torch.nn.functional as F

    pos, neg = (torch.tensor(ix, device=margins.device) for ix in zip(*[
        (p, n) for g in groups for p in g if labels[p] for n in g if not labels[n]]))
    gap = margins[pos] - margins[neg]
    pair = F.softplus(-gap).mean()
    bce = F.binary_cross_entropy_with_logits(margins, labels.float())
    wins = (gap > 0).float().mean()
    return {"loss": pair + bce, "pair_loss": pair.detach(), "bce": bce.detach(), "pair_accuracy": wins}


def train_pairwise(cfg: CriticTrainConfig, samples: list[dict], out: Path, checkpoint_dir: Path | str):
    """Fine-tune the whole VLM on the verdict token (see the module docstring); resumable like the UNet bricks."""
    import torch

    from ..models.vlm import load_vlm, save_vlm
    from .loop import LoopConfig, train

    s = cfg.train
    if s.lora is not None:
        raise ValueError("the pairwise critic objective fine-tunes the whole VLM; set train.lora to null "
                         "(or use objective: sft)")
    groups = instruction_groups(samples)
    if not groups:
        raise ValueError(f"{cfg.shards}: no instruction has both a GT target and a wrong edit")
    per_step = max(1, s.batch_size // max(len(g) for g in groups))  # whole groups: batch_size is in candidates
    loop = LoopConfig(steps=s.steps, batch_size=s.batch_size, lr=s.lr, warmup_steps=s.warmup_steps,
                      weight_decay=s.weight_decay, checkpoint_every=s.checkpoint_every,
                      checkpoints_kept=s.checkpoints_kept, log_every=s.log_every, threads=s.threads)
    model, processor = load_vlm(resolve_base(cfg.base), device="cuda" if torch.cuda.is_available() else "cpu",
                                dtype="float32" if not torch.cuda.is_available() else None)
    model.train()

    def loss_fn(step, gen, rank, world):
        picked = torch.randperm(len(groups), generator=gen)[rank * per_step:(rank + 1) * per_step].tolist()
        rows, local = [], []
        for gi in picked:
            local.append(list(range(len(rows), len(rows) + len(groups[gi]))))
            rows.extend(samples[i] for i in groups[gi])
        margins = verdict_margins(model, processor, rows)
        labels = torch.tensor([bool(r["label"]) for r in rows], device=margins.device)
        return pairwise_loss(margins, labels, local)

    history = train(model, loss_fn, loop, cfg.seed, checkpoint_dir, out / "metrics.jsonl", desc="critic")
    save_vlm(model, processor, out)
    plot_curves(out / "metrics.jsonl", out / "curve.png", "critic", keys=("loss", "pair_accuracy"))
    return model.eval(), processor, history


def ranking_accuracy(critic, samples: list[dict], limit: int) -> dict:
    """Share of (GT target, wrong edit) pairs of one instruction where the target scores higher."""
    chosen = [[samples[i] for i in g] for g in instruction_groups(samples)[:limit]]
    flat = [s for g in chosen for s in g]
    scores = critic.score([s["instruction"] for s in flat], [s["source"] for s in flat], [s["candidate"] for s in flat])
    for s, sc in zip(flat, scores):
        if sc.score is not None:  # an endpoint critic may leave a sample unscored
            s["p_yes"] = sc.score
    chosen = [[s for s in g if "p_yes" in s] for g in chosen]
    flat = [s for s in flat if "p_yes" in s]
    wins, pairs, by_kind = 0, 0, defaultdict(list)
    for g in chosen:
        pos = [s["p_yes"] for s in g if s["label"]]
        if not pos:
            continue
        for neg in (s for s in g if not s["label"]):
            ok = min(pos) > neg["p_yes"]
            wins += ok
            pairs += 1
            by_kind[neg["kind"]].append(ok)
    return {"ranking_accuracy": round(wins / max(1, pairs), 4), "pairs": pairs, "coverage": len(flat),
            **{f"ranking_accuracy/{k}": round(float(np.mean(v)), 4) for k, v in sorted(by_kind.items())}}


def main(cfg: CriticTrainConfig) -> dict:
    out = Path(cfg.output_dir)
    if cfg.backend == "openai":  # nothing to train: record the endpoint; the figure is measured through it
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / CRITIC_SPEC, {"backend": "openai", **asdict(cfg.openai)})
        critic = load_critic_dir(out)
        held_out = load_samples(cfg.shards, cfg.eval_split)
        metrics = {"backend": "openai", "model": cfg.openai.model,
                   **ranking_accuracy(critic, held_out, cfg.eval_instructions)}
        write_metrics(out, metrics)
        return metrics
    train_samples = load_samples(cfg.shards, "train")
    if not train_samples:
        raise ValueError(f"{cfg.shards} has no training samples")
    checkpoints = cfg.checkpoint_dir or out.parent / f".{out.name}-ckpt"
    if cfg.objective == "pairwise":
        model, processor, history = train_pairwise(cfg, train_samples, out, checkpoints)
    elif cfg.objective == "sft":
        model, processor, history = sft(cfg.base, rows(train_samples), out, checkpoints, cfg.seed, cfg.train, "critic")
    else:
        raise ValueError(f"unknown critic objective {cfg.objective!r} (use pairwise or sft)")
    held_out = load_samples(cfg.shards, cfg.eval_split)
    metrics = {"samples": len(train_samples), "steps": cfg.train.steps, "objective": cfg.objective,
               "final_loss": next((r["loss"] for r in reversed(history) if "loss" in r), None),
               "eval_split": cfg.eval_split,
               **ranking_accuracy(LocalCritic(model=(model, processor)), held_out, cfg.eval_instructions)}
    write_metrics(out, metrics)
    atomic_write_json(out / "train_config.json", asdict(cfg))
    log.info("critic metrics: %s", metrics)
    return metrics


if __name__ == "__main__":
    from .common import cli

    cli(CriticTrainConfig, main)
