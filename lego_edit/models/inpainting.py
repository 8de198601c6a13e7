"""The edit bricks' diffusion model, ``unet`` backend: a small pixel-space inpainting UNet trained with
flow matching (as FLUX is), one base for every edit brick plus one LoRA per brick.

It works on ``crop_size`` windows at full resolution: one window centred on a small mask, or tiles over a
large one (backgrounds, whole-image styles). Inputs per window: the noisy target, the source (for INPAINT
the pre-inpainted image), the mask and x/y coordinate channels; the prompt ("RCM: blue") conditions through
cross-attention and the class embedding. Outside the mask the output is the input, exactly.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, UNet2DConditionModel
from peft import LoraConfig
from torch import nn

from ..bricks.functions import classical_fill, mask_bbox
from ..bricks.models import PREIMAGE_BRICKS, start_strength
from .conditional_unet import build_unet, coord_channels
from .inpainting_config import EditModelConfig
from .text_encoder import PromptEncoder

START_GAIN = "start_gain.json"  # in a LoRA folder: the brick's fitted start gain
LORA_TARGETS = [
    "to_q",
    "to_k",
    "to_v",
    "to_out.0",
    "proj_in",
    "proj_out",
    "ff.net.0.proj",
    "ff.net.2",
    "conv1",
    "conv2",
]


def edit_text(brick: str, prompt: str = "", style: str | None = None) -> str:
    """The conditioning text of an edit brick call, e.g. 'RCM: blue' or 'STYLE (sketch style): a red circle ...'.
    The style comes first: a long caption after it may be cut at the prompt encoder's length, the style must not."""
    return f"{brick} ({style}): {prompt}" if style else f"{brick}: {prompt}"


