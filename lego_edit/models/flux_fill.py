"""The edit bricks' diffusion model, ``flux_fill`` backend: FLUX.1-Fill-dev through diffusers, one peft LoRA per
edit brick, behind the same interface as the ``unet`` backend (``inpainting.UNetInpainter``).

Two ways to put an edit to a Fill model, chosen per brick (``FluxFillConfig.diptych_bricks``):

* **diptych** (ICEdit, arXiv 2504.20690): one canvas, the source on the left and the image to edit on the right;
  the Fill mask covers the right half (or, when the brick has a mask, that mask on the right half); the prompt is
  "A diptych with two side-by-side images of the same scene. On the right, the scene is exactly the same as on the
  left but <instruction>". The model sees the whole unedited source while it regenerates the right half.
* **masked fill**: the image itself with the brick's mask, and a prompt that describes what fills the mask,
  which is what Fill-dev was trained to do, at half a diptych's cost (one image wide instead of two).

Per brick (defaults, as the published release where it used Fill-dev):

* RCM, STYLE, ENV, POSE: diptych. They change what is *inside* the region while keeping its content (the shape of
  the recoloured object, the layout of the restyled scene, the object being turned), and masked fill erases exactly
  that content; the diptych keeps it in view on the left. The published release runs these four as ICEdit LoRAs
  at 768 px, guidance 50, 25 steps; RCM's right-half mask is the object's mask grown a little, and STYLE's prompt
  also carries the scene caption.
* FILL, INPAINT, CBG: masked fill. Nothing inside their masks is to be kept (a new object, an erased object, a new
  background), so the left half would only show the model what to discard. The release runs FILL as plain
  Fill-dev and INPAINT as a LoRA on masked fill too (empty prompt, guidance 30), starting part-way from
  FASTINPAINT's pre-inpainted image (``preimage``) at the strength FASTINPAINT scored (``score``), as here;
  CBG used FLUX.1-Canny in the release, which is a second base: here the
  background mask is filled from the described background instead, so one base serves every brick. FILL with an
  RGBA ``preimage`` (a reference object) is a diptych too: the object on white on the left, the image on the right.
Set ``diptych=False`` to run every brick as masked fill.

Outside the brick's mask the output is the input, exactly (the Fill model regenerates the whole canvas through
the VAE; the result is resized back and pasted inside the mask only). ``pretrained=None`` builds every component
tiny from config with tokenizers trained on the given texts: the same code path, for tests and CPU checks.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import FluxFillPipeline, FluxTransformer2DModel
from diffusers.pipelines.flux.pipeline_flux import calculate_shift, retrieve_timesteps
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict
from PIL import Image
from torch import nn

from .flux_tiny import TinyFluxConfig, tiny_pipeline

EDIT_BRICKS = ("FILL", "RCM", "INPAINT", "CBG", "STYLE", "ENV", "POSE")
DIPTYCH_PREFIX = "A diptych with two side-by-side images of the same scene. "
DIPTYCH_RIGHT = "On the right, the scene is exactly the same as on the left but "
LORA_WEIGHTS = "pytorch_lora_weights.safetensors"
CONFIG_NAME = "edit_model.json"  # as the unet backend: {"backend": ..., **config}; bricks.models dispatches on it

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


# --- prompts ---------------------------------------------------------------------------------------------------
_VERBS = {
    "make",
    "change",
    "turn",
    "replace",
    "recolor",
    "recolour",
    "paint",
    "add",
    "remove",
    "convert",
    "give",
    "set",
    "rotate",
    "let",
    "put",
    "erase",
    "swap",
    "transform",
    "render",
    "point",
}
_BACKGROUND_LEAD = re.compile(
    r"^(?:please\s+)?(?:change|replace|make|turn|set|switch)\s+the\s+background\s+"
    r"(?:to|into|with|as)\s+",
    re.I,
)


def _clean(text: str | None) -> str:
    return " ".join((text or "").split()).rstrip(".")


def instruction(brick: str, prompt: str = "", style: str | None = None) -> str:
    """The edit as an instruction clause for the diptych prompt ('make it night', 'the object is now blue')."""
    p, style = _clean(prompt), _clean(style)
    if brick == "STYLE":
        return f"rendered in {style}" if style else (p if p else "restyled")
    if p and p.split()[0].lower() in _VERBS:
        return p
    if brick == "RCM":
        return f"the object is now {p}" if p else "the object has another colour"
    if brick == "INPAINT":
        return f"with the {p} removed" if p else "with the object removed"
    if brick == "CBG":
        return f"with {p} as the background" if p else "with another background"
    return f"with {p}" if p else "edited"


def description(brick: str, prompt: str = "", style: str | None = None) -> str:
    """What fills the mask, as a masked-fill prompt ('a red circle', 'a blue striped background')."""
    p, style = _clean(prompt), _clean(style)
    if brick in ("FILL", "INPAINT"):
        return p  # an object description or a caption; INPAINT's is empty, as in the published release
    if brick == "CBG":
        return _BACKGROUND_LEAD.sub("", p)
    if brick == "STYLE":
        return ", ".join(x for x in (p, style) if x)
    return instruction(brick, prompt, style)


def flux_prompt(brick: str, prompt: str = "", style: str | None = None, mode: str = "diptych") -> str:
    """The FLUX prompt of an edit brick call; ``inpainting.edit_text`` gives the same call for the unet backend."""
    if mode != "diptych":
        return description(brick, prompt, style)
    context = f"{_clean(prompt)}. " if brick == "STYLE" and _clean(prompt) else ""  # STYLE's prompt is a caption
    return DIPTYCH_PREFIX + context + DIPTYCH_RIGHT + instruction(brick, prompt, style)


# --- images ----------------------------------------------------------------------------------------------------
def _resize_rgb(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 HxWx3 -> (h, w) = size."""
    a = np.ascontiguousarray(a[:, :, :3])
    if a.shape[:2] == size:
        return a
    return np.asarray(Image.fromarray(a).resize((size[1], size[0]), Image.Resampling.BICUBIC))


