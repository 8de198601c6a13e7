"""The diffusers ``UNet2DConditionModel`` shared by the segmentation and the edit bricks, built from config,
plus the coordinate channels both feed it (so convolutions know where in the image they are, which
"on the left" and world-anchored textures need)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from diffusers import UNet2DConditionModel


@dataclass
class UNetConfig:
    """The UNet's levels, attention and conditioning."""

    block_out_channels: list[int] = field(
        default_factory=lambda: [16, 32, 64], metadata={"help": "Channels per resolution level."}
    )
    attention_levels: int = field(default=1, metadata={"help": "Lowest levels that get cross-attention to the prompt."})
    mid_attention: bool = field(default=False, metadata={"help": "Cross-attention in the middle block too."})
    layers_per_block: int = field(default=1, metadata={"help": "ResNet layers per down block."})
    attention_head_dim: int = field(default=8, metadata={"help": "Channels per attention head."})
    norm_num_groups: int = field(default=8, metadata={"help": "Group-norm groups (divides every channel count)."})
    film: bool = field(
        default=True,
        metadata={
            "help": "Prompt and timestep scale and shift every ResNet (FiLM), "
            "not only shift it: much stronger text conditioning."
        },
    )

    def __post_init__(self):
        if any(c % self.norm_num_groups for c in self.block_out_channels):
            raise ValueError(
                f"every block_out_channels entry must be divisible by norm_num_groups={self.norm_num_groups}"
            )
        if not 0 <= self.attention_levels <= len(self.block_out_channels):
            raise ValueError("attention_levels must be between 0 and the number of levels")

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.block_out_channels) - 1)


def build_unet(
    cfg: UNetConfig, sample_size: int, in_channels: int, out_channels: int, cross_attention_dim: int
) -> UNet2DConditionModel:
    n = len(cfg.block_out_channels)
    attn = [i >= n - cfg.attention_levels for i in range(n)]
    down = tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attn)
    up = tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn))
    return UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=in_channels,
        out_channels=out_channels,
        block_out_channels=tuple(cfg.block_out_channels),
        down_block_types=down,
        up_block_types=up,
        mid_block_type="UNetMidBlock2DCrossAttn" if cfg.mid_attention or any(attn) else None,
        layers_per_block=cfg.layers_per_block,
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=cfg.attention_head_dim,
        norm_num_groups=cfg.norm_num_groups,
        class_embed_type="projection",
        projection_class_embeddings_input_dim=cross_attention_dim,
        resnet_time_scale_shift="scale_shift" if cfg.film else "default",
    )


def coord_channels(
    height: int, width: int, x0: int = 0, y0: int = 0, full_width: int | None = None, full_height: int | None = None
) -> torch.Tensor:
    """(2, height, width): x and y of each pixel in the whole image, scaled to [-1, 1]."""
    fw, fh = full_width or width, full_height or height
    xs = (torch.arange(x0, x0 + width, dtype=torch.float32) + 0.5) / fw * 2 - 1
    ys = (torch.arange(y0, y0 + height, dtype=torch.float32) + 0.5) / fh * 2 - 1
    return torch.stack([xs[None, :].expand(height, width), ys[:, None].expand(height, width)])