def windows(mask: np.ndarray, crop: int) -> list[tuple[int, int]]:
    """Top-left corners of the crop windows that cover the mask (the image is at least crop x crop)."""
    H, W = mask.shape
    box = mask_bbox(mask > 0)
    if box is None:
        return []
    x, y, w, h = box
    if w <= crop and h <= crop:
        cx, cy = x + w // 2, y + h // 2
        return [(min(max(0, cx - crop // 2), W - crop), min(max(0, cy - crop // 2), H - crop))]
    xs = sorted({min(v, W - crop) for v in range(x, x + w, crop)})
    ys = sorted({min(v, H - crop) for v in range(y, y + h, crop)})
    return [(wx, wy) for wy in ys for wx in xs if (mask[wy : wy + crop, wx : wx + crop] > 0).any()]


def box_channels(mask: np.ndarray, x0: int, y0: int, height: int, width: int) -> torch.Tensor:
    """(2, height, width) for the window at (x0, y0): x and y of each pixel relative to the mask's bounding box,
    -1 at its left / top edge and 1 at its right / bottom edge (zeros for an empty mask)."""
    box = mask_bbox(mask > 0)
    if box is None:
        return torch.zeros(2, height, width)
    x, y, w, h = box
    xs = (torch.arange(x0, x0 + width, dtype=torch.float32) + 0.5 - x) / w * 2 - 1
    ys = (torch.arange(y0, y0 + height, dtype=torch.float32) + 0.5 - y) / h * 2 - 1
    return torch.stack([xs[None, :].expand(height, width), ys[:, None].expand(height, width)])


def to_unit(a: np.ndarray) -> torch.Tensor:
    """uint8 HxWxC -> float CxHxW in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(a[:, :, :3])).permute(2, 0, 1).float() / 127.5 - 1


class UNetInpainter(nn.Module):
    backend = "unet"

    def __init__(self, cfg: EditModelConfig, prompt_encoder: PromptEncoder, unet: UNet2DConditionModel | None = None):
        super().__init__()
        self.cfg = cfg
        self.prompt_encoder = prompt_encoder
        self.unet = unet or build_unet(
            cfg.unet, cfg.crop_size, in_channels=cfg.in_channels, out_channels=3, cross_attention_dim=prompt_encoder.dim
        )
        self.scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0)
        # Per refining brick (INPAINT, POSE): the share of the model's change to its start that is kept, fitted by
        # least squares on validation samples (calibrate_start_gain). 1 = the model's output as it is.
        self.start_gain: dict[str, float] = {}
        # merge_loras_for_inference: per brick ("": the base), a copy of the UNet without adapter layers (a plain
        # dict, not submodules: they are not saved), and the key of the one edit() is running (None: self.unet)
        self._plain_unets: dict[str, nn.Module] = {}
        self._running: str | None = None

    @classmethod
    def build(cls, cfg: EditModelConfig, texts: list[str]) -> UNetInpainter:
        return cls(cfg, PromptEncoder.build(cfg.text, texts))

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    def predict(self, noisy, source, mask, coords, sigma, ids) -> torch.Tensor:
        """The UNet's output: the velocity or the clean sample, as ``cfg.prediction`` says. ``coords`` holds the
        image coordinates, then the box coordinates when the model uses them."""
        tokens, pooled = self.prompt_encoder(ids)
        x = torch.cat([noisy, source, mask * 2 - 1, coords], dim=1)
        return self._plain_unets.get(self._running, self.unet)(
            x, sigma * 1000, encoder_hidden_states=tokens, class_labels=pooled
        ).sample

    def predict_velocity(self, noisy, source, mask, coords, sigma, ids) -> torch.Tensor:
        out = self.predict(noisy, source, mask, coords, sigma, ids)
        if self.cfg.prediction == "velocity":
            return out
        x0 = out + source if self.cfg.prediction == "residual" else out
        s = sigma.view(-1, 1, 1, 1)  # x_t = (1 - s) x0 + s noise  =>  v = noise - x0 = (x_t - x0) / s
        return (noisy - x0) / s.clamp_min(1e-4)

    def model_source(self, brick: str, source: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        """The source the UNet is given: for a brick in ``erase_under_mask``, the mask filled from its surroundings."""
        if brick not in self.cfg.erase_under_mask or mask is None or not (mask > 0).any():
            return source
        return classical_fill(source, mask)

    def _coords(self, mask: np.ndarray, x: int, y: int) -> torch.Tensor:
        c, ref = self.cfg.crop_size, self.cfg.reference_size
        planes = coord_channels(c, c, x, y, ref, ref)
        return torch.cat([planes, box_channels(mask, x, y, c, c)]) if self.cfg.box_coords else planes

    def training_data(self, samples: list[dict]) -> dict:
        """Every training window of every sample, as uint8 tensors (made floats per batch), plus prompt ids."""
        c = self.cfg.crop_size
        src, tgt, msk, crd, texts, bricks, starts = [], [], [], [], [], [], []
        for s in samples:
            pre = s["preimage"] if s["brick"] in PREIMAGE_BRICKS and s.get("preimage") is not None else None
            source = self.model_source(s["brick"], s["source"], s["mask"]) if pre is None else pre
            start = start_strength(s["brick"], pre, s.get("score")) or 1.0
            mask = s["mask"]
            if mask.shape[0] < c or mask.shape[1] < c:
                continue
            text = edit_text(s["brick"], s.get("prompt", ""), s.get("style"))
            for x, y in windows(mask, c):
                src.append(torch.from_numpy(np.ascontiguousarray(source[y : y + c, x : x + c, :3])).permute(2, 0, 1))
                tgt.append(
                    torch.from_numpy(np.ascontiguousarray(s["target"][y : y + c, x : x + c, :3])).permute(2, 0, 1)
                )
                msk.append(torch.from_numpy((mask[y : y + c, x : x + c] > 0).astype(np.uint8))[None])
                crd.append(self._coords(mask, x, y))
                texts.append(text)
                bricks.append(s["brick"])
                starts.append(start)
        return {
            "source": torch.stack(src),
            "target": torch.stack(tgt),
            "mask": torch.stack(msk),
            "coords": torch.stack(crd),
            "ids": self.prompt_encoder.tokenize(texts),
            "size": len(texts),
            "brick": bricks,
            "start": torch.tensor(starts),
        }

    def training_loss(self, data: dict, index: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Flow matching: x_t = (1 - s) x0 + s noise; the UNet predicts noise - x0 (or x0, or x0 - source); the
        mask weighs most. A brick that refines a start (INPAINT, POSE) is trained as it runs: from that start noised
        to a level below the strength it starts at, not from a noised target."""
        dev = self.device
        target = data["target"][index].float().to(dev) / 127.5 - 1
        source = data["source"][index].float().to(dev) / 127.5 - 1
        mask = data["mask"][index].float().to(dev)
        b = target.shape[0]
        noise = torch.randn(target.shape, generator=generator).to(dev)
        start = data["start"][index].to(dev)
        sigma = torch.rand(b, generator=generator).to(dev) * start
        s = sigma.view(b, 1, 1, 1)
        refines = (start < 1).view(b, 1, 1, 1)
        noisy = (1 - s) * torch.where(refines, source, target) + s * noise
        coords, ids = data["coords"][index].to(dev), data["ids"][index].to(dev)
        pred = self.predict(noisy, source, mask, coords, sigma, ids)
        goal = {"velocity": noise - target, "sample": target, "residual": target - source}[self.cfg.prediction]
        weight = mask + self.cfg.outside_weight * (1 - mask)
        return (weight * (pred - goal) ** 2).mean()

    # --- inference --------------------------------------------------------------------------------
    def _window_batch(self, masks, sources):
        c = self.cfg.crop_size
        items = []
        for i, (m, src) in enumerate(zip(masks, sources)):
            for x, y in windows(m, c):
                items.append(
                    (
                        i,
                        x,
                        y,
                        to_unit(src[y : y + c, x : x + c]),
                        torch.from_numpy((m[y : y + c, x : x + c] > 0).astype(np.float32))[None],
                        self._coords(m, x, y),
                    )
                )
        return items

    @torch.no_grad()
    def edit(
        self,
        brick: str,
        images: list[np.ndarray],
        masks: list[np.ndarray | None],
        prompts: list[str],
        *,
        preimages: list[np.ndarray | None] | None = None,
        strengths: list[float] | None = None,
        styles: list[str | None] | None = None,
        seed: int = 0,
        seeds: list[int] | None = None,
        batch_size: int = 64,
    ) -> list[np.ndarray]:
        """Edit each image inside its mask (None: the whole image); returns RGB uint8 images.

        ``preimages`` replace the source inside the model (INPAINT's pre-inpainted image, POSE's turned object);
        ``strengths`` in (0, 1] start the sampler part-way from the preimage instead of from pure noise.
        Item i's noise comes from its own generator, seeded ``seeds[i]`` (default ``seed * 1_000_003 + i``), so
        an item edited in a batch gets the output it gets alone with the same seed.
        """
        self.eval()
        self._running = brick if brick in self.loaded_loras() else ""
        if self._running not in self._plain_unets:
            self.set_brick(brick)
        try:
            return self._edit(brick, images, masks, prompts, preimages, strengths, styles, seed, seeds, batch_size)
        finally:
            self._running = None

    def _edit(self, brick, images, masks, prompts, preimages, strengths, styles, seed, seeds, batch_size):
        n = len(images)
        c = self.cfg.crop_size
        padded, pad = [], []
        for i, img in enumerate(images):  # images smaller than a window are edge-padded, then cropped back
            H, W = img.shape[:2]
            ph, pw = max(0, c - H), max(0, c - W)
            pad.append((H, W))
            m = np.full((H, W), 255, np.uint8) if masks[i] is None else masks[i]
            src = (
                self.model_source(brick, images[i], masks[i])
                if preimages is None or preimages[i] is None
                else preimages[i]
            )
            padded.append(
                tuple(
                    np.pad(a, ((0, ph), (0, pw)) + ((0, 0),) * (a.ndim - 2), mode="edge")
                    for a in (img[:, :, :3], m, src[:, :, :3])
                )
            )
        items = self._window_batch([p[1] for p in padded], [p[2] for p in padded]) if padded else []
        texts = [edit_text(brick, prompts[i], styles[i] if styles else None) for i in range(n)]
        outputs = [p[0].astype(np.float32).copy() for p in padded]
        item_seeds = list(seeds) if seeds is not None else [seed * 1_000_003 + i for i in range(n)]
        per_item = np.bincount([it[0] for it in items], minlength=n)
        noise = (
            torch.cat(
                [
                    torch.randn((int(k), 3, c, c), generator=torch.Generator().manual_seed(int(item_seeds[i])))
                    for i, k in enumerate(per_item)
                ]
            )
            if items
            else None
        )
        dev = self.device
        for start in range(0, len(items), batch_size):
            chunk = items[start : start + batch_size]
            idx = [it[0] for it in chunk]
            source = torch.stack([it[3] for it in chunk]).to(dev)
            mask = torch.stack([it[4] for it in chunk]).to(dev)
            coords = torch.stack([it[5] for it in chunk]).to(dev)
            ids = self.prompt_encoder.tokenize([texts[i] for i in idx]).to(dev)
            strength = torch.tensor(
                [
                    1.0 if strengths is None or strengths[i] is None else float(np.clip(strengths[i], 0.05, 1.0))
                    for i in idx
                ]
            )
            x = self.sample(source, mask, coords, ids, strength, noise[start : start + batch_size].to(dev))
            for (i, wx, wy, *_), win, m in zip(chunk, x.cpu(), mask.cpu()):
                region = outputs[i][wy : wy + c, wx : wx + c]
                pix = ((win.clamp(-1, 1) + 1) * 127.5).permute(1, 2, 0).numpy()
                region[:] = np.where(m[0, :, :, None].numpy() > 0, pix, region)
        results = []
        gain = self.start_gain.get(brick, 1.0)
        for i, (out, (H, W), (img, m, start)) in enumerate(zip(outputs, pad, padded)):
            if gain != 1.0 and preimages is not None and preimages[i] is not None:
                out = start.astype(np.float32) + gain * (out - start.astype(np.float32))
            final = np.where(m[:, :, None] > 0, np.rint(np.clip(out, 0, 255)), img).astype(np.uint8)
            results.append(final[:H, :W])
        return results

    def sample(self, source, mask, coords, ids, strength: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Euler integration of the learned velocity from sigma=strength (noise mixed into the source) to 0."""
        dev = source.device
        out = torch.empty_like(source)
        for s in sorted(set(strength.tolist()), reverse=True):  # one schedule per distinct strength
            sel = (strength == s).nonzero().flatten().to(dev)
            sigmas = np.linspace(s, 0.0, self.cfg.sampling_steps + 1)[:-1]
            self.scheduler.set_timesteps(sigmas=sigmas.tolist(), device=dev)
            x = (1 - s) * source[sel] + s * noise[sel]
            for t in self.scheduler.timesteps:
                sigma = (t / 1000).expand(len(sel)).to(dev)
                v = self.predict_velocity(x, source[sel], mask[sel], coords[sel], sigma, ids[sel])
                x = self.scheduler.step(v, t, x).prev_sample
            out[sel] = x
        return out

    # --- adapters ---------------------------------------------------------------------------------
    def add_lora(self, brick: str, rank: int, alpha: int | None = None) -> None:
        self.unet.add_adapter(
            LoraConfig(r=rank, lora_alpha=alpha or rank, target_modules=LORA_TARGETS, init_lora_weights="gaussian"),
            adapter_name=brick,
        )
        self.unet.set_adapters([brick])

    def load_lora(self, brick: str, path: str | Path) -> None:
        self.unet.load_lora_adapter(
            str(path), adapter_name=brick, prefix=None, weight_name="pytorch_lora_weights.safetensors"
        )
        gain = Path(path) / START_GAIN
        if gain.is_file():
            self.start_gain[brick] = float(json.loads(gain.read_text())["start_gain"])

    def merge_loras_for_inference(self) -> None:
        """For a model that only edits from now on (the bricks' model store): each loaded brick LoRA merged into its
        own copy of the UNet, and the base without adapter layers; edit() runs those. For these small UNets the
        LoRA layers (rank 16 beside 8-64 channels) cost about as much as the convolutions they wrap: an edit takes
        a quarter less time on a CPU, with the same uint8 outputs (tested). The adapters on ``self.unet`` stay as
        they were; a LoRA loaded or trained afterwards needs this called again."""
        from peft.tuners.tuners_utils import BaseTunerLayer

        def unwrapped(module: nn.Module) -> None:
            for name, child in list(module.named_children()):
                if isinstance(child, BaseTunerLayer):
                    setattr(module, name, child.get_base_layer())
                else:
                    unwrapped(child)

        self._plain_unets = {}
        loaded = self.loaded_loras()
        if not loaded:
            return
        base = copy.deepcopy(self.unet)
        unwrapped(base)
        base.peft_config = {}
        self._plain_unets[""] = base.eval().requires_grad_(False)
        layers = [(name, m) for name, m in self.unet.named_modules() if isinstance(m, BaseTunerLayer)]
        for brick in loaded:
            unet = copy.deepcopy(base)  # a plain UNet copies fast; the adapter layers' deltas are added as merge() does
            for name, layer in layers:
                if brick in layer.lora_A:
                    unet.get_submodule(name).weight.data += layer.get_delta_weight(brick)
            self._plain_unets[brick] = unet

    def loaded_loras(self) -> list[str]:
        """The bricks whose LoRA is loaded on the UNet."""
        return list(getattr(self.unet, "peft_config", {}) or {})

    def set_brick(self, brick: str) -> None:
        """Activate the brick's LoRA if one is loaded, else run the shared base."""
        loaded = self.loaded_loras()
        if brick in loaded:
            self.unet.enable_adapters()
            self.unet.set_adapters([brick])
        elif loaded:
            self.unet.disable_adapters()

    def save_lora(self, brick: str, out_dir: str | Path) -> None:
        from .stable_files import stabilise_adapter

        self.unet.save_lora_adapter(str(out_dir), adapter_name=brick)
        stabilise_adapter(out_dir)  # the same bytes on every run (diffusers writes target_modules in set order)
        if brick in self.start_gain:
            (Path(out_dir) / START_GAIN).write_text(json.dumps({"start_gain": self.start_gain[brick]}))

    # --- persistence ------------------------------------------------------------------------------
    def save_pretrained(self, out_dir: str | Path) -> None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        self.prompt_encoder.save_pretrained(out_dir)
        self.unet.save_pretrained(out_dir / "unet", safe_serialization=True)
        (out_dir / "edit_model.json").write_text(
            json.dumps({"backend": self.backend, **asdict(self.cfg), "start_gain": self.start_gain}, indent=2)
        )

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | None = None) -> UNetInpainter:
        path = Path(path)
        meta = json.loads((path / "edit_model.json").read_text())
        meta.pop("backend", None)
        gains = meta.pop("start_gain", {})
        model = cls(
            EditModelConfig(**meta),
            PromptEncoder.from_pretrained(path),
            UNet2DConditionModel.from_pretrained(path / "unet"),
        )
        model.start_gain = dict(gains)
        return model.to(device or ("cuda" if torch.cuda.is_available() else "cpu")).eval()
