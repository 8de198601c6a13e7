"""Train the VLM-backed bricks as LoRA adapters on the base VLM: ADD-PRED (placement: answer a box) and
CMI-PRED (captioning), as the published system does; report box IoU and caption token F1 on held-out data.

    python -m lego_edit.training.vlm_bricks --config cfg.json
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..bricks.vlm_prompts import CAPTION_PROMPT, PLACEMENT_PROMPT, box_answer, parse_box
from ..data.shard_index import ShardSamples
from ..data.shards import iter_samples, read_manifest
from ..evaluation.metrics import box_iou, token_f1
from ..imageio import atomic_write_json
from ..models.vlm import chat, generate, to_pil
from .common import is_main_process, write_metrics
from .config_sections import JobSettings, VLMBrickSection
from .vlm_sft import sft

log = logging.getLogger(__name__)
FAMILIES = ("placement", "captioning")


@dataclass
class VLMBrickConfig(VLMBrickSection, JobSettings):
    """The config's ``bricks.placement`` or ``bricks.captioning`` block as it stands, and the job's family, paths,
    seed and threads."""

    family: str = field(default="placement", metadata={"help": "placement (ADD-PRED) or captioning (CMI-PRED)."})
    base: str = field(default="", metadata={"help": "The base VLM folder."})
    shards: str = field(default="", metadata={"help": "The family's shard folder."})
    output_dir: str = field(default="", metadata={"help": "Where the adapter goes."})
    eval_split: str = field(default="test", metadata={"help": "Held-out split for the figures."})
    max_new_tokens: int = field(default=64, metadata={"help": "Answer length limit of the held-out figures."})
    samples_in_memory: bool = field(
        default=True,
        metadata={
            "help": "Hold the training rows in memory (false: written to an Arrow file as the shards are read, then "
            "memory-mapped)."
        },
    )

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}, got {self.family!r}")


def prompt_of(family: str, sample: dict) -> str:
    return PLACEMENT_PROMPT.format(prompt=sample["prompt"]) if family == "placement" else CAPTION_PROMPT


def answer_of(family: str, sample: dict) -> str:
    return box_answer(sample["box"]) if family == "placement" else sample["caption"]


def row(family: str, sample: dict) -> dict:
    return {
        "images": [to_pil(sample["image"])],
        "prompt": [{"role": "user", "content": prompt_of(family, sample)}],
        "completion": [{"role": "assistant", "content": answer_of(family, sample)}],
    }


def streamed_rows(family: str, shards: str) -> Iterator[dict]:
    """The training rows read from the shards one sample at a time (SFT writes them to an Arrow file as it goes)."""
    for s in iter_samples(shards, "train"):
        yield row(family, s)


def evaluate(family: str, model, processor, samples: list[dict], max_new_tokens: int) -> dict:
    texts = generate(
        model,
        processor,
        [chat(prompt_of(family, s), 1) for s in samples],
        [[s["image"]] for s in samples],
        max_new_tokens=max_new_tokens,
    )
    if family == "placement":
        scores, parsed = [], 0
        for s, t in zip(samples, texts):
            box = parse_box(t, s["image"].shape[1], s["image"].shape[0])
            parsed += box is not None
            scores.append(box_iou(box, s["box"]) if box else 0.0)
        return {
            "box_iou": round(float(np.mean(scores)), 4),
            "parse_rate": round(parsed / len(samples), 4),
            "n": len(samples),
            "examples": [[s["prompt"], t] for s, t in zip(samples[:3], texts)],
        }
    f1 = [token_f1(t, s["caption"]) for s, t in zip(samples, texts)]
    exact = [t.strip() == s["caption"] for s, t in zip(samples, texts)]
    return {
        "token_f1": round(float(np.mean(f1)), 4),
        "exact_match": round(float(np.mean(exact)), 4),
        "n": len(samples),
        "examples": [[s["caption"], t] for s, t in zip(samples[:3], texts)],
    }


def main(cfg: VLMBrickConfig) -> dict:
    count = sum(r["split"] == "train" for r in read_manifest(cfg.shards).to_pylist())
    stream = functools.partial(streamed_rows, cfg.family, cfg.shards)
    if not count:
        raise ValueError(f"{cfg.shards} has no training samples")
    out = Path(cfg.output_dir)
    model, processor, history = sft(
        cfg.base,
        list(stream()) if cfg.samples_in_memory else stream,
        out,
        cfg.checkpoint_dir or out.parent / f".{out.name}-ckpt",
        cfg.seed,
        cfg.train,
        f"{cfg.family} adapter",
        threads=cfg.threads,
    )
    if not is_main_process():
        return {}
    held_out = ShardSamples(cfg.shards, cfg.eval_split)[: cfg.eval_samples]  # only these are decoded
    metrics = {
        "family": cfg.family,
        "samples": count,
        "steps": cfg.train.steps,
        "final_loss": next((r["loss"] for r in reversed(history) if "loss" in r), None),
        "eval_split": cfg.eval_split,
        **evaluate(cfg.family, model, processor, held_out, cfg.max_new_tokens),
    }
    write_metrics(out, metrics)
    atomic_write_json(out / "train_config.json", asdict(cfg))
    log.info("%s metrics: %s", cfg.family, metrics)
    return metrics


if __name__ == "__main__":
    from .common import cli

    cli(VLMBrickConfig, main)
