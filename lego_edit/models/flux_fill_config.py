"""The ``flux_fill`` edit backend's settings (``FluxFillConfig``) and the constants they are checked against: the
edit bricks, ICEdit's LoRA target modules and the weight dtypes. Kept apart from the editor in ``flux_fill.py``,
which re-exports these names."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..layout import EDIT_BRICK_NAMES
from .flux_tiny import TinyFluxConfig

EDIT_BRICKS = EDIT_BRICK_NAMES  # the edit bricks, as lego_edit.layout names them

# ICEdit's LoRA targets (from OminiControl): every projection that touches the image tokens: the input embedder,
# the double blocks' norm1, attention and feed-forward output, the single blocks' norm, attention and MLP.
ICEDIT_LORA_TARGETS = (
    r"(.*x_embedder|.*(?<!single_)transformer_blocks\.[0-9]+\.norm1\.linear"
    r"|.*(?<!single_)transformer_blocks\.[0-9]+\.attn\.to_k|.*(?<!single_)transformer_blocks\.[0-9]+\.attn\.to_q"
    r"|.*(?<!single_)transformer_blocks\.[0-9]+\.attn\.to_v|.*(?<!single_)transformer_blocks\.[0-9]+\.attn\.to_out\.0"
    r"|.*(?<!single_)transformer_blocks\.[0-9]+\.ff\.net\.2|.*single_transformer_blocks\.[0-9]+\.norm\.linear"
    r"|.*single_transformer_blocks\.[0-9]+\.proj_mlp|.*single_transformer_blocks\.[0-9]+\.proj_out"
    r"|.*single_transformer_blocks\.[0-9]+\.attn\.to_k|.*single_transformer_blocks\.[0-9]+\.attn\.to_q"
    r"|.*single_transformer_blocks\.[0-9]+\.attn\.to_v|.*single_transformer_blocks\.[0-9]+\.attn\.to_out)"
)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class FluxFillConfig:
    pretrained: str | None = field(
        default=None,
        metadata={
            "help": "Hub id or local folder of a FluxFillPipeline, e.g. black-forest-labs/FLUX.1-Fill-dev; "
            "None: build tiny components from `tiny` (tests and CPU checks)."
        },
    )
    resolution: int = field(
        default=768,
        metadata={
            "help": "Working size: each image is resized to about resolution^2 pixels, aspect kept (one diptych half, "
            "or the whole masked-fill canvas). 768 as the published release, 512 as ICEdit."
        },
    )
    num_inference_steps: int = field(default=25, metadata={"help": "Euler steps (25 as the published release)."})
    guidance_scale: float = field(
        default=50.0,
        metadata={"help": "Fill-dev's distilled guidance for diptych bricks (50 as ICEdit and the published release)."},
    )
    fill_guidance_scale: float = field(
        default=30.0,
        metadata={
            "help": "Guidance for masked-fill bricks (30 as the published FILL and INPAINT, Fill-dev's default)."
        },
    )
    diptych: bool = field(
        default=True,
        metadata={"help": "Run the bricks in diptych_bricks as ICEdit diptychs; False: masked fill for every brick."},
    )
    diptych_bricks: list[str] = field(
        default_factory=lambda: ["RCM", "STYLE", "ENV", "POSE"],
        metadata={"help": "Bricks edited as diptychs (the others as masked fill)."},
    )
    mask_dilation: float = field(
        default=0.03,
        metadata={
            "help": "Grow the mask the model sees by this share of the working width (the release grows RCM's by "
            "35 px at 768 and INPAINT's by 25 px); the paste-back still uses the brick's own mask."
        },
    )
    max_sequence_length: int = field(default=512, metadata={"help": "T5 tokens per prompt (at most 512)."})
    dtype: str = field(default="bfloat16", metadata={"help": "Weights dtype: float32, bfloat16 or float16."})
    lora_rank: int = field(default=32, metadata={"help": "Default LoRA rank (ICEdit: 32)."})
    lora_alpha: int | None = field(default=32, metadata={"help": "Default LoRA alpha (ICEdit: 32; None: = rank)."})
    lora_target_modules: str = field(
        default=ICEDIT_LORA_TARGETS,
        metadata={"help": "peft target_modules regex (ICEdit's: attention, norm and feed-forward projections)."},
    )
    outside_weight: float = field(
        default=1.0,
        metadata={"help": "Loss weight of latent tokens outside the model's mask (1: the plain Fill loss)."},
    )
    gradient_checkpointing: bool = field(default=True, metadata={"help": "Checkpoint transformer blocks in training."})
    tiny: TinyFluxConfig = field(default_factory=TinyFluxConfig)

    def __post_init__(self):
        if isinstance(self.tiny, dict):
            self.tiny = TinyFluxConfig(**self.tiny)
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")
        if not 1 <= self.max_sequence_length <= 512:
            raise ValueError(f"max_sequence_length must be in [1, 512], got {self.max_sequence_length}")
        if self.resolution < 1 or self.num_inference_steps < 1:
            raise ValueError("resolution and num_inference_steps must be positive")
        unknown = set(self.diptych_bricks) - set(EDIT_BRICKS)
        if unknown:
            raise ValueError(f"diptych_bricks has unknown bricks {sorted(unknown)}")
