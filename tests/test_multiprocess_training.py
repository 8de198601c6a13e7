"""Multi-process training on the CPU: the paths a multi-GPU job takes (one process per granted GPU, started by
``launch.run_stage``), run with two real processes on the gloo backend and the small test config's models.

Each stage must train on both ranks (each logs its finished steps), leave the outputs to rank 0 (rank 1 says so
and writes nothing), and produce outputs that load.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from data_fixtures import TEST_CONFIG
from pipeline_fixtures import dry_run_jobs, snakemake

from lego_edit.launch import launch_command, run_stage


def _ranks_trained(output: str, name: str, steps: int) -> None:
    assert f"rank 0 of 2: {name} trained {steps} steps" in output, output[-4000:]
    assert f"rank 1 of 2: {name} trained {steps} steps; rank 0 writes the outputs" in output, output[-4000:]


def _builder(results: Path, tmp: Path, stage: str, base: Path, **grpo) -> Path:
    out = tmp / stage
    values = {
        "stage": stage,
        "base": str(base),
        "models": str(results),
        "output_dir": str(out),
        "checkpoint_dir": str(tmp / f"ckpt_{stage}"),
        "seed": 0,
    }
    if stage == "sft":
        values.update(
            instructions=str(results / "data/instructions/gt.parquet"),
            # LoRA and recomputed activations, as at paper scale; the stage hands on a merged model
            sft={
                "steps": 2,
                "batch_size": 4,
                "lr": 1e-3,
                "log_every": 1,
                "gradient_checkpointing": True,
                "lora": {"rank": 4, "alpha": 8},
            },
        )
    else:
        open_split = stage == "grpo_critic"
        table = "open.parquet" if open_split else "gt.parquet"
        values.update(
            instructions=str(results / "data/instructions" / table),
            critic=str(results / "bricks/critic") if open_split else "",
            **{
                stage: {
                    "max_train_rows": 8,
                    "steps": 2,
                    "prompts_per_step": 2,
                    "num_generations": 2,
                    "lr": 1e-4,
                    "max_completion_length": 48,
                    "log_every": 1,
                    "execution_seconds": 30,
                    **grpo,
                }
            },
        )
    run_stage("lego_edit.training.builder", "BuilderConfig", values, processes=2)
    return out


@pytest.mark.slow
def test_builder_stages_and_edit_lora_train_on_two_processes(pipeline_run, tmp_path, capfd, monkeypatch):
    from lego_edit.bricks.models import load_edit_model
    from lego_edit.models.vlm import load_vlm

    monkeypatch.chdir(pipeline_run)  # the run's tables name their images relative to it, as the rules run there
    results = pipeline_run / "results"
    sft = _builder(results, tmp_path, "sft", results / "builder/base")
    _ranks_trained(capfd.readouterr().err, "Builder stage 1 (SFT)", 2)
    assert not (sft / "adapter_config.json").exists()
    grpo_gt = _builder(
        results,
        tmp_path,
        "grpo_gt",
        sft,
        guidance=True,
        gradient_checkpointing=True,
        lora={"rank": 4, "alpha": 8},
        reward_weights={"graded_arguments": 1, "execution": 1},
    )
    _ranks_trained(capfd.readouterr().err, "Builder grpo_gt", 2)
    grpo_critic = _builder(results, tmp_path, "grpo_critic", grpo_gt)
    _ranks_trained(capfd.readouterr().err, "Builder grpo_critic", 2)
    for stage, folder in (("sft", sft), ("grpo_gt", grpo_gt), ("grpo_critic", grpo_critic)):
        assert json.loads((folder / "metrics.json").read_text())["stage"] == stage
        assert (folder / "model.safetensors").is_file() and not list(folder.glob("*.tmp*"))
        model, processor = load_vlm(folder)
        assert model is not None and processor is not None
    # stage 2's execution reward ran the sampled answers with the trained bricks on rank 0's share
    assert json.loads((grpo_gt / "metrics.json").read_text())["execution/execution"]["executed"] > 0

    adapter = tmp_path / "edit_lora"
    run_stage(
        "lego_edit.training.edit_bricks",
        "EditTrainConfig",
        {
            "shards": str(results / "data/shards/edit"),
            "output_dir": str(adapter),
            "checkpoint_dir": str(tmp_path / "ckpt_lora"),
            "seed": 0,
            "backend": "unet",
            "brick": "RCM",
            "base_dir": str(results / "bricks/edit_base"),
            "eval_per_brick": 2,
            "lora": {"rank": 4, "train": {"steps": 2, "batch_size": 4, "lr": 5e-4, "warmup_steps": 1, "log_every": 1}},
        },
        processes=2,
    )
    _ranks_trained(capfd.readouterr().err, "edit RCM", 2)
    metrics = json.loads((adapter / "metrics.json").read_text())
    assert metrics["brick"] == "RCM" and metrics["steps"] == 2
    model = load_edit_model(results / "bricks/edit_base")
    model.load_lora("RCM", adapter)
    assert "RCM" in model.unet.peft_config


def test_global_batch_must_split_across_processes():
    from lego_edit.training.vlm_sft import per_device_batch

    assert per_device_batch(8, 2) == 4 and per_device_batch(8, 1) == 8
    with pytest.raises(ValueError, match="batch size 5 does not split evenly across 2 processes"):
        per_device_batch(5, 2)


def test_one_process_per_gpu_through_torchrun():
    cmd = launch_command("lego_edit.training.builder", "/tmp/cfg.json", 4)
    assert cmd[1:7] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "4", "-m"]
    assert cmd[7:] == ["lego_edit.training.builder", "--config", "/tmp/cfg.json"]


@pytest.mark.slow
def test_gpu_count_is_a_resource_not_a_rerun(pipeline_run, tmp_path):
    """A finished run asked for more GPUs (a bigger node, a profile's set-resources) plans no training again; the
    jobs it would run carry the new count as their `gpu` resource, which the scripts launch one process per."""
    more = {
        "builder": {"gpus": 2},
        "bricks": {name: {"gpus": 2} for name in ("segmentation", "placement", "captioning", "edit", "critic")},
    }
    extra = tmp_path / "gpus.yaml"
    extra.write_text(yaml.safe_dump(more))
    result = snakemake(pipeline_run, "-n", "--configfile", str(TEST_CONFIG), str(extra), timeout=300)
    assert result.returncode == 0, result.stdout[-4000:]
    assert not [j["rule"] for j in dry_run_jobs(result.stdout) if j["rule"].startswith("train_")], result.stdout
    forced = snakemake(
        pipeline_run,
        "-n",
        "--configfile",
        str(TEST_CONFIG),
        str(extra),
        "--forcerun",
        "train_builder_sft",
        "train_edit_lora",
        timeout=300,
    )
    jobs = {j["rule"]: j["resources"] for j in dry_run_jobs(forced.stdout)}
    assert jobs["train_builder_sft"]["gpu"] == "2" and jobs["train_edit_lora"]["gpu"] == "2", forced.stdout[-3000:]
