"""Pickle-free checkpoints for the transformers/TRL trainers (SFTTrainer, GRPOTrainer).

``Trainer`` writes its resumable state with ``torch.save`` (optimizer.pt, scheduler.pt, rng_state.pth,
training_args.bin): pickles, which this project never writes. The mixin below keeps the Trainer's own
checkpoint layout and resume logic but stores that state as safetensors + JSON, in the same format as the
hand-written loop's checkpoints (``state.py``):

    checkpoint-<step>/optimizer.safetensors + optimizer.json   AdamW moments and param groups
    checkpoint-<step>/scheduler.json                           the LR scheduler's state_dict
    checkpoint-<step>/rng_state[_<rank>].safetensors + .json   python, numpy, torch (and CUDA) RNG
    checkpoint-<step>/training_args.json                       the arguments, readable

DeepSpeed and FSDP keep their own (sharded) formats: there the mixin defers to the Trainer.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from .state import OPTIMIZER_FILES, load_optimizer, save_optimizer

SCHEDULER = "scheduler.json"
TRAINING_ARGS_BIN = "training_args.bin"  # transformers' pickled arguments, replaced by training_args.json


def rng_state_to_files() -> tuple[dict[str, torch.Tensor], dict]:
    """Every RNG the Trainer restores, as tensors plus JSON."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    tensors = {
        "python": torch.tensor(internal, dtype=torch.int64),
        "numpy": torch.from_numpy(keys.astype(np.int64)),
        "cpu": torch.random.get_rng_state(),
    }
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.random.get_rng_state_all()):
            tensors[f"cuda.{i}"] = s
    meta = {"python": [version, gauss], "numpy": [kind, int(pos), int(has_gauss), float(cached)]}
    return tensors, meta


def rng_state_from_files(tensors: dict[str, torch.Tensor], meta: dict) -> None:
    version, gauss = meta["python"]
    random.setstate((version, tuple(int(v) for v in tensors["python"].tolist()), gauss))
    kind, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((kind, tensors["numpy"].numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.random.set_rng_state(tensors["cpu"])
    cuda = [tensors[k] for k in sorted((k for k in tensors if k.startswith("cuda.")), key=lambda k: int(k[5:]))]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.random.set_rng_state_all(cuda)


class SafetensorsCheckpointsMixin:
    """Mix into a ``transformers.Trainer`` subclass (before it in the bases) to checkpoint without pickle."""

    def _sharded_state(self) -> bool:
        return bool(getattr(self, "is_deepspeed_enabled", False) or getattr(self, "is_fsdp_enabled", False))

    def _rng_name(self) -> str:
        return "rng_state" if self.args.world_size <= 1 else f"rng_state_{self.args.process_index}"

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        # transformers 5 saves some architectures (Qwen2.5-VL among them) under their legacy key names, and
        # Trainer reloads a checkpoint with load_state_dict(strict=False), which then matches no key and
        # silently resumes from the *initial* weights. from_pretrained knows the renaming; load through it.
        from transformers import PreTrainedModel

        model = self.model if model is None else model
        path = Path(resume_from_checkpoint)
        full_weights = (path / "model.safetensors").is_file() or (path / "model.safetensors.index.json").is_file()
        if self._sharded_state() or not isinstance(model, PreTrainedModel) or not full_weights:
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        saved = type(model).from_pretrained(path, dtype=model.dtype, device_map="cpu")
        model.load_state_dict(saved.state_dict(), strict=True)
        del saved
        return None

    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        if self._sharded_state():
            return super()._save_optimizer_and_scheduler(output_dir)
        if not self.args.should_save:
            return None
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        save_optimizer(out, self.optimizer)
        (out / SCHEDULER).write_text(json.dumps(self.lr_scheduler.state_dict()))
        return None

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        if checkpoint is None:
            return None
        path = Path(checkpoint)
        if self._sharded_state() or not (path / OPTIMIZER_FILES[0]).is_file():
            return super()._load_optimizer_and_scheduler(checkpoint)
        load_optimizer(path, self.optimizer)
        self.lr_scheduler.load_state_dict(json.loads((path / SCHEDULER).read_text()))
        return None

    def _save_rng_state(self, output_dir: str) -> None:
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        tensors, meta = rng_state_to_files()
        save_file(tensors, out / f"{self._rng_name()}.safetensors")
        (out / f"{self._rng_name()}.json").write_text(json.dumps(meta))

    def _load_rng_state(self, checkpoint: str | None) -> None:
        if checkpoint is None:
            return None
        base = Path(checkpoint) / self._rng_name()
        if not base.with_suffix(".safetensors").is_file():
            return super()._load_rng_state(checkpoint)
        meta = json.loads(base.with_suffix(".json").read_text())
        rng_state_from_files(load_file(base.with_suffix(".safetensors")), meta)
        return None

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        super()._save(output_dir, state_dict)
        # transformers pickles the arguments next to the weights; keep them as JSON instead
        out = Path(output_dir or self.args.output_dir)
        if self.args.should_save and (out / TRAINING_ARGS_BIN).exists():
            os.remove(out / TRAINING_ARGS_BIN)
            (out / "training_args.json").write_text(self.args.to_json_string())


def pickle_free(trainer_cls: type) -> type:
    """``trainer_cls`` with :class:`SafetensorsCheckpointsMixin` mixed in (e.g. ``pickle_free(SFTTrainer)``)."""
    return type(
        trainer_cls.__name__,
        (SafetensorsCheckpointsMixin, trainer_cls),
        {
            "__doc__": f"{trainer_cls.__name__} that checkpoints with safetensors and JSON (no pickle).",
            "__module__": __name__,
        },
    )
