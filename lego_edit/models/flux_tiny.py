"""Tiny FLUX.1-Fill components built from config, with tokenizers trained on the given texts: the ``flux_fill``
backend's code path for tests and CPU checks, where no weights can be downloaded.

What must match: the transformer takes 4*latent (packed noisy latents) + 4*latent (masked-image latents) +
4*scale^2 (the packed mask) input channels; the RoPE axes sum to the head width; the joint attention width is T5's
d_model and the pooled projection CLIP's hidden size; CLIP has 77 positions, since the pipeline pads to 77."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxFillPipeline, FluxTransformer2DModel


@dataclass
class TinyFluxConfig:
    """Sizes of the components built from config when ``pretrained`` is None (Fill-dev: VAE channels
    (128, 256, 512, 512), 16 latent channels, 19 + 38 blocks of 24 heads x 128, T5-XXL and CLIP-L)."""

    vae_channels: list[int] = field(
        default_factory=lambda: [8, 16],
        metadata={"help": "VAE block widths; len - 1 halvings (Fill-dev: 4 blocks, 8x)."},
    )
    latent_channels: int = field(default=4, metadata={"help": "VAE latent channels (Fill-dev: 16)."})
    num_layers: int = field(default=1, metadata={"help": "Double-stream transformer blocks."})
    num_single_layers: int = field(default=1, metadata={"help": "Single-stream transformer blocks."})
    num_attention_heads: int = field(default=2, metadata={"help": "Attention heads."})
    attention_head_dim: int = field(default=16, metadata={"help": "Head width; the RoPE axes must sum to it."})
    axes_dims_rope: list[int] = field(default_factory=lambda: [4, 6, 6], metadata={"help": "RoPE dims per axis."})
    text_dim: int = field(default=32, metadata={"help": "Width of the tiny CLIP and T5 encoders."})
    text_layers: int = field(default=1, metadata={"help": "Layers of each text encoder."})
    text_heads: int = field(default=2, metadata={"help": "Heads of each text encoder."})
    clip_vocab_size: int = field(default=1000, metadata={"help": "Upper bound of the trained CLIP BPE vocabulary."})
    t5_vocab_size: int = field(default=400, metadata={"help": "Upper bound of the trained T5 Unigram vocabulary."})
    seed: int = field(default=0, metadata={"help": "Seed of the random initialisation."})

    def __post_init__(self):
        if sum(self.axes_dims_rope) != self.attention_head_dim:
            raise ValueError(
                f"axes_dims_rope {self.axes_dims_rope} must sum to attention_head_dim {self.attention_head_dim}"
            )
        if self.text_dim % self.text_heads:
            raise ValueError(f"text_dim {self.text_dim} must be divisible by text_heads {self.text_heads}")


def tiny_pipeline(tiny: TinyFluxConfig, corpus: list[str]) -> FluxFillPipeline:
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    clip_tok, t5_tok = (
        train_clip_tokenizer(corpus, tiny.clip_vocab_size),
        train_t5_tokenizer(corpus, tiny.t5_vocab_size),
    )
    d = tiny.text_dim
    clip = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(clip_tok),
            hidden_size=d,
            intermediate_size=2 * d,
            num_hidden_layers=tiny.text_layers,
            num_attention_heads=tiny.text_heads,
            max_position_embeddings=77,
            projection_dim=d,
            bos_token_id=clip_tok.bos_token_id,
            eos_token_id=clip_tok.eos_token_id,
            pad_token_id=clip_tok.pad_token_id,
        )
    )
    t5 = T5EncoderModel(
        T5Config(
            vocab_size=len(t5_tok),
            d_model=d,
            d_kv=d // tiny.text_heads,
            d_ff=2 * d,
            num_layers=tiny.text_layers,
            num_heads=tiny.text_heads,
            relative_attention_num_buckets=8,
            pad_token_id=t5_tok.pad_token_id,
            eos_token_id=t5_tok.eos_token_id,
            decoder_start_token_id=t5_tok.pad_token_id,
        )
    )
    n = len(tiny.vae_channels)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * n,
        up_block_types=["UpDecoderBlock2D"] * n,
        block_out_channels=list(tiny.vae_channels),
        layers_per_block=1,
        latent_channels=tiny.latent_channels,
        norm_num_groups=min(32, math.gcd(*tiny.vae_channels)),
        sample_size=32,
        scaling_factor=1.0,
        shift_factor=0.0,
        use_quant_conv=False,
        use_post_quant_conv=False,
    )
    scale = 2 ** (n - 1)
    lc = tiny.latent_channels
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=8 * lc + 4 * scale * scale,
        out_channels=4 * lc,
        num_layers=tiny.num_layers,
        num_single_layers=tiny.num_single_layers,
        attention_head_dim=tiny.attention_head_dim,
        num_attention_heads=tiny.num_attention_heads,
        joint_attention_dim=d,
        pooled_projection_dim=d,
        guidance_embeds=True,
        axes_dims_rope=tuple(tiny.axes_dims_rope),
    )
    # FLUX.1's scheduler settings: resolution-dependent shift between 0.5 (256 tokens) and 1.15 (4096).
    scheduler = FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000,
        shift=3.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
    )
    return FluxFillPipeline(
        scheduler=scheduler,
        vae=vae,
        text_encoder=clip,
        tokenizer=clip_tok,
        text_encoder_2=t5,
        tokenizer_2=t5_tok,
        transformer=transformer,
    )


def train_clip_tokenizer(texts: list[str], vocab_size: int):
    """A CLIP tokenizer (byte-level BPE with CLIP's normaliser, split and ``</w>`` word ends) trained on ``texts``;
    every byte, word-final or not, stays in the vocabulary so any text encodes without unknown tokens."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import CLIPTokenizer

    sot, eot = "<|startoftext|>", "<|endoftext|>"
    tok = Tokenizer(models.BPE(end_of_word_suffix="</w>", unk_token=eot))
    tok.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(
                Regex(
                    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]"""
                    r"""|[^\s\p{L}\p{N}]+"""
                ),
                behavior="removed",
                invert=True,
            ),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[sot, eot],
        initial_alphabet=alphabet,
        end_of_word_suffix="</w>",
        show_progress=False,
    )
    tok.train_from_iterator(sorted(set(texts)), trainer=trainer)
    model = json.loads(tok.to_str())["model"]
    vocab = dict(model["vocab"])
    for ch in sorted(alphabet):
        for piece in (ch, ch + "</w>"):
            vocab.setdefault(piece, len(vocab))
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)


def train_t5_tokenizer(texts: list[str], vocab_size: int):
    """A T5 tokenizer (Unigram over Metaspace pieces; ``<pad>``, ``</s>``, ``<unk>`` = 0, 1, 2 as T5's) trained on
    ``texts``, with every printable ASCII character in the vocabulary."""
    import string

    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import T5TokenizerFast

    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")]
    )
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size,
        special_tokens=["<pad>", "</s>", "<unk>"],
        unk_token="<unk>",
        initial_alphabet=list(string.printable.strip()),
        show_progress=False,
    )
    tok.train_from_iterator(sorted(set(texts)), trainer=trainer)
    pieces = [tuple(p) for p in json.loads(tok.to_str())["model"]["vocab"]]
    if [p[0] for p in pieces[:3]] != ["<pad>", "</s>", "<unk>"]:
        raise RuntimeError(f"unexpected special tokens {pieces[:3]}")
    return T5TokenizerFast(vocab=pieces, extra_ids=0)
