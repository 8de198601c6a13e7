"""The unet edit backend's settings (``EditModelConfig``): crop windows, prompt encoder, UNet, sampler and loss
options; kept apart from the model code in ``inpainting.py``, which re-exports it."""

from __future__ import annotations

from dataclasses import dataclass, field

from .conditional_unet import UNetConfig
from .text_encoder import TextEncoderConfig


@dataclass
class EditModelConfig:
    """The unet edit backend: windows, prompt encoder, UNet and sampler."""

    crop_size: int = field(default=32, metadata={"help": "Window side in pixels (full resolution)."})
    reference_size: int = field(default=64, metadata={"help": "Image side the coordinate channels are scaled by."})
    text: TextEncoderConfig = field(default_factory=lambda: TextEncoderConfig(max_length=32))
    unet: UNetConfig = field(default_factory=lambda: UNetConfig(block_out_channels=[16, 32, 64], attention_levels=1))
    sampling_steps: int = field(default=4, metadata={"help": "Euler steps of the flow-matching sampler."})
    outside_weight: float = field(default=0.1, metadata={"help": "Loss weight of pixels outside the mask."})
    prediction: str = field(
        default="velocity",
        metadata={
            "help": "What the UNet outputs: velocity (noise - x0, as FLUX), sample (x0 itself) or residual (x0 minus "
            "the source it is given: an output of zero keeps the source, so a brick that refines a start, INPAINT "
            "or POSE, keeps what is already right). The sampler derives the velocity from x0."
        },
    )
    box_coords: bool = field(
        default=False,
        metadata={
            "help": "Two more input channels: each pixel's place inside the mask's bounding box, -1..1 across it (a "
            "shape drawn into a box, a pattern laid on an object, follow the box, not the image)."
        },
    )
    erase_under_mask: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Bricks whose source the model never sees inside the mask: it is filled from the mask's "
            "surroundings first (FASTINPAINT's Telea fill), in training and in editing. FILL replacing an object "
            "otherwise keeps the old object's colour and pattern (a residual of zero keeps the source)."
        },
    )

    def __post_init__(self):
        if isinstance(self.text, dict):
            self.text = TextEncoderConfig(**self.text)
        if isinstance(self.unet, dict):
            self.unet = UNetConfig(**self.unet)
        if self.crop_size % self.unet.downsample:
            raise ValueError(f"crop_size {self.crop_size} must be divisible by {self.unet.downsample}")
        if self.prediction not in ("velocity", "sample", "residual"):
            raise ValueError(f"prediction must be velocity, sample or residual, got {self.prediction!r}")

    @property
    def in_channels(self) -> int:
        """Noisy target, source, mask, image coordinates (and box coordinates)."""
        return 9 + 2 * self.box_coords
