"""The segmentation bricks' model: one text-conditioned UNet serving RES, SOS and MASK-SEG.

Input channels: RGB, the x/y coordinate channels and a hint mask (MASK-SEG's user mask, zeros otherwise);
the prompt says the task ("RES: red circle on the left", "SOS:", "MASK-SEG:"). Output: mask logits.
Images of any size are resized to the model's ``image_size`` and the mask back to the input size.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from .conditional_unet import UNetConfig, build_unet, coord_channels
from .text_encoder import PromptEncoder, TextEncoderConfig

TASKS = ("RES", "SOS", "MASK-SEG")
SINGLE_OBJECT_TASKS = ("RES", "MASK-SEG")  # these name one object: keep one connected region


def most_likely_component(mask: np.ndarray, prob: np.ndarray) -> np.ndarray:
    """The connected region of ``mask`` holding the most probability mass (RES names one object; a prediction
    split over two objects keeps the likelier one: +1-2 points of held-out IoU)."""
    import cv2

    n, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    if n <= 2:
        return mask
    mass = np.bincount(labels.ravel(), weights=prob.ravel(), minlength=n)[1:]
    return labels == 1 + int(np.argmax(mass))


@dataclass
class SegmentationConfig:
    """The segmentation model (RES, SOS, MASK-SEG)."""

    image_size: int = field(default=64, metadata={"help": "Working resolution (inputs are resized to it)."})
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    unet: UNetConfig = field(default_factory=lambda: UNetConfig(block_out_channels=[16, 32, 64, 64],
                                                                attention_levels=1))
    threshold: float = field(default=0.5, metadata={"help": "Probability above which a pixel is in the mask."})
    aux_classes: list[int] = field(default_factory=lambda: [6, 9, 5, 4], metadata={
        "help": "Classes of each per-pixel auxiliary attribute head (shapes world: shape, colour, pattern, size, "
                "each + background); trained when the shards carry attribute maps; [] for none."})
    aux_weight: float = field(default=0.5, metadata={"help": "Weight of the auxiliary attribute loss."})
    embed_dim: int = field(default=32, metadata={
        "help": "Per-pixel embedding size; the mask logit is its dot product with the prompt's embedding (as in "
                "CLIPSeg/LSeg), which binds words to pixels far faster than a plain conv head."})

    def __post_init__(self):
        if isinstance(self.text, dict):
            self.text = TextEncoderConfig(**self.text)
        if isinstance(self.unet, dict):
            self.unet = UNetConfig(**self.unet)
        if self.image_size % self.unet.downsample:
            raise ValueError(f"image_size {self.image_size} must be divisible by {self.unet.downsample}")


def task_text(task: str, prompt: str = "") -> str:
    return f"{task}: {prompt}".strip()


class SegmentationModel(nn.Module):
    def __init__(self, cfg: SegmentationConfig, prompt_encoder: PromptEncoder):
        super().__init__()
        self.cfg = cfg
        self.prompt_encoder = prompt_encoder
        self.unet = build_unet(cfg.unet, cfg.image_size, in_channels=6, out_channels=cfg.embed_dim,
                               cross_attention_dim=prompt_encoder.dim)
        self.text_head = nn.Linear(prompt_encoder.dim, cfg.embed_dim + 1)
        self.aux_head = nn.Conv2d(cfg.embed_dim, sum(cfg.aux_classes), 1) if cfg.aux_classes else None
        self.register_buffer("coords", coord_channels(cfg.image_size, cfg.image_size), persistent=False)

    @classmethod
    def build(cls, cfg: SegmentationConfig, texts: list[str]) -> SegmentationModel:
        return cls(cfg, PromptEncoder.build(cfg.text, texts))

    def forward(self, images: torch.Tensor, hints: torch.Tensor, ids: torch.Tensor, with_aux: bool = False):
        """images (B,3,S,S) in [-1,1], hints (B,1,S,S) in {0,1}, ids (B,L) -> logits (B,1,S,S)
        (and the auxiliary attribute logits, one tensor per head, when ``with_aux``)."""
        tokens, pooled = self.prompt_encoder(ids)
        x = torch.cat([images, self.coords.expand(images.shape[0], -1, -1, -1), hints * 2 - 1], dim=1)
        zero_t = torch.zeros(images.shape[0], device=images.device)
        pixels = self.unet(x, zero_t, encoder_hidden_states=tokens, class_labels=pooled).sample
        head = self.text_head(pooled)
        weight, bias = head[:, :-1], head[:, -1]
        logits = torch.einsum("bchw,bc->bhw", pixels, weight) / self.cfg.embed_dim ** 0.5 + bias[:, None, None]
        if not with_aux:
            return logits[:, None]
        aux = torch.split(self.aux_head(pixels), list(self.cfg.aux_classes), dim=1) if self.aux_head is not None else ()
        return logits[:, None], aux

    def prepare(self, images: list[np.ndarray], hints: list[np.ndarray | None] | None = None):
        """Resize to the working size; returns (images, hints) tensors on the model's device."""
        s = self.cfg.image_size
        dev = self.coords.device
        ims, hs = [], []
        for i, im in enumerate(images):
            t = torch.from_numpy(np.ascontiguousarray(im[:, :, :3])).permute(2, 0, 1).float()[None] / 127.5 - 1
            ims.append(F.interpolate(t, size=(s, s), mode="bilinear", align_corners=False) if t.shape[-1] != s
                       or t.shape[-2] != s else t)
            h = None if hints is None else hints[i]
            h = (torch.zeros(1, 1, *im.shape[:2]) if h is None
                 else torch.from_numpy((h > 0).astype(np.float32))[None, None])
            hs.append(F.interpolate(h, size=(s, s), mode="nearest"))
        return torch.cat(ims).to(dev), torch.cat(hs).to(dev)

    @torch.no_grad()
    def predict(self, images: list[np.ndarray], tasks: list[str], prompts: list[str],
                hints: list[np.ndarray | None] | None = None, batch_size: int = 32) -> list[np.ndarray]:
        """Masks (uint8 0/255, each the size of its input image)."""
        self.eval()
        out: list[np.ndarray] = []
        for i in range(0, len(images), batch_size):
            sl = slice(i, i + batch_size)
            x, h = self.prepare(images[sl], None if hints is None else hints[sl])
            ids = self.prompt_encoder.tokenize([task_text(t, p) for t, p in zip(tasks[sl], prompts[sl])]).to(x.device)
            prob = torch.sigmoid(self(x, h, ids))
            for im, task, p in zip(images[sl], tasks[sl], prob):
                p = F.interpolate(p[None], size=im.shape[:2], mode="bilinear", align_corners=False)[0, 0].cpu().numpy()
                mask = p > self.cfg.threshold
                if task in SINGLE_OBJECT_TASKS:
                    mask = most_likely_component(mask, p)
                out.append(np.where(mask, 255, 0).astype(np.uint8))
        return out

    def save_pretrained(self, out_dir: str | Path) -> None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        self.prompt_encoder.save_pretrained(out_dir)
        self.unet.save_pretrained(out_dir / "unet", safe_serialization=True)
        heads = {f"text.{k}": v for k, v in self.text_head.state_dict().items()}
        if self.aux_head is not None:
            heads.update({f"aux.{k}": v for k, v in self.aux_head.state_dict().items()})
        save_file({k: v.contiguous() for k, v in heads.items()}, out_dir / "heads.safetensors")
        (out_dir / "segmentation.json").write_text(json.dumps(asdict(self.cfg), indent=2))

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | None = None) -> SegmentationModel:
        from diffusers import UNet2DConditionModel

        path = Path(path)
        cfg = SegmentationConfig(**json.loads((path / "segmentation.json").read_text()))
        model = cls(cfg, PromptEncoder.from_pretrained(path))
        model.unet = UNet2DConditionModel.from_pretrained(path / "unet")
        heads = load_file(path / "heads.safetensors")
        model.text_head.load_state_dict({k[5:]: v for k, v in heads.items() if k.startswith("text.")})
        if model.aux_head is not None:
            model.aux_head.load_state_dict({k[4:]: v for k, v in heads.items() if k.startswith("aux.")})
        return model.to(device or ("cuda" if torch.cuda.is_available() else "cpu")).eval()
