"""The Builder's (and critic's) VLM: a Qwen2.5-VL built tiny from config, or any checkpoint by hub id / path.

One code path for both scales: ``build_tiny_vlm`` makes a model and processor that save and load exactly
like a real checkpoint, and ``generate`` / ``score_choices`` work on either.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import (
    AutoModelForImageTextToText,
    AutoProcessor,
    PreTrainedTokenizerBase,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
    Qwen2VLImageProcessor,
    Qwen2VLVideoProcessor,
)

from .tokenizer import IMAGE_PAD, VIDEO_PAD, VISION_END, VISION_START

PATCH = 14  # Qwen2.5-VL's vision patch size
MERGE = 2  # spatial merge: 2x2 patches become one LLM token
Messages = list[dict]


@dataclass
class VLMConfig:
    """Size and seed of a Qwen2.5-VL built from config (``base=None``), or the checkpoint to load instead."""

    base: str | None = field(
        default=None,
        metadata={"help": "Hub id or local path of a checkpoint; None builds a tiny model from the fields below."},
    )
    hidden_size: int = field(default=128, metadata={"help": "Text model width."})
    num_layers: int = field(default=4, metadata={"help": "Text decoder layers."})
    num_heads: int = field(default=4, metadata={"help": "Text attention heads; hidden_size / num_heads is head_dim."})
    num_kv_heads: int = field(default=2, metadata={"help": "Key/value heads (grouped-query attention)."})
    intermediate_size: int = field(default=256, metadata={"help": "Text MLP width."})
    vision_depth: int = field(default=2, metadata={"help": "Vision transformer blocks."})
    vision_hidden_size: int = field(default=64, metadata={"help": "Vision tower width."})
    vision_heads: int = field(default=4, metadata={"help": "Vision attention heads."})
    vision_intermediate_size: int = field(default=128, metadata={"help": "Vision MLP width."})
    image_size: int = field(
        default=112,
        metadata={
            "help": "Images are resized to about image_size**2 pixels (min = max pixels); multiple of 28. "
            "112 gives 16 LLM tokens per image. Applies to a `base` checkpoint's processor too."
        },
    )
    max_position_embeddings: int = field(default=4096, metadata={"help": "Longest sequence (prompt + answer)."})
    rope_theta: float = field(default=10000.0, metadata={"help": "RoPE base; short sequences need no large base."})
    tie_word_embeddings: bool = field(
        default=False,
        metadata={
            "help": "Share the input embeddings with the output layer (a model trained from scratch then copies a word "
            "it reads with the same vectors it writes it with)."
        },
    )
    seed: int = field(default=0, metadata={"help": "Seed of the initial weights."})
    dtype: str = field(default="float32", metadata={"help": "float32, bfloat16 or float16 (auto when loading)."})

    def __post_init__(self):
        if self.image_size % (PATCH * MERGE):
            raise ValueError(
                f"image_size={self.image_size} must be a multiple of {PATCH * MERGE} "
                f"(patch {PATCH} x merge {MERGE}); e.g. 112 or 224"
            )
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size={self.hidden_size} must be divisible by num_heads={self.num_heads}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads={self.num_heads} must be a multiple of num_kv_heads={self.num_kv_heads}")
        if self.head_dim % 8:
            raise ValueError(
                f"head_dim = hidden_size / num_heads = {self.head_dim} must be a multiple of 8 so that "
                "mrope_section (temporal, height, width) can split head_dim/2; "
                "change hidden_size or num_heads"
            )
        if self.vision_hidden_size % self.vision_heads or (self.vision_hidden_size // self.vision_heads) % 4:
            raise ValueError(
                f"vision_hidden_size / vision_heads = {self.vision_hidden_size}/{self.vision_heads} "
                "must be a whole multiple of 4 (the vision rotary embedding splits it in 2D halves)"
            )
        if min(self.num_layers, self.vision_depth, self.intermediate_size, self.vision_intermediate_size) < 1:
            raise ValueError("num_layers, vision_depth and the intermediate sizes must be >= 1")
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"dtype={self.dtype!r}: use float32, bfloat16 or float16")
        if self.max_position_embeddings < 64:
            raise ValueError(f"max_position_embeddings={self.max_position_embeddings} is too small for any prompt")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def mrope_section(self) -> list[int]:
        """Qwen's 1/4 temporal, 3/8 height, 3/8 width split of head_dim/2 ([16, 24, 24] at head_dim 128)."""
        half = self.head_dim // 2
        t = half // 4
        h = (half - t) // 2
        return [t, h, half - t - h]


