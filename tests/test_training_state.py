"""The hand-written training loop (lego_edit.training.loop) and its pickle-free checkpoints (training.state).

A tiny nn.Linear trained for a few steps on batches drawn from the loop's per-step generator: the checkpoint
set after every save and after rotation, the files inside a checkpoint, kill-and-resume giving bit-identical
parameters and metrics, and the learning-rate schedule.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lego_edit.training import loop as loop_module
from lego_edit.training.loop import LoopConfig, lr_at, step_generator, train
from lego_edit.training.state import latest_checkpoint, load_checkpoint, save_checkpoint

CHECKPOINT_FILES = {"model.safetensors", "optimizer.safetensors", "optimizer.json", "state.json"}


def make_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Linear(3, 2)


class Loss:
    """A deterministic loss: the batch of step s comes from the loop's generator for s. Records the steps it ran
    and raises at ``stop_at`` (a job killed before that step)."""

    def __init__(self, model, stop_at: int | None = None):
        self.model, self.stop_at, self.steps = model, stop_at, []

    def __call__(self, step, generator, rank, world):
        if step == self.stop_at:
            raise KeyboardInterrupt(f"killed at step {step}")
        self.steps.append(step)
        device = self.model.weight.device  # the loop moves the model to the accelerator's device
        x = torch.randn(4, 3, generator=generator).to(device)
        y = torch.randn(4, 2, generator=generator).to(device)
        return {"loss": torch.nn.functional.mse_loss(self.model(x), y), "batch": 4}


def config(**kw) -> LoopConfig:
    base = dict(
        steps=7,
        batch_size=4,
        lr=0.05,
        warmup_steps=2,
        min_lr_ratio=0.1,
        checkpoint_every=2,
        checkpoints_kept=2,
        log_every=1,
        grad_clip=1.0,
    )
    return LoopConfig(**{**base, **kw})


def run(tmp: Path, cfg: LoopConfig, model_seed: int = 0, stop_at: int | None = None, name: str = "run"):
    model = make_model(model_seed)
    loss = Loss(model, stop_at)
    history = train(
        model, loss, cfg, seed=3, checkpoint_dir=tmp / name / "ckpt", metrics_path=tmp / name / "out" / "metrics.jsonl"
    )
    return model, loss, history


def checkpoint_names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def without_seconds(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_checkpoints_every_n_steps_and_rotation(tmp_path, monkeypatch):
    seen = []
    real_save = loop_module.save_checkpoint

    def recording_save(directory, step, *args, **kwargs):
        out = real_save(directory, step, *args, **kwargs)
        seen.append((step, checkpoint_names(Path(directory))))
        return out

    monkeypatch.setattr(loop_module, "save_checkpoint", recording_save)
    run(tmp_path, config(steps=7, checkpoint_every=2, checkpoints_kept=2))
    # saved at 2, 4, 6 (never at the last step: the final model is the stage's output, not a checkpoint);
    # the oldest goes only once a newer one exists, and no temporary folder is left behind
    assert seen == [
        (2, ["checkpoint-0000002"]),
        (4, ["checkpoint-0000002", "checkpoint-0000004"]),
        (6, ["checkpoint-0000004", "checkpoint-0000006"]),
    ]
    ckpt = tmp_path / "run" / "ckpt"
    assert checkpoint_names(ckpt) == ["checkpoint-0000004", "checkpoint-0000006"]
    for c in ckpt.iterdir():
        assert set(checkpoint_names(c)) == CHECKPOINT_FILES
    # no pickle anywhere: every file written is safetensors or JSON (lines)
    assert {p.suffix for p in tmp_path.rglob("*") if p.is_file()} == {".safetensors", ".json", ".jsonl"}


@pytest.mark.parametrize(
    "keep, steps, every, expected",
    [
        (1, 7, 2, [6]),
        (3, 9, 2, [4, 6, 8]),
        (2, 6, 3, [3]),  # 6 is the last step: only step 3 is a checkpoint
        (5, 5, 1, [1, 2, 3, 4]),
    ],
)
def test_rotation_sets(tmp_path, keep, steps, every, expected):
    run(tmp_path, config(steps=steps, checkpoint_every=every, checkpoints_kept=keep))
    assert checkpoint_names(tmp_path / "run" / "ckpt") == [f"checkpoint-{s:07d}" for s in expected]


def test_checkpoint_contents(tmp_path):
    model, _, _ = run(tmp_path, config(steps=5, checkpoint_every=4))
    ckpt = tmp_path / "run" / "ckpt" / "checkpoint-0000004"
    assert set(load_file(ckpt / "model.safetensors")) == {"weight", "bias"}
    state = json.loads((ckpt / "state.json").read_text())
    assert state["step"] == 4
    assert [r["step"] for r in state["history"]] == [1, 2, 3, 4]
    opt = json.loads((ckpt / "optimizer.json").read_text())
    assert set(opt) == {"param_groups", "state"}
    assert set(load_file(ckpt / "optimizer.safetensors")) == {
        "0.step",
        "0.exp_avg",
        "0.exp_avg_sq",
        "1.step",
        "1.exp_avg",
        "1.exp_avg_sq",
    }


def test_metrics_jsonl_lines(tmp_path):
    cfg = config(steps=7, log_every=3)
    _, _, history = run(tmp_path, cfg)
    rows = read_jsonl(tmp_path / "run" / "out" / "metrics.jsonl")
    assert rows == history
    assert [r["step"] for r in rows] == [3, 6, 7]  # every 3 steps, and the last one
    for r in rows:
        assert set(r) == {"step", "lr", "seconds", "loss", "batch"}
        assert r["lr"] == lr_at(cfg, r["step"] - 1)
        assert r["batch"] == 4
        assert math.isfinite(r["loss"]) and r["loss"] > 0


def test_kill_and_resume_is_bit_identical(tmp_path):
    cfg = config(steps=7)
    straight, straight_loss, straight_history = run(tmp_path, cfg, name="straight")
    assert straight_loss.steps == list(range(7))

    with pytest.raises(KeyboardInterrupt):  # killed while running step 5: checkpoints 2 and 4 exist
        run(tmp_path, cfg, name="killed", stop_at=5)
    ckpt = tmp_path / "killed" / "ckpt"
    assert checkpoint_names(ckpt) == ["checkpoint-0000002", "checkpoint-0000004"]
    assert not (tmp_path / "killed" / "out" / "metrics.jsonl").exists()

    # a fresh model, initialised differently, resumes from step 4 and ends where the straight run ended
    resumed, resumed_loss, resumed_history = run(tmp_path, cfg, name="killed", model_seed=123)
    assert resumed_loss.steps == [4, 5, 6]
    assert torch.equal(resumed.weight, straight.weight)
    assert torch.equal(resumed.bias, straight.bias)
    assert without_seconds(resumed_history) == without_seconds(straight_history)
    assert [r["step"] for r in resumed_history] == list(range(1, 8))
    assert without_seconds(read_jsonl(tmp_path / "killed" / "out" / "metrics.jsonl")) == without_seconds(
        read_jsonl(tmp_path / "straight" / "out" / "metrics.jsonl")
    )
    assert checkpoint_names(ckpt) == ["checkpoint-0000004", "checkpoint-0000006"]


def test_longer_run_resumes_from_a_shorter_ones_latest_checkpoint(tmp_path):
    """Run N=5 steps, then M=7 in the same checkpoint folder: the second run starts at the latest checkpoint (4;
    the last step of a run is not checkpointed) and ends bit-identical to an uninterrupted 7-step run. The
    schedule is constant after warm-up here (min_lr_ratio=1): with a cosine decay the learning rate of a step
    depends on the total ``steps``, so a longer run is a different run, not a continuation."""
    first, first_loss, _ = run(tmp_path, config(steps=5, min_lr_ratio=1.0), name="grow")
    assert first_loss.steps == [0, 1, 2, 3, 4]
    longer, longer_loss, longer_history = run(tmp_path, config(steps=7, min_lr_ratio=1.0), name="grow", model_seed=99)
    assert longer_loss.steps == [4, 5, 6]
    straight, _, straight_history = run(tmp_path, config(steps=7, min_lr_ratio=1.0), name="straight")
    assert torch.equal(longer.weight, straight.weight)
    assert torch.equal(longer.bias, straight.bias)
    assert without_seconds(longer_history) == without_seconds(straight_history)
    # the resumed run trained on past the 5-step run's end
    assert not torch.equal(longer.weight, first.weight)


def test_a_finished_run_restarted_resumes_from_its_latest_checkpoint(tmp_path):
    cfg = config(steps=7)
    done, _, _ = run(tmp_path, cfg, name="again")
    again, loss, _ = run(tmp_path, cfg, name="again", model_seed=5)
    assert loss.steps == [6]
    assert torch.equal(again.weight, done.weight) and torch.equal(again.bias, done.bias)


def test_stale_temporary_and_incomplete_checkpoints_are_ignored(tmp_path):
    cfg = config(steps=7)
    straight, _, _ = run(tmp_path, cfg, name="straight")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, cfg, name="killed", stop_at=3)  # only checkpoint 2 exists
    ckpt = tmp_path / "killed" / "ckpt"
    # a save killed half-way leaves a temporary folder; a folder without state.json is not a checkpoint
    (ckpt / ".tmp-checkpoint-0000004").mkdir()
    (ckpt / ".tmp-checkpoint-0000004" / "model.safetensors").write_bytes(b"partial")
    (ckpt / "checkpoint-0000003").mkdir()
    (ckpt / "checkpoint-0000003" / "model.safetensors").write_bytes(b"partial")
    assert latest_checkpoint(ckpt).name == "checkpoint-0000002"
    resumed, loss, _ = run(tmp_path, cfg, name="killed", model_seed=7)
    assert loss.steps == [2, 3, 4, 5, 6]
    assert torch.equal(resumed.weight, straight.weight) and torch.equal(resumed.bias, straight.bias)
    # the re-save of step 4 replaced the temporary folder, and rotation removed the incomplete one
    assert checkpoint_names(ckpt) == ["checkpoint-0000004", "checkpoint-0000006"]


def test_only_trainable_parameters_are_checkpointed(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 2))
    model[0].requires_grad_(False)  # a frozen base, as in a LoRA run
    frozen = model[0].weight.clone()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    path = save_checkpoint(tmp_path, 10, params, opt, {"note": "x"}, keep=2)
    assert path == tmp_path / "checkpoint-0000010"
    assert set(load_file(path / "model.safetensors")) == {"1.weight", "1.bias"}

    torch.manual_seed(1)
    other = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 2))
    other[0].requires_grad_(False)
    other_opt = torch.optim.AdamW([p for p in other.parameters() if p.requires_grad], lr=0.1)
    state = load_checkpoint(path, other, other_opt)
    assert state == {"step": 10, "note": "x"}
    assert torch.equal(other[1].weight, model[1].weight) and torch.equal(other[1].bias, model[1].bias)
    assert not torch.equal(other[0].weight, frozen)  # frozen tensors are not in the checkpoint
    for key in ("exp_avg", "exp_avg_sq", "step"):
        assert torch.equal(other_opt.state_dict()["state"][0][key], opt.state_dict()["state"][0][key])
    assert other_opt.state_dict()["param_groups"][0]["lr"] == 0.1


def test_load_checkpoint_of_another_model_raises(tmp_path):
    model = make_model()
    opt = torch.optim.AdamW(model.parameters())
    path = save_checkpoint(tmp_path, 1, dict(model.named_parameters()), opt, {})
    stranger = torch.nn.Sequential(torch.nn.Linear(3, 2))  # keys 0.weight, 0.bias
    with pytest.raises(RuntimeError, match="holds no tensor of this model"):
        load_checkpoint(path, stranger, torch.optim.AdamW(stranger.parameters()))


def test_latest_checkpoint_of_missing_or_empty_folder(tmp_path):
    assert latest_checkpoint(tmp_path / "nothing") is None
    assert latest_checkpoint(tmp_path) is None


def test_lr_schedule_warmup_then_cosine():
    cfg = LoopConfig(steps=12, lr=0.1, warmup_steps=4, min_lr_ratio=0.1)
    # warm-up: lr * (step + 1) / warmup
    assert [lr_at(cfg, s) for s in range(4)] == pytest.approx([0.025, 0.05, 0.075, 0.1], abs=1e-15)
    # cosine from lr (t = 0 at the end of warm-up) to lr * min_lr_ratio (t = 1 at step = steps)
    assert lr_at(cfg, 4) == pytest.approx(0.1, abs=1e-15)
    assert lr_at(cfg, 6) == pytest.approx(0.1 * (0.1 + 0.9 * 0.5 * (1 + math.sqrt(0.5))), abs=1e-15)
    assert lr_at(cfg, 8) == pytest.approx(0.055, abs=1e-15)  # half-way: mean of peak and floor
    assert lr_at(cfg, 10) == pytest.approx(0.1 * (0.1 + 0.9 * 0.5 * (1 - math.sqrt(0.5))), abs=1e-15)
    assert lr_at(cfg, 12) == pytest.approx(0.01, abs=1e-15)
    values = [lr_at(cfg, s) for s in range(4, 12)]
    assert values == sorted(values, reverse=True)
    # without warm-up the first step already has the peak rate; min_lr_ratio 1 is constant
    assert lr_at(LoopConfig(steps=10, lr=0.2, warmup_steps=0), 0) == 0.2
    assert {lr_at(LoopConfig(steps=10, lr=0.2, warmup_steps=0, min_lr_ratio=1.0), s) for s in range(10)} == {0.2}


def test_step_generator_is_a_function_of_seed_step_and_rank():
    draw = lambda *a: torch.rand(3, generator=step_generator(*a))  # noqa: E731
    assert torch.equal(draw(3, 5), draw(3, 5))
    assert not torch.equal(draw(3, 5), draw(3, 6))
    assert not torch.equal(draw(3, 5), draw(4, 5))
    assert not torch.equal(draw(3, 5, 0), draw(3, 5, 1))


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"steps": 0}, "steps and batch_size"),
        ({"batch_size": 0}, "steps and batch_size"),
        ({"min_lr_ratio": 1.5}, "min_lr_ratio"),
        ({"checkpoints_kept": 0}, "checkpoints_kept"),
        ({"checkpoint_every": 0}, "checkpoint_every"),
        ({"log_every": 0}, "log_every"),
    ],
)
def test_loop_config_rejects(kw, message):
    with pytest.raises(ValueError, match=message):
        LoopConfig(**kw)


def test_a_changed_config_drops_the_checkpoints_of_the_old_one(tmp_path):
    """The checkpoint folder outlives a config change: a rerun after one must train anew, a retry must resume."""
    from lego_edit.training.state import claim_checkpoints

    model = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(model.parameters())
    old = {"steps": 10, "train": {"lr": 0.01}}
    assert claim_checkpoints(tmp_path, old) is False
    save_checkpoint(tmp_path, 4, dict(model.named_parameters()), opt, {}, keep=2)
    assert claim_checkpoints(tmp_path, dict(old)) is False  # the same config (a retry): resume
    assert latest_checkpoint(tmp_path) is not None
    assert claim_checkpoints(tmp_path, {"steps": 10, "train": {"lr": 0.02}}) is True
    assert latest_checkpoint(tmp_path) is None


def test_a_changed_config_drops_an_ensembles_member_checkpoints_too(tmp_path):
    """The critic's members checkpoint in subfolders of the job's folder: a changed input must not resume them
    (it did: a rerun critic on new samples resumed the old members at step 1400 of 1600)."""
    from lego_edit.training.state import claim_checkpoints

    model = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(model.parameters())
    claim_checkpoints(tmp_path, {"inputs": "a"})
    for member in ("member-0", "member-1"):
        save_checkpoint(tmp_path / member, 4, dict(model.named_parameters()), opt, {}, keep=2)
    assert claim_checkpoints(tmp_path, {"inputs": "a"}) is False
    assert all(latest_checkpoint(tmp_path / m) is not None for m in ("member-0", "member-1"))
    assert claim_checkpoints(tmp_path, {"inputs": "b"}) is True
    assert all(latest_checkpoint(tmp_path / m) is None for m in ("member-0", "member-1"))


STAGE_STUB = """
from dataclasses import dataclass


