"""Train the local critic: a VLM of the Builder's architecture fine-tuned to answer yes/no to "is the second
image the first one edited as instructed?". Reported: how often it ranks the GT target above a wrong edit
of the same instruction, on held-out pairs.

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
from .common import write_metrics
from .vlm_sft import SFTSettings, sft

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
    train: SFTSettings = field(default_factory=lambda: SFTSettings(steps=300, lr=2e-3))
    eval_split: str = "test"
    eval_instructions: int = field(default=300, metadata={"help": "Held-out instructions for the ranking figure."})


def rows(samples: list[dict]) -> list[dict]:
    return [{"images": [to_pil(im) for im in critic_images(s["source"], s["candidate"])],
             "prompt": [{"role": "user", "content": CRITIC_PROMPT.format(instruction=s["instruction"])}],
             "completion": [{"role": "assistant", "content": critic_answer(bool(s["label"]), s.get("shows"))}]}
            for s in samples]


def ranking_accuracy(critic, samples: list[dict], limit: int) -> dict:
    """Share of (GT target, wrong edit) pairs of one instruction where the target scores higher."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for s in samples:
        groups[s["__key__"].rsplit("_", 1)[0]].append(s)
    chosen = [g for _, g in sorted(groups.items()) if any(s["label"] for s in g) and any(not s["label"] for s in g)]
    chosen = chosen[:limit]
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
    model, processor, history = sft(cfg.base, rows(train_samples), out,
                                    cfg.checkpoint_dir or out.parent / f".{out.name}-ckpt", cfg.seed, cfg.train,
                                    "critic")
    held_out = load_samples(cfg.shards, cfg.eval_split)
    metrics = {"samples": len(train_samples), "steps": cfg.train.steps,
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