def private_rng():
    """A context whose seeding and sampling leave the caller's CPU and CUDA RNG states as they were.

    ``torch.manual_seed`` reseeds every CUDA device too, so all of them are forked, not only the CPU.
    """
    n_cuda = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return torch.random.fork_rng(devices=list(range(n_cuda)))


def _special_ids(tokenizer: PreTrainedTokenizerBase) -> dict[str, int]:
    ids = {
        name: tokenizer.convert_tokens_to_ids(tok)
        for name, tok in (
            ("image_token_id", IMAGE_PAD),
            ("video_token_id", VIDEO_PAD),
            ("vision_start_token_id", VISION_START),
            ("vision_end_token_id", VISION_END),
        )
    }
    for name, i in ids.items():
        if i is None or i == tokenizer.unk_token_id:
            raise ValueError(f"tokenizer has no id for {name}; train it with lego_edit.models.tokenizer")
    return ids


def build_processor(tokenizer: PreTrainedTokenizerBase, image_size: int) -> Qwen2_5_VLProcessor:
    """A Qwen2.5-VL processor that resizes every image to about ``image_size**2`` pixels."""
    pixels = image_size * image_size
    # The processor refuses video_processor=None in transformers 5; give it one with the same bounds.
    return Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(min_pixels=pixels, max_pixels=pixels),
        video_processor=Qwen2VLVideoProcessor(min_pixels=pixels, max_pixels=pixels),
        tokenizer=tokenizer,
        chat_template=tokenizer.chat_template,
    )