@dataclass
class StubConfig:
    checkpoint_dir: str = ""
    steps: int = 1


def main(cfg):
    return {}
"""


def test_a_rerun_on_rewritten_inputs_does_not_resume_the_old_run(tmp_path, monkeypatch):
    """Same settings, new data (an upstream rule reran): the checkpoints of the run on the old data are dropped;
    a retry on untouched inputs still resumes."""
    import os

    from lego_edit.launch import run_stage
    from lego_edit.training.state import input_fingerprint

    shards = tmp_path / "shards"
    shards.mkdir()
    (shards / "a.tar").write_bytes(b"x" * 10)
    (shards / "manifest.parquet").write_bytes(b"m")
    first = input_fingerprint([shards])
    assert input_fingerprint([shards]) == first  # untouched: a retry resumes
    (shards / "a.tar").write_bytes(b"y" * 10)  # rewritten by an upstream rerun (same size)
    st = os.stat(shards / "a.tar")
    os.utime(shards / "a.tar", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert input_fingerprint([shards]) != first

    (tmp_path / "stage_stub.py").write_text(STAGE_STUB)  # a stage that trains nothing: the claim is under test
    monkeypatch.syspath_prepend(str(tmp_path))
    ckpt = tmp_path / "ckpt"
    values = {"checkpoint_dir": str(ckpt), "steps": 3}
    run_stage("stage_stub", "StubConfig", values, inputs=[shards])
    model = torch.nn.Linear(2, 2)
    save_checkpoint(ckpt, 2, dict(model.named_parameters()), torch.optim.AdamW(model.parameters()), {}, keep=2)
    run_stage("stage_stub", "StubConfig", values, inputs=[shards])  # a retry: the checkpoint stays
    assert latest_checkpoint(ckpt) is not None
    (shards / "b.tar").write_bytes(b"new")
    run_stage("stage_stub", "StubConfig", values, inputs=[shards])
    assert latest_checkpoint(ckpt) is None