def _resize_mask(m: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Mask -> (h, w) {0, 1}; a working pixel is in the mask if any part of it is (the box filter's coverage)."""
    m = (m > 0).astype(np.uint8) * 255
    if m.shape != size:
        m = np.asarray(Image.fromarray(m).resize((size[1], size[0]), Image.Resampling.BOX))
    return (m > 0).astype(np.uint8)


def _dilate(m: np.ndarray, radius: int) -> np.ndarray:
    if radius < 1 or not m.any():
        return m
    t = torch.from_numpy(m).float()[None, None]
    return F.max_pool2d(t, 2 * radius + 1, stride=1, padding=radius)[0, 0].numpy().astype(np.uint8)


def _reference_half(rgba: np.ndarray, mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A reference object (RGBA) on white, fitted into the mask's box, as the left half of a FILL diptych."""
    h, w = size
    out = np.full((h, w, 3), 255, np.uint8)
    alpha = rgba[:, :, 3] > 0
    rows, cols = np.flatnonzero(alpha.any(1)), np.flatnonzero(alpha.any(0))
    mrows, mcols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if rows.size == 0 or mrows.size == 0:
        return out
    obj = rgba[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    y0, y1, x0, x1 = mrows[0], mrows[-1] + 1, mcols[0], mcols[-1] + 1
    scale = min((y1 - y0) / obj.shape[0], (x1 - x0) / obj.shape[1])
    oh, ow = max(1, round(obj.shape[0] * scale)), max(1, round(obj.shape[1] * scale))
    obj = np.asarray(Image.fromarray(np.ascontiguousarray(obj)).resize((ow, oh), Image.Resampling.BICUBIC))
    oy, ox = y0 + (y1 - y0 - oh) // 2, x0 + (x1 - x0 - ow) // 2
    a = obj[:, :, 3:4].astype(np.float32) / 255
    region = out[oy : oy + oh, ox : ox + ow].astype(np.float32)
    out[oy : oy + oh, ox : ox + ow] = np.rint(a * obj[:, :, :3] + (1 - a) * region).astype(np.uint8)
    return out


@dataclass
class Layout:
    """One edit as the Fill model sees it: the conditioning canvas (masked by ``mask``), the model's mask (0/1),
    an optional start image (strength < 1), the training target, and where the edited image lies in the canvas."""

    mode: str  # "diptych", "reference" (FILL with an RGBA object) or "fill"
    canvas: np.ndarray  # uint8 (h, W, 3)
    mask: np.ndarray  # uint8 (h, W), 1 = generate
    init: np.ndarray | None  # uint8 (h, W, 3) or None
    target: np.ndarray | None  # uint8 (h, W, 3) or None
    x0: int  # the edited image is canvas[:, x0:]


@contextlib.contextmanager
def _several_adapters():
    """One adapter per brick is the design: silence peft's warning about a second adapter."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
        yield


# --- the editor ------------------------------------------------------------------------------------------------
class FluxFillEditor(nn.Module):
    backend = "flux_fill"

    def __init__(self, cfg: FluxFillConfig, pipe: FluxFillPipeline):
        super().__init__()
        self.cfg = cfg
        self.pipe = pipe
        pipe.set_progress_bar_config(disable=True)
        # Registered here so .to(), .parameters() and the training loop see them; the pipeline shares them.
        self.transformer = pipe.transformer
        self.vae = pipe.vae
        self.text_encoder = pipe.text_encoder
        self.text_encoder_2 = pipe.text_encoder_2

    # --- construction ------------------------------------------------------------------------------------------
    @classmethod
    def build(cls, cfg: FluxFillConfig, texts: list[str]) -> FluxFillEditor:
        """Load the pretrained pipeline (every weight frozen: LoRAs only), or build tiny components from config
        with CLIP and T5 tokenizers trained on ``texts`` plus the prompt templates (transformer and text encoders
        trainable, the VAE frozen as in FLUX)."""
        dtype = DTYPES[cfg.dtype]
        if cfg.pretrained:
            pipe = FluxFillPipeline.from_pretrained(cfg.pretrained, dtype=dtype, use_safetensors=True)
            model = cls(cfg, pipe)
            model.requires_grad_(False)
            return model._own_memory()
        corpus = list(texts) + [
            flux_prompt(b, p, s, m)
            for b in EDIT_BRICKS
            for m in ("diptych", "fill")
            for p, s in (("", None), ("a red circle", "sketch style"))
        ]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.tiny.seed)
            pipe = tiny_pipeline(cfg.tiny, corpus)
        if dtype != torch.float32:
            pipe.to(dtype=dtype)
        model = cls(cfg, pipe)
        model.vae.requires_grad_(False)
        return model

    @property
    def device(self) -> torch.device:
        return next(self.transformer.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return self.transformer.dtype

    @property
    def vae_scale_factor(self) -> int:
        return self.pipe.vae_scale_factor

    # --- layout ------------------------------------------------------------------------------------------------
    def mode(self, brick: str, preimage: np.ndarray | None = None) -> str:
        if brick == "FILL" and preimage is not None and preimage.ndim == 3 and preimage.shape[2] == 4:
            return "reference"
        return "diptych" if self.cfg.diptych and brick in self.cfg.diptych_bricks else "fill"

    def working_size(self, height: int, width: int) -> tuple[int, int]:
        """(h, w): about resolution^2 pixels, the aspect kept, both multiples of 2 x the VAE factor (packing)."""
        m = 2 * self.vae_scale_factor
        scale = self.cfg.resolution / math.sqrt(height * width)
        return max(m, round(height * scale / m) * m), max(m, round(width * scale / m) * m)

    def layout(
        self,
        brick: str,
        image: np.ndarray,
        mask: np.ndarray | None,
        preimage: np.ndarray | None = None,
        target: np.ndarray | None = None,
    ) -> Layout:
        """The canvas, mask, start image and target of one edit at the working size."""
        H, W = image.shape[:2]
        if mask is not None and mask.shape[:2] != (H, W):
            raise ValueError(f"{brick}: mask {mask.shape[:2]} and image {(H, W)} differ in size")
        size = h, w = self.working_size(H, W)
        full = mask is None
        m = np.ones((H, W), np.uint8) if full else (mask > 0).astype(np.uint8)
        model_mask = _resize_mask(m, size)
        if not full:
            model_mask = _dilate(model_mask, round(self.cfg.mask_dilation * w))
        img = _resize_rgb(image, size)
        tgt = None if target is None else _resize_rgb(target, size)
        mode = self.mode(brick, preimage)
        same = preimage is not None and preimage.ndim == 3 and preimage.shape[2] == 3 and preimage.shape[:2] == (H, W)
        start = _resize_rgb(preimage, size) if same else None
        if mode == "fill":
            return Layout(mode, img, model_mask, start, tgt, 0)
        left = img if mode == "diptych" else _reference_half(preimage, m, (H, W))
        left = _resize_rgb(left, size)
        zeros = np.zeros_like(model_mask)
        return Layout(
            mode,
            np.concatenate([left, img], 1),
            np.concatenate([zeros, model_mask], 1),
            None if start is None else np.concatenate([left, start], 1),
            None if tgt is None else np.concatenate([left, tgt], 1),
            w,
        )

    def guidance_for(self, mode: str) -> float:
        return self.cfg.guidance_scale if mode == "diptych" else self.cfg.fill_guidance_scale

    # --- the model ---------------------------------------------------------------------------------------------
    def _to_unit(self, arrays: list[np.ndarray]) -> torch.Tensor:
        x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 127.5 - 1
        return x.to(self.device, self.vae.dtype)

    def _condition(self, canvas: torch.Tensor, mask: torch.Tensor, generator) -> torch.Tensor:
        """Fill conditioning, packed: [masked-image latents, mask] as FluxFillPipeline builds them."""
        b, _, h, w = canvas.shape
        masked = canvas * (1 - mask)
        mask_p, latents_p = self.pipe.prepare_mask_latents(
            mask, masked, b, self.vae.config.latent_channels, 1, h, w, self.dtype, self.device, generator
        )
        return torch.cat([latents_p, mask_p], dim=-1)

    def _encode(self, prompts: list[str]):
        return self.pipe.encode_prompt(
            prompt=prompts, prompt_2=None, device=self.device, max_sequence_length=self.cfg.max_sequence_length
        )

    def _velocity(self, latents_p, cond_p, sigma, text, img_ids, guidance: float) -> torch.Tensor:
        prompt_embeds, pooled, text_ids = text
        g = (
            torch.full((latents_p.shape[0],), guidance, device=self.device, dtype=torch.float32)
            if self.transformer.config.guidance_embeds
            else None
        )
        return self.transformer(
            hidden_states=torch.cat([latents_p, cond_p], dim=2).to(self.dtype),
            timestep=sigma.to(self.dtype),
            guidance=g,
            pooled_projections=pooled,
            encoder_hidden_states=prompt_embeds,
            txt_ids=text_ids,
            img_ids=img_ids,
            return_dict=False,
        )[0]

    # --- training ----------------------------------------------------------------------------------------------
    def training_data(self, samples: list[dict]) -> dict:
        """Edit samples (source, mask, target, preimage?, brick, prompt, style?) by reference, with their FLUX
        prompts and their count (``size``). Canvases are built per batch in ``training_loss``: a 50k-pair set of
        768 px diptychs would not fit in memory."""
        kept, prompts = [], []
        for s in samples:
            if s["brick"] not in EDIT_BRICKS:
                raise ValueError(f"not an edit brick sample: {s['brick']!r}")
            kept.append(s)
            prompts.append(
                flux_prompt(s["brick"], s.get("prompt", ""), s.get("style"), self.mode(s["brick"], s.get("preimage")))
            )
        return {"samples": kept, "prompts": prompts, "size": len(kept), "brick": [x["brick"] for x in kept]}

    def training_loss(self, data: dict, index: torch.LongTensor, generator: torch.Generator) -> torch.Tensor:
        """FLUX Fill flow matching on the batch ``index``: x_s = (1 - s) x0 + s noise with s ~ U[0, 1], the packed
        noisy latents concatenated with the Fill conditioning, the target noise - x0; the mean over the batch."""
        groups: dict[tuple, list] = {}
        for i in index.tolist():
            s = data["samples"][i]
            lay = self.layout(s["brick"], s["source"], s["mask"], s.get("preimage"), s["target"])
            groups.setdefault((lay.canvas.shape, self.guidance_for(lay.mode)), []).append((lay, data["prompts"][i]))
        total = 0.0
        text_grad = any(p.requires_grad for m in (self.text_encoder, self.text_encoder_2) for p in m.parameters())
        for (_, guidance), items in groups.items():
            lays, prompts = [x[0] for x in items], [x[1] for x in items]
            b = len(lays)
            canvas, target = self._to_unit([x.canvas for x in lays]), self._to_unit([x.target for x in lays])
            mask = torch.from_numpy(np.stack([x.mask for x in lays])[:, None]).to(self.device, self.vae.dtype)
            with torch.no_grad():
                x0 = self.pipe._encode_vae_image(target, generator).to(self.dtype)
                cond = self._condition(canvas, mask, generator)
            c, lh, lw = x0.shape[1:]
            noise = torch.randn(x0.shape, generator=generator).to(x0)
            sigma = torch.rand(b, generator=generator).to(self.device)
            s = sigma.view(b, 1, 1, 1).to(x0.dtype)
            noisy = self.pipe._pack_latents((1 - s) * x0 + s * noise, b, c, lh, lw)
            goal = self.pipe._pack_latents(noise - x0, b, c, lh, lw)
            img_ids = self.pipe._prepare_latent_image_ids(b, lh // 2, lw // 2, self.device, self.dtype)
            with torch.set_grad_enabled(text_grad and torch.is_grad_enabled()):
                text = self._encode(prompts)
            pred = self._velocity(noisy, cond, sigma, text, img_ids, guidance)
            inside = (cond[..., -4 * self.vae_scale_factor**2 :].amax(-1, keepdim=True) > 0.5).float()
            weight = inside + self.cfg.outside_weight * (1 - inside)
            total = total + (weight * (pred.float() - goal.float()) ** 2).mean() * b
        return total / len(index)

    # --- inference ---------------------------------------------------------------------------------------------
    @torch.no_grad()
    def edit(
        self,
        brick: str,
        images: list[np.ndarray],
        masks: list[np.ndarray | None],
        prompts: list[str],
        *,
        preimages: list[np.ndarray | None] | None = None,
        strengths: list[float | None] | None = None,
        styles: list[str | None] | None = None,
        seed: int = 0,
        seeds: list[int] | None = None,
        batch_size: int = 4,
    ) -> list[np.ndarray]:
        """Edit each image inside its mask (None: the whole image); returns RGB uint8 images of the input sizes,
        equal to the input outside the mask. ``preimages``: INPAINT's pre-inpainted image (the start image when
        the strength is below 1) or FILL's RGBA reference object; ``strengths`` in (0, 1] start the sampler
        part-way. Item i's noise comes from its own generator, seeded ``seeds[i]`` (default
        ``seed * 1_000_003 + i``), so its noise does not depend on the batching (its pixels can, by a grey level:
        batched matmuls round differently); the same call with the same seed gives the same output."""
        self.eval()
        self.set_brick(brick)
        n = len(images)
        masks = list(masks) if masks is not None else [None] * n
        preimages = list(preimages) if preimages is not None else [None] * n
        styles = list(styles) if styles is not None else [None] * n
        jobs: dict[tuple, list] = {}
        for i in range(n):
            lay = self.layout(brick, images[i], masks[i], preimages[i])
            st = 1.0 if strengths is None or strengths[i] is None else float(strengths[i])
            st = float(np.clip(st, 1.0 / self.cfg.num_inference_steps, 1.0))
            if st < 1.0 and lay.init is None:  # no pre-inpainted image: start part-way from the input itself
                lay.init = lay.canvas
            key = (lay.canvas.shape, lay.mode, st)
            jobs.setdefault(key, []).append((i, lay, flux_prompt(brick, prompts[i], styles[i], lay.mode)))
        results: list[np.ndarray | None] = [None] * n
        item_seeds = list(seeds) if seeds is not None else [seed * 1_000_003 + i for i in range(n)]
        for (_, mode, strength), items in jobs.items():
            for start in range(0, len(items), batch_size):
                chunk = items[start : start + batch_size]
                edited = self._sample(
                    [x[1] for x in chunk],
                    [x[2] for x in chunk],
                    strength,
                    self.guidance_for(mode),
                    [torch.Generator().manual_seed(item_seeds[x[0]]) for x in chunk],
                )
                for (i, lay, _), out in zip(chunk, edited):
                    results[i] = self._paste(images[i], masks[i], out[:, lay.x0 :])
        return results

    def _sample(
        self,
        lays: list[Layout],
        prompts: list[str],
        strength: float,
        guidance: float,
        generators: list[torch.Generator],
    ) -> np.ndarray:
        """FluxFillPipeline's sampling loop, with the conditioning from the canvas and the start from ``init``."""
        b, dev = len(lays), self.device
        canvas = self._to_unit([x.canvas for x in lays])
        mask = torch.from_numpy(np.stack([x.mask for x in lays])[:, None]).to(dev, self.vae.dtype)
        _, _, h, w = canvas.shape
        c = self.vae.config.latent_channels
        lh, lw = h // self.vae_scale_factor, w // self.vae_scale_factor
        noise = torch.cat([torch.randn((1, c, lh, lw), generator=g) for g in generators]).to(dev, self.dtype)
        cond = self._condition(canvas, mask, generators)
        text = self._encode(prompts)
        sched = self.pipe.scheduler
        steps = self.cfg.num_inference_steps
        mu = calculate_shift(
            (lh // 2) * (lw // 2),
            sched.config.get("base_image_seq_len", 256),
            sched.config.get("max_image_seq_len", 4096),
            sched.config.get("base_shift", 0.5),
            sched.config.get("max_shift", 1.15),
        )
        retrieve_timesteps(sched, steps, dev, sigmas=np.linspace(1.0, 1 / steps, steps), mu=mu)
        timesteps, _ = self.pipe.get_timesteps(steps, strength, dev)
        if strength < 1.0:
            x_init = self.pipe._encode_vae_image(self._to_unit([x.init for x in lays]), generators).to(self.dtype)
            latents = sched.scale_noise(x_init, timesteps[:1].repeat(b), noise)
        else:
            latents = noise
        latents = self.pipe._pack_latents(latents, b, c, lh, lw)
        img_ids = self.pipe._prepare_latent_image_ids(b, lh // 2, lw // 2, dev, self.dtype)
        for t in timesteps:
            v = self._velocity(latents, cond, (t / 1000).expand(b).to(dev), text, img_ids, guidance)
            latents = sched.step(v, t, latents, return_dict=False)[0]
        latents = self.pipe._unpack_latents(latents, h, w, self.vae_scale_factor)
        latents = latents / self.vae.config.scaling_factor + self.vae.config.shift_factor
        pix = self.vae.decode(latents.to(self.vae.dtype), return_dict=False)[0]
        pix = ((pix.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return pix.permute(0, 2, 3, 1).cpu().numpy()

    @staticmethod
    def _paste(image: np.ndarray, mask: np.ndarray | None, edited: np.ndarray) -> np.ndarray:
        H, W = image.shape[:2]
        out = _resize_rgb(edited, (H, W))
        if mask is None:
            return out
        return np.where(mask[:, :, None] > 0, out, image[:, :, :3]).astype(np.uint8)

    # --- adapters ----------------------------------------------------------------------------------------------
    def adapters(self) -> list[str]:
        return list(getattr(self.transformer, "peft_config", {}) or {})

    def add_lora(self, brick: str, rank: int | None = None, alpha: int | None = None) -> None:
        """A new trainable LoRA for ``brick`` (ICEdit's targets, gaussian init so it starts as the base); every
        other weight is frozen and the LoRA weights are kept in float32."""
        rank = rank or self.cfg.lora_rank
        alpha = alpha or (self.cfg.lora_alpha if rank == self.cfg.lora_rank else None) or rank
        self.requires_grad_(False)
        config = LoraConfig(
            r=rank, lora_alpha=alpha, target_modules=self.cfg.lora_target_modules, init_lora_weights="gaussian"
        )
        with _several_adapters():
            self.transformer.add_adapter(config, adapter_name=brick)
        for name, p in self.transformer.named_parameters():
            if "lora_" in name and f".{brick}." in name:
                p.data = p.data.float()
                p.requires_grad_(True)
        if self.cfg.gradient_checkpointing:
            self.transformer.enable_gradient_checkpointing()
        self.set_brick(brick)

    def load_lora(self, brick: str, path: str | Path) -> None:
        """Load a pipeline-format LoRA (a folder holding pytorch_lora_weights.safetensors, or the file) as
        ``brick``'s adapter, replacing one of that name."""
        path = Path(path)
        folder, weight = (path.parent, path.name) if path.is_file() else (path, LORA_WEIGHTS)
        if brick in self.adapters():
            self.transformer.delete_adapters(brick)
        with _several_adapters():
            self.pipe.load_lora_weights(str(folder), weight_name=weight, adapter_name=brick, use_safetensors=True)
        for name, p in self.transformer.named_parameters():
            if "lora_" in name:
                p.requires_grad_(False)
        self._own_memory()
        self.set_brick(brick)

    def save_lora(self, brick: str, out_dir: str | Path) -> None:
        """``out_dir/pytorch_lora_weights.safetensors`` in diffusers' pipeline format (keys ``transformer.*``),
        with the adapter's LoraConfig as metadata: ``FluxFillPipeline.load_lora_weights(out_dir)`` reads it."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        config = self.transformer.peft_config[brick]
        state = {
            k: v.detach().contiguous()  # as trained (float32): the file is small and the round trip exact
            for k, v in get_peft_model_state_dict(self.transformer, adapter_name=brick).items()
        }
        meta = {
            "r": config.r,
            "lora_alpha": config.lora_alpha,
            "target_modules": self.cfg.lora_target_modules,
            "init_lora_weights": "gaussian",
        }
        FluxFillPipeline.save_lora_weights(
            str(out_dir), transformer_lora_layers=state, safe_serialization=True, transformer_lora_adapter_metadata=meta
        )

    def set_brick(self, brick: str) -> None:
        """Activate the brick's LoRA if one is loaded, else run the shared base."""
        loaded = self.adapters()
        if brick in loaded:
            self.transformer.enable_adapters()
            self.transformer.set_adapters([brick])
        elif loaded:
            self.transformer.disable_adapters()

    # --- persistence -------------------------------------------------------------------------------------------
    def save_pretrained(self, out_dir: str | Path) -> None:
        """``edit_model.json`` (the backend and config), the LoRAs under ``loras/<brick>/``, and for a tiny base
        its pipeline under ``pipeline/``. A pretrained base is not copied: the config points at it (a hub id, or
        a local folder made absolute)."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        meta = asdict(self.cfg)
        if self.cfg.pretrained:
            local = Path(self.cfg.pretrained).expanduser()
            if local.exists():
                meta["pretrained"] = str(local.resolve())
        else:
            self._save_base(out_dir / "pipeline")
        adapters = self.adapters()
        for brick in adapters:
            self.save_lora(brick, out_dir / "loras" / brick)
        (out_dir / CONFIG_NAME).write_text(
            json.dumps({"backend": self.backend, "adapters": adapters, **meta}, indent=2)
        )

    def _save_base(self, out_dir: Path) -> None:
        """The pipeline without adapters (peft's layers would change the transformer's weight names)."""
        adapters = self.adapters()
        if not adapters:
            self.pipe.save_pretrained(out_dir, safe_serialization=True)
            return
        base = {k.replace(".base_layer.", "."): v for k, v in self.transformer.state_dict().items() if "lora_" not in k}
        clean = FluxTransformer2DModel.from_config(self.transformer.config)
        if self.dtype != torch.float32:
            clean = clean.to(self.dtype)
        clean.load_state_dict(base, strict=True)
        parts = {name: getattr(self.pipe, name) for name in self.pipe.components}
        FluxFillPipeline(**{**parts, "transformer": clean}).save_pretrained(out_dir, safe_serialization=True)

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device | None = None) -> FluxFillEditor:
        path = Path(path)
        meta = json.loads((path / CONFIG_NAME).read_text())
        meta.pop("backend", None)
        adapters = meta.pop("adapters", [])
        cfg = FluxFillConfig(**meta)
        if cfg.pretrained:
            model = cls.build(cfg, [])
        else:
            pipe = FluxFillPipeline.from_pretrained(path / "pipeline", dtype=DTYPES[cfg.dtype], use_safetensors=True)
            model = cls(cfg, pipe)
            model.requires_grad_(False)
        for brick in adapters:
            model.load_lora(brick, path / "loras" / brick)
        model.set_brick("")  # no brick active until edit() or set_brick() picks one
        return model.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))._own_memory().eval()

    def _own_memory(self) -> FluxFillEditor:
        """Copy CPU weights that safetensors loading left at unaligned addresses into torch's (64-byte aligned)
        memory: MKL's CPU matmuls round differently on unaligned inputs, so a reloaded model would differ from
        the saved one in the last bits (and now and then by one grey level) although the weights are equal."""
        for module in self.modules():
            for group in (module._parameters, module._buffers):
                for name, t in group.items():
                    if t is not None and t.device.type == "cpu" and t.data_ptr() % 64:
                        if isinstance(t, nn.Parameter):
                            t.data = t.data.clone()
                        else:
                            group[name] = t.clone()
        return self