def build_tiny_vlm(cfg: VLMConfig, tokenizer: PreTrainedTokenizerBase):
    """A freshly initialised Qwen2.5-VL of ``cfg``'s size and its processor. Same seed, same weights."""
    ids = _special_ids(tokenizer)
    tokens = {"bos_token_id": None, "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id}
    text_config = {
        "vocab_size": len(tokenizer),
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.num_kv_heads,
        "max_position_embeddings": cfg.max_position_embeddings,
        "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta, "mrope_section": cfg.mrope_section},
        **tokens,
        **ids,  # without them in text_config too, transformers warns the ids are out of vocabulary
    }
    vision_config = {
        "depth": cfg.vision_depth,
        "hidden_size": cfg.vision_hidden_size,
        "num_heads": cfg.vision_heads,
        "intermediate_size": cfg.vision_intermediate_size,
        "out_hidden_size": cfg.hidden_size,
        "patch_size": PATCH,
        "spatial_merge_size": MERGE,
        "window_size": cfg.image_size,  # one attention window per image: windows buy nothing at this size
        "fullatt_block_indexes": [cfg.vision_depth - 1],
    }
    text_config["tie_word_embeddings"] = cfg.tie_word_embeddings
    config = Qwen2_5_VLConfig(
        text_config=text_config,
        vision_config=vision_config,
        **ids,
        **tokens,
        tie_word_embeddings=cfg.tie_word_embeddings,
    )
    # A private RNG stream: seeding the weights must not disturb the caller's global RNG.
    with private_rng():
        torch.manual_seed(cfg.seed)
        model = Qwen2_5_VLForConditionalGeneration(config)
    model.to(getattr(torch, cfg.dtype))
    gen = model.generation_config
    gen.bos_token_id, gen.eos_token_id, gen.pad_token_id = None, tokenizer.eos_token_id, tokenizer.pad_token_id
    gen.do_sample = False
    return model.eval(), build_processor(tokenizer, cfg.image_size)


def save_vlm(model, processor, out_dir: str | Path) -> Path:
    """Write model (safetensors), generation config and processor (tokenizer, chat template) to ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)  # safetensors is the only format transformers 5 writes
    processor.save_pretrained(out)
    return out


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_vlm(
    path_or_id: str | Path,
    device: str | None = None,
    dtype: str | torch.dtype | None = None,
    adapter: str | Path | None = None,
    image_size: int | None = None,
):
    """Load a saved or hub Qwen2.5-VL-like model and its processor; optionally a peft adapter on top.

    ``dtype=None`` keeps the checkpoint's dtype. ``image_size`` overrides the processor's pixel bounds
    (useful to cap the image tokens of a large checkpoint).
    """
    device = device or default_device()
    dtype = getattr(torch, dtype) if isinstance(dtype, str) and dtype != "auto" else (dtype or "auto")
    processor = AutoProcessor.from_pretrained(str(path_or_id), trust_remote_code=False)
    # device_map puts the weights straight on the device: a 7B checkpoint never sits whole in CPU memory first.
    model = AutoModelForImageTextToText.from_pretrained(
        str(path_or_id), dtype=dtype, device_map=device, trust_remote_code=False, use_safetensors=True
    )
    if adapter is not None:
        from peft import PeftModel  # imported here: only adapter users pay for it

        model = PeftModel.from_pretrained(model, str(adapter), is_trainable=False)
    if image_size is not None:
        if image_size % (PATCH * MERGE):
            raise ValueError(f"image_size={image_size} must be a multiple of {PATCH * MERGE}")
        from transformers.image_utils import SizeDict  # the type the processors hold their size in

        for proc in (processor.image_processor, getattr(processor, "video_processor", None)):
            if proc is not None:
                proc.size = SizeDict(shortest_edge=image_size**2, longest_edge=image_size**2)
    return model.eval(), processor


def init_vlm(cfg: VLMConfig, tokenizer: PreTrainedTokenizerBase | None = None, device: str | None = None):
    """The starting model of a training stage: ``cfg.base`` loaded, or a tiny one built from ``cfg``."""
    if cfg.base is not None:
        return load_vlm(cfg.base, device=device, dtype=cfg.dtype, image_size=cfg.image_size)
    if tokenizer is None:
        raise ValueError("building a tiny VLM (base=None) needs the tokenizer trained by the pipeline")
    model, processor = build_tiny_vlm(cfg, tokenizer)
    return model.to(device or default_device()), processor


def user_message(text: str, n_images: int = 0) -> dict:
    """A user turn with ``n_images`` image placeholders before the text (Qwen's order)."""
    return {"role": "user", "content": [{"type": "image"}] * n_images + [{"type": "text", "text": text}]}


def chat(text: str, n_images: int = 0, system: str | None = None) -> Messages:
    """The messages of a one-turn prompt: optional system text, then the user turn."""
    head = [{"role": "system", "content": [{"type": "text", "text": system}]}] if system is not None else []
    return head + [user_message(text, n_images)]


def to_pil(image) -> Image.Image:
    """An RGB PIL image from a PIL image or an HxWx3 uint8 array."""
    if isinstance(image, Image.Image):
        return image if image.mode == "RGB" else image.convert("RGB")
    arr = np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 uint8 array, got {arr.dtype} {arr.shape}")
    return Image.fromarray(arr, "RGB")


def _tokenizer(processor):
    return getattr(processor, "tokenizer", processor)


def _encode(processor, messages: Sequence[Messages], images: Sequence[Sequence] | None, device):
    """Left-padded model inputs for a batch of prompts ending in the assistant header."""
    images = images if images is not None else [[] for _ in messages]
    if len(images) != len(messages):
        raise ValueError(f"{len(messages)} conversations but {len(images)} image lists")
    texts = []
    for i, (msgs, imgs) in enumerate(zip(messages, images)):
        text = processor.apply_chat_template(list(msgs), tokenize=False, add_generation_prompt=True)
        if text.count(IMAGE_PAD) != len(imgs):
            raise ValueError(f"prompt {i}: {text.count(IMAGE_PAD)} image placeholders but {len(imgs)} images")
        texts.append(text)
    flat = [to_pil(im) for imgs in images for im in imgs]
    # padding_side per call: a checkpoint's tokenizer may default to right padding, which breaks batching.
    return processor(text=texts, images=flat or None, padding=True, padding_side="left", return_tensors="pt").to(device)


def _chunks(n: int, size: int):
    if size < 1:
        raise ValueError(f"batch_size must be >= 1, got {size}")
    return [range(i, min(i + size, n)) for i in range(0, n, size)]


@torch.inference_mode()
def generate(
    model,
    processor,
    messages: Sequence[Messages],
    images: Sequence[Sequence] | None = None,
    *,
    max_new_tokens: int = 256,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int = 0,
    batch_size: int = 16,
) -> list[str]:
    """The new text for each conversation (special tokens stripped), in order.

    ``images[i]`` holds the PIL images or uint8 arrays of ``messages[i]``'s image placeholders, in order.
    Greedy output does not depend on ``batch_size``; sampled output is seeded per chunk, so it does.
    """
    tok = _tokenizer(processor)
    gen = copy.deepcopy(model.generation_config)
    # Start from the checkpoint's config (a real one carries e.g. repetition_penalty), as `transformers serve` does.
    gen.update(max_new_tokens=max_new_tokens, do_sample=do_sample, pad_token_id=tok.pad_token_id)
    if do_sample:
        gen.update(temperature=temperature, top_p=top_p)
    out: list[str] = []
    for c, idx in enumerate(_chunks(len(messages), batch_size)):
        batch = _encode(
            processor, [messages[i] for i in idx], None if images is None else [images[i] for i in idx], model.device
        )
        with private_rng():  # generation must not move the caller's RNG
            torch.manual_seed(seed + c)
            seqs = model.generate(**batch, generation_config=gen)
        new = seqs[:, batch["input_ids"].shape[1] :]
        out.extend(tok.batch_decode(new, skip_special_tokens=True))
    return out


def choice_token_ids(tokenizer, choices: Sequence[str]) -> list[int]:
    """The single token id of each choice; a choice that is not one token is an error."""
    ids = []
    for ch in choices:
        enc = tokenizer.encode(ch, add_special_tokens=False)
        if len(enc) != 1:
            raise ValueError(
                f"choice {ch!r} is {len(enc)} tokens {tokenizer.convert_ids_to_tokens(enc)}; "
                "answers scored by score_choices must be single tokens (train the tokenizer on them)"
            )
        ids.append(enc[0])
    if len(set(ids)) != len(ids):
        raise ValueError(f"choices {list(choices)} share a token")
    return ids


def next_token_logits(
    model, processor, messages: Sequence[Messages], images: Sequence[Sequence] | None = None
) -> torch.Tensor:
    """Logits (B, vocab) of the first generated token of each conversation, with gradients when enabled."""
    batch = _encode(processor, messages, images, model.device)
    # Left padding puts every row's last prompt token in the last column.
    return model(**batch, logits_to_keep=1).logits[:, -1, :].float()


@torch.inference_mode()
def score_choices(
    model,
    processor,
    messages: Sequence[Messages],
    images: Sequence[Sequence] | None = None,
    choices: Sequence[str] = ("yes", "no"),
    *,
    normalize: bool = False,
    batch_size: int = 16,
) -> list[dict[str, float]]:
    """Probability of each single-token answer at the first generated position, per conversation.

    Probabilities come from the full softmax; ``normalize=True`` rescales them to sum to 1 over ``choices``.
    """
    ids = choice_token_ids(_tokenizer(processor), choices)
    out: list[dict[str, float]] = []
    for idx in _chunks(len(messages), batch_size):
        logits = next_token_logits(
            model, processor, [messages[i] for i in idx], None if images is None else [images[i] for i in idx]
        )
        probs = torch.softmax(logits, dim=-1)[:, ids]
        if normalize:
            probs = probs / probs.sum(dim=-1, keepdim=True).clamp_min(1e-30)
        out.extend({ch: float(p) for ch, p in zip(choices, row)} for row in probs.tolist())
    return out


def param_count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def config_dict(cfg: VLMConfig) -> dict:
    """The config as plain data, for ``metrics.json`` / reproducibility records."""
    return asdict(cfg)
