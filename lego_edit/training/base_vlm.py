"""The base VLM shared by the Builder, the ADD-PRED / CMI-PRED adapters and (as architecture) the critic.

Embedded default: a byte-level BPE tokenizer trained on the pipeline's own corpus (instructions, GT answers,
brick prompts and answers) and a tiny Qwen2.5-VL built from config with it ("the untrained base").
Paper scale: ``vlm.base`` names a checkpoint; the base folder then only records where it is (vlm_ref.json).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..bricks.vlm_prompts import CAPTION_PROMPT, CRITIC_CHOICES, CRITIC_PROMPT, PLACEMENT_PROMPT, box_answer
from ..builder.prompting import builder_completion, builder_user_text
from ..data.dataset import load_instructions
from ..data.shards import iter_samples
from ..imageio import atomic_write_json
from ..models.tokenizer import train_tokenizer
from ..models.vlm import VLMConfig, build_tiny_vlm, param_count, save_vlm
from .vlm_sft import VLM_REF

log = logging.getLogger(__name__)


@dataclass
class BaseVLMConfig:
    instructions: list[str] = field(default_factory=list, metadata={"help": "Instruction tables (corpus)."})
    placement_shards: str = field(default="", metadata={"help": "Placement shards (corpus)."})
    captioning_shards: str = field(default="", metadata={"help": "Captioning shards (corpus)."})
    output_dir: str = ""
    seed: int = 0
    vocab_size: int = field(default=1024, metadata={"help": "Upper bound of the tokenizer's vocabulary."})
    vlm: VLMConfig = field(default_factory=VLMConfig)


def corpus(cfg: BaseVLMConfig) -> list[str]:
    """Every kind of text the VLMs will read or write, in a fixed order (the tokenizer is deterministic)."""
    texts: list[str] = []
    for path in cfg.instructions:
        for row in load_instructions(path, "train"):
            texts.append(builder_user_text(row["instruction"]))
            if row["workflow"]:
                texts.append(builder_completion(row["reasoning"] or "", row["workflow"]))
            texts.append(CRITIC_PROMPT.format(instruction=row["instruction"]))
    if cfg.placement_shards:
        for s in iter_samples(cfg.placement_shards, "train"):
            texts += [PLACEMENT_PROMPT.format(prompt=s["prompt"]), box_answer(s["box"])]
    if cfg.captioning_shards:
        for s in iter_samples(cfg.captioning_shards, "train"):
            texts.append(s["caption"])
    texts.append(CAPTION_PROMPT)
    texts += list(CRITIC_CHOICES) * 500  # frequent enough to be merged first: the answers must be single tokens
    return texts


def main(cfg: BaseVLMConfig) -> dict:
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.vlm.base is not None:
        atomic_write_json(out / VLM_REF, {"path": cfg.vlm.base})
        info = {"base": cfg.vlm.base}
    else:
        texts = corpus(cfg)
        tokenizer = train_tokenizer(texts, cfg.vocab_size)
        cfg.vlm.seed = cfg.seed
        model, processor = build_tiny_vlm(cfg.vlm, tokenizer)
        save_vlm(model, processor, out)
        info = {"base": None, "corpus_texts": len(texts), "vocab": len(tokenizer), "parameters": param_count(model)}
    atomic_write_json(out / "base_config.json", {**asdict(cfg), **info})
    log.info("base VLM: %s", info)
    return info


if __name__ == "__main__":
    from .common import cli

    cli(BaseVLMConfig, main)
