"""Checkpoints without pickle: model and optimizer tensors in safetensors, the rest in JSON.

``checkpoint-<step>/`` holds model.safetensors (trainable tensors), optimizer.safetensors +
optimizer.json (AdamW moments and param groups) and state.json (step, metrics). A checkpoint is written
to a temporary folder and renamed, and old ones are rotated away only after the new one exists, so a job
killed at any moment leaves a usable latest checkpoint.

The checkpoint folder is not a pipeline output, so it outlives a change of the stage's config: ``claim_checkpoints``
records the config that writes there and drops checkpoints another config left, so a rerun after a change trains
anew instead of resuming the old run (a retry of the same config still resumes). The config includes a fingerprint
of the stage's input files (``input_fingerprint``): a rule rerun because its data or starting model changed
(new critic samples, retrained bricks) has the same settings, and must not resume the run that learned from the
old inputs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

log = logging.getLogger(__name__)
STAGE_CONFIG = "stage_config.json"


def _optimizer_to_files(optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    sd = optimizer.state_dict()
    tensors, structure = {}, {"param_groups": sd["param_groups"], "state": {}}
    for pid, st in sd["state"].items():
        entry = {}
        for k, v in st.items():
            if torch.is_tensor(v):
                name = f"{pid}.{k}"
                tensors[name] = v.detach().cpu().contiguous()
                entry[k] = {"tensor": name}
            else:
                entry[k] = v
        structure["state"][str(pid)] = entry
    return tensors, structure


def _optimizer_from_files(optimizer: torch.optim.Optimizer, tensors: dict, structure: dict) -> None:
    state = {}
    for pid, entry in structure["state"].items():
        state[int(pid)] = {
            k: tensors[v["tensor"]] if isinstance(v, dict) and "tensor" in v else v for k, v in entry.items()
        }
    optimizer.load_state_dict({"state": state, "param_groups": structure["param_groups"]})


OPTIMIZER_FILES = ("optimizer.safetensors", "optimizer.json")


def save_optimizer(directory: str | Path, optimizer: torch.optim.Optimizer) -> None:
    """optimizer.safetensors (its tensors) + optimizer.json (the rest) in ``directory``."""
    tensors, structure = _optimizer_to_files(optimizer)
    save_file(tensors, Path(directory) / OPTIMIZER_FILES[0])
    (Path(directory) / OPTIMIZER_FILES[1]).write_text(json.dumps(structure))


def load_optimizer(directory: str | Path, optimizer: torch.optim.Optimizer) -> None:
    _optimizer_from_files(
        optimizer,
        load_file(Path(directory) / OPTIMIZER_FILES[0], device="cpu"),
        json.loads((Path(directory) / OPTIMIZER_FILES[1]).read_text()),
    )


def save_checkpoint(
    directory: str | Path,
    step: int,
    params: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    extra: dict,
    keep: int = 2,
) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"checkpoint-{step:07d}"
    tmp = directory / f".tmp-checkpoint-{step:07d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file({k: v.detach().cpu().contiguous() for k, v in params.items()}, tmp / "model.safetensors")
    save_optimizer(tmp, optimizer)
    (tmp / "state.json").write_text(json.dumps({"step": step, **extra}))
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    for old in sorted(directory.glob("checkpoint-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(directory: str | Path) -> Path | None:
    found = sorted(p for p in Path(directory).glob("checkpoint-*") if (p / "state.json").is_file())
    return found[-1] if found else None


def load_checkpoint(path: str | Path, module: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """Restore trainable tensors and optimizer state; returns state.json (with 'step')."""
    path = Path(path)
    tensors = load_file(path / "model.safetensors")
    found = [k for k, _ in module.named_parameters() if k in tensors]
    module.load_state_dict(tensors, strict=False)
    if not found:
        raise RuntimeError(f"checkpoint {path} holds no tensor of this model")
    load_optimizer(path, optimizer)
    return json.loads((path / "state.json").read_text())


def input_fingerprint(paths) -> str:
    """A digest of the files under ``paths`` (files or folders): relative name, size and modification time of
    each. A job retried on untouched inputs gets the same digest; an input rewritten by an upstream rerun, another
    one. Stat only, so the shards of a paper-scale stage cost no reading."""
    h = hashlib.sha256()
    for top in sorted(str(p) for p in paths):
        h.update(top.encode() + b"\0")
        root = Path(top)
        files = [root] if root.is_file() else sorted(f for f in root.rglob("*") if f.is_file())  # missing: none
        for f in files:
            st = os.stat(f)
            h.update(f"{f.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def claim_checkpoints(directory: str | Path, config: dict) -> bool:
    """Make ``directory`` hold checkpoints of ``config`` only: checkpoints written under another config (or under
    none recorded) are removed. Returns whether any were removed."""
    directory = Path(directory)
    wanted = json.dumps(config, sort_keys=True, indent=1, default=str)
    marker = directory / STAGE_CONFIG
    if marker.is_file() and marker.read_text() == wanted:
        return False
    # at any depth: an ensemble keeps each member's checkpoints in its own subfolder (member-<k>/checkpoint-*)
    stale = sorted(p for p in directory.rglob("checkpoint-*") if p.is_dir()) if directory.is_dir() else []
    for old in stale:
        shutil.rmtree(old, ignore_errors=True)
    if stale:
        log.warning("%s: %d checkpoints of another config removed; training starts anew", directory, len(stale))
    directory.mkdir(parents=True, exist_ok=True)
    tmp = marker.with_suffix(".tmp")
    tmp.write_text(wanted)
    tmp.replace(marker)
    return bool(stale)
