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

This module holds the editor's sampling and training; its config is in ``flux_fill_config.py``, the prompts and
canvases in ``flux_fill_inputs.py``, the LoRA adapters and persistence in ``flux_fill_weights.py`` (a mixin), and
their names are re-exported here.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from diffusers import FluxFillPipeline
from diffusers.pipelines.flux.pipeline_flux import calculate_shift, retrieve_timesteps
from torch import nn

from ..data.shard_index import sample_meta
from .flux_fill_config import (  # noqa: F401 - also re-exported: this module was their import path
    DTYPES,
    EDIT_BRICKS,
    ICEDIT_LORA_TARGETS,
    FluxFillConfig,
)
from .flux_fill_inputs import (  # noqa: F401 - also re-exported: this module was their import path
    DIPTYCH_PREFIX,
    DIPTYCH_RIGHT,
    Layout,
    _dilate,
    _reference_half,
    _resize_mask,
    _resize_rgb,
    description,
    flux_prompt,
    instruction,
)
from .flux_fill_weights import (  # noqa: F401 - also re-exported: this module was their import path
    CONFIG_NAME,
    LORA_WEIGHTS,
    FluxFillWeights,
)
from .flux_tiny import tiny_pipeline


# --- the editor ------------------------------------------------------------------------------------------------
class FluxFillEditor(FluxFillWeights, nn.Module):
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
        return self.mode_of(brick, None if preimage is None else preimage.shape)

    def mode_of(self, brick: str, preimage_shape: tuple | None) -> str:
        """fill, diptych or reference (FILL with an RGBA cut-out as its preimage), from the preimage's shape."""
        if brick == "FILL" and preimage_shape is not None and len(preimage_shape) == 3 and preimage_shape[2] == 4:
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
    def training_data(self, samples) -> dict:
        """Edit samples (source, mask, target, preimage?, brick, prompt, style?) by reference, with their FLUX
        prompts and their count (``size``). Canvases are built per batch in ``training_loss``, and a
        ``ShardSamples`` is read per batch too: a 50k-pair set of 768 px diptychs would not fit in memory. Only the
        samples' fields and image shapes are read here."""
        prompts, bricks = [], []
        for i in range(len(samples)):
            m = sample_meta(samples, i)
            if m["brick"] not in EDIT_BRICKS:
                raise ValueError(f"not an edit brick sample: {m['brick']!r}")
            bricks.append(m["brick"])
            mode = self.mode_of(m["brick"], m["__shapes__"].get("preimage"))
            prompts.append(flux_prompt(m["brick"], m.get("prompt", ""), m.get("style"), mode))
        return {"samples": samples, "prompts": prompts, "size": len(samples), "brick": bricks}

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
