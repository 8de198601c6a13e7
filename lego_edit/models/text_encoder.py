"""A prompt encoder for the UNet-based bricks: a tokenizer trained on the bricks' own prompts and a small
transformers ``CLIPTextModel`` built from config. Its token states feed cross-attention and its pooled
output feeds the UNet's class embedding."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from transformers import CLIPTextConfig, CLIPTextModel, PreTrainedTokenizerFast

from .tokenizer import ENDOFTEXT, train_tokenizer


@dataclass
class TextEncoderConfig:
    """The prompt encoder: a small CLIP text transformer built from config."""

    hidden_size: int = field(default=64, metadata={"help": "Width of the text transformer."})
    num_layers: int = field(default=2, metadata={"help": "Transformer layers."})
    num_heads: int = field(default=2, metadata={"help": "Attention heads."})
    intermediate_size: int = field(default=128, metadata={"help": "MLP width."})
    max_length: int = field(default=24, metadata={"help": "Tokens per prompt (longer prompts are cut)."})
    vocab_size: int = field(default=600, metadata={"help": "Upper bound of the trained tokenizer's vocabulary."})

    def __post_init__(self):
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} must be divisible by num_heads {self.num_heads}")


class PromptEncoder(nn.Module):
    def __init__(self, text_model: CLIPTextModel, tokenizer: PreTrainedTokenizerFast, max_length: int):
        super().__init__()
        self.text_model = text_model
        self.tokenizer = tokenizer
        self.max_length = max_length

    @classmethod
    def build(cls, cfg: TextEncoderConfig, texts: list[str]) -> PromptEncoder:
        tokenizer = train_tokenizer(sorted(set(texts)), cfg.vocab_size, min_frequency=2)
        # The end token must not have id 2: CLIPTextModel then takes the legacy path and pools at the
        # highest token id instead of the end token, so the pooled vector would miss most of the prompt.
        eos = tokenizer.convert_tokens_to_ids(ENDOFTEXT)
        assert eos != 2, "the prompt encoder's end token must not have id 2"
        config = CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=cfg.hidden_size,
            intermediate_size=cfg.intermediate_size,
            num_hidden_layers=cfg.num_layers,
            num_attention_heads=cfg.num_heads,
            max_position_embeddings=max(77, cfg.max_length),
            eos_token_id=eos,
            bos_token_id=eos,
            pad_token_id=eos,
        )
        return cls(CLIPTextModel(config), tokenizer, cfg.max_length)

    @property
    def dim(self) -> int:
        return self.text_model.config.hidden_size

    @property
    def end_id(self) -> int:
        return self.text_model.config.eos_token_id

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        """(B, max_length) ids: the prompt, then the end token (the pooled position), then padding (also the end
        token; CLIP pools at its first occurrence)."""
        end = self.end_id
        rows = []
        for ids in self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]:
            ids = ids[: self.max_length - 1] + [end]
            rows.append(ids + [end] * (self.max_length - len(ids)))
        return torch.tensor(rows, dtype=torch.long)

    def token_mask(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, L) bool: the prompt's tokens and its end token (the rest is padding)."""
        first_end = (ids == self.end_id).int().argmax(dim=-1, keepdim=True)
        return torch.arange(ids.shape[1], device=ids.device)[None] <= first_end

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mask = self.token_mask(ids).long()
        out = self.text_model(input_ids=ids, attention_mask=mask)
        # CLIP pools at the end token only; adding the mean of the prompt's token states gives every word a
        # direct path to the pooled vector, which a text encoder trained from scratch needs to learn fast.
        weights = mask.unsqueeze(-1).to(out.last_hidden_state.dtype)
        mean = (out.last_hidden_state * weights).sum(1) / weights.sum(1).clamp_min(1)
        return out.last_hidden_state, out.pooler_output + mean

    def save_pretrained(self, out_dir: str | Path) -> None:
        out_dir = Path(out_dir)
        self.text_model.save_pretrained(out_dir / "text_encoder", safe_serialization=True)
        self.tokenizer.save_pretrained(out_dir / "tokenizer")
        (out_dir / "text_encoder" / "prompt.json").write_text(json.dumps({"max_length": self.max_length}))

    @classmethod
    def from_pretrained(cls, path: str | Path) -> PromptEncoder:
        path = Path(path)
        meta = json.loads((path / "text_encoder" / "prompt.json").read_text())
        return cls(
            CLIPTextModel.from_pretrained(path / "text_encoder"),
            PreTrainedTokenizerFast.from_pretrained(path / "tokenizer"),
            meta["max_length"],
        )
