"""config/gpu-smoke.yaml, the one-command check of every GPU path (FLUX.1-Fill edit LoRAs, the Builder's three
stages as LoRAs with gradient checkpointing, bf16 weights, a `gpu` request on every training rule), run whole on
the CPU: the same code and config a one-GPU machine runs, so a GPU run tests CUDA placement, not the DAG."""

from __future__ import annotations

import json

import pytest
import yaml
from pipeline_fixtures import GPU_RULES, REPO, dry_run_jobs, snakemake, whole_run

pytestmark = pytest.mark.slow

SMOKE = REPO / "config" / "gpu-smoke.yaml"


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    return whole_run(tmp_path_factory.mktemp("gpu_smoke"), SMOKE) / "results"


def test_every_gpu_rule_asks_for_one_gpu(tmp_path):
    result = snakemake(tmp_path, "-n", "--configfile", str(SMOKE), timeout=120)
    assert result.returncode == 0, result.stdout[-4000:]
    jobs = dry_run_jobs(result.stdout)
    for rule in GPU_RULES:
        gpus = {j["resources"].get("gpu") for j in jobs if j["rule"] == rule}
        assert gpus == {"1"}, f"{rule}: {gpus}"


def test_the_edit_bricks_are_flux_fill_loras(smoke_run):
    config = yaml.safe_load(SMOKE.read_text())["bricks"]["edit"]
    base = json.loads((smoke_run / "bricks/edit_base/edit_model.json").read_text())
    assert base["backend"] == "flux_fill" and base["dtype"] == "bfloat16" and base["pretrained"] is None
    for brick in config["bricks"]:
        assert (smoke_run / "bricks/edit_lora" / brick / "pytorch_lora_weights.safetensors").stat().st_size > 0
    # the oracle row ran every GT workflow through those bricks
    oracle = next(
        line for line in (smoke_run / "eval/tables.md").read_text().splitlines() if line.startswith("| oracle")
    )
    assert float(oracle.split("|")[3]) == 1.0  # gt_valid_rate


def test_every_builder_stage_trains_a_lora_with_recomputed_activations(smoke_run):
    assert json.loads((smoke_run / "builder/base/config.json").read_text())["dtype"] == "bfloat16"
    for stage in ("sft", "grpo_gt", "grpo_critic"):
        recorded = json.loads((smoke_run / "builder" / stage / "train_config.json").read_text())
        assert recorded[stage]["lora"]["rank"] == 4 and recorded[stage]["gradient_checkpointing"] is True, stage
        # only what the stage was given: no other stage's settings, no base-VLM sizes at their defaults
        assert not ({"sft", "grpo_gt", "grpo_critic", "vlm", "vocab_size"} - {stage}) & set(recorded), stage
        # each stage hands the next a merged model that loads without peft
        assert (smoke_run / "builder" / stage / "model.safetensors").stat().st_size > 0
        assert not (smoke_run / "builder" / stage / "adapter_config.json").exists()
