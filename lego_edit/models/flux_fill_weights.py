"""The FLUX Fill editor's weights in and out: one peft LoRA per edit brick (add, load, save, switch) and the whole
editor saved to and loaded from a folder. A mixin of ``FluxFillEditor`` (``flux_fill.py``): these methods work on
its pipeline, transformer and config; apart so that ``flux_fill.py`` holds the editor's construction, layout,
sampling and training. ``flux_fill.py`` re-exports ``LORA_WEIGHTS`` and ``CONFIG_NAME``."""

from __future__ import annotations

import contextlib
import json
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from diffusers import FluxFillPipeline, FluxTransformer2DModel
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict
from torch import nn

from .flux_fill_config import DTYPES, FluxFillConfig

if TYPE_CHECKING:
    from .flux_fill import FluxFillEditor

LORA_WEIGHTS = "pytorch_lora_weights.safetensors"
CONFIG_NAME = "edit_model.json"  # as the unet backend: {"backend": ..., **config}; bricks.models dispatches on it


@contextlib.contextmanager
def _several_adapters():
    """One adapter per brick is the design: silence peft's warning about a second adapter."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
        yield


class FluxFillWeights:
    """``FluxFillEditor``'s LoRA adapters and persistence (mixed into the editor, an ``nn.Module``)."""

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
