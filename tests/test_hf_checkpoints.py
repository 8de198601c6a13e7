"""Checkpoints of the TRL trainers without pickle (lego_edit.training.hf_checkpoints): the files a checkpoint
holds, RNG state round trips, and a run resumed from a copied checkpoint ends exactly where an uninterrupted
run ends."""

from __future__ import annotations

import random
import shutil

import numpy as np
import pytest
import torch
from openai_server import EXAMPLES, overfit_vlm
from PIL import Image
from safetensors.torch import load_file

from lego_edit.training.hf_checkpoints import rng_state_from_files, rng_state_to_files
from lego_edit.training.vlm_sft import LoraSettings, SFTSettings, sft

STATE_FILES = {
    "optimizer.safetensors",
    "optimizer.json",
    "scheduler.json",
    "rng_state.safetensors",
    "rng_state.json",
    "training_args.json",
    "trainer_state.json",
}


def test_rng_state_round_trip():
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    np.random.standard_normal()  # leaves a cached gaussian in numpy's state
    tensors, meta = rng_state_to_files()
    expected = (random.random(), float(np.random.random()), float(np.random.standard_normal()), torch.rand(2))
    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    rng_state_from_files(tensors, meta)
    again = (random.random(), float(np.random.random()), float(np.random.standard_normal()), torch.rand(2))
    assert expected[:3] == again[:3] and torch.equal(expected[3], again[3])


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    out = tmp_path_factory.mktemp("base") / "model"
    overfit_vlm(EXAMPLES, out, steps=1)
    return out


def _rows():
    return [
        {
            "images": [Image.fromarray(imgs[0])],
            "prompt": [{"role": "user", "content": q}],
            "completion": [{"role": "assistant", "content": a}],
        }
        for imgs, q, a in EXAMPLES * 2
    ]


def _train(base, tmp, name, lora):
    settings = SFTSettings(
        steps=4, batch_size=2, lr=3e-3, warmup_steps=1, checkpoint_every=2, checkpoints_kept=3, log_every=1, lora=lora
    )
    model, _, history = sft(
        base, _rows(), tmp / name / "out", tmp / name / "ckpt", seed=5, settings=settings, title=name
    )
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, history


# Full fine-tuning (the Builder) and LoRA with fully trained embeddings (ADD-PRED, CMI-PRED).
@pytest.mark.parametrize(
    "lora", [None, LoraSettings(rank=4, alpha=8, modules_to_save=["embed_tokens", "lm_head"])], ids=["full", "lora"]
)
def test_sft_checkpoints_hold_no_pickle_and_resume_exactly(base, tmp_path, lora):
    weights, history = _train(base, tmp_path, "straight", lora)
    ckpt = tmp_path / "straight" / "ckpt"
    assert sorted(p.name for p in ckpt.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    files = {p.name for p in (ckpt / "checkpoint-2").iterdir()}
    assert STATE_FILES | {"adapter_model.safetensors" if lora else "model.safetensors"} <= files, files
    assert not [p for p in tmp_path.rglob("*") if p.suffix in (".pt", ".pth", ".bin", ".pkl")]
    assert load_file(ckpt / "checkpoint-2" / "optimizer.safetensors")  # AdamW moments are there

    # a job killed after step 2: only checkpoint-2 survives; the rerun resumes from it
    killed = tmp_path / "killed" / "ckpt"
    killed.mkdir(parents=True)
    shutil.copytree(ckpt / "checkpoint-2", killed / "checkpoint-2")
    resumed_weights, resumed_history = _train(base, tmp_path, "killed", lora)
    losses = [(r["step"], r["loss"]) for r in history if "loss" in r]
    resumed = [(r["step"], r["loss"]) for r in resumed_history if "loss" in r]
    assert [s for s, _ in losses] == [1, 2, 3, 4]
    assert resumed == losses  # steps 1-2 come from the checkpoint's trainer_state, 3-4 were retrained
    assert resumed_weights.keys() == weights.keys()
    for k in weights:
        assert torch.equal(weights[k], resumed_weights[k]), k


def test_sft_with_the_model_loss_trains_as_with_trl_fused_lm_head(base, tmp_path, monkeypatch):
    from lego_edit.training import vlm_sft

    weights, history = _train(base, tmp_path, "model_loss", None)
    monkeypatch.setattr(vlm_sft, "FULL_LOGITS_BYTES", 0)  # as for a large vocabulary: TRL's fused LM head
    fused_weights, fused_history = _train(base, tmp_path, "fused", None)
    losses = [r["loss"] for r in history if "loss" in r]
    assert len(losses) == 4
    assert losses == pytest.approx([r["loss"] for r in fused_history if "loss" in r], rel=1e-4)
    for k in weights:
        assert torch.allclose(weights[k], fused_weights[k], atol=1e-5), k
