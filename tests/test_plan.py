"""lego-edit plan: parameter counts that match the models, memory that follows the config, the paper config fits."""

from __future__ import annotations

import dataclasses
import json

import pytest
from data_fixtures import REPO

from lego_edit.cli import main
from lego_edit.plan import GPU, QWEN25_VL_3B, QWEN25_VL_7B, load_config, plan, text_model

PAPER = str(REPO / "config" / "paper.yaml")


def test_parameter_counts_match_the_published_and_the_built_models(tmp_path):
    from lego_edit.models import vlm
    from lego_edit.models.tokenizer import train_tokenizer

    # the published totals of Qwen2.5-VL-7B (MiMo-VL-7B) and Qwen2.5-VL-3B
    assert QWEN25_VL_7B.params == 8_292_166_656 and QWEN25_VL_3B.params == 3_754_622_976
    tok = train_tokenizer(["make the red circle blue", "remove the square"] * 20, vocab_size=300)
    cfg = vlm.VLMConfig(hidden_size=64, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=96)
    model, processor = vlm.build_tiny_vlm(cfg, tok)
    built = sum(p.numel() for p in model.parameters())
    assert text_model({**dataclasses.asdict(cfg), "base": None}, len(tok))[1].params == built
    vlm.save_vlm(model, processor, tmp_path / "m")  # a local checkpoint is read from its config.json
    assert text_model({"base": str(tmp_path / "m")})[1].params == built


def test_memory_follows_the_config():
    config = load_config([])
    b = config["builder"]
    b["vlm"]["base"] = "Qwen/Qwen2.5-VL-7B-Instruct"
    b["gpus"] = 4
    b["sft"] = {"steps": 10, "batch_size": 8, "max_length": 4096}
    full = {j.rule: j for j in plan(config)}["train_builder_sft"]
    b["sft"] = {**b["sft"], "lora": {"rank": 16}, "gradient_checkpointing": True}
    lora = {j.rule: j for j in plan(config)}["train_builder_sft"]
    assert full.parts_gb["weights"] == pytest.approx(2 * 8.292, rel=1e-3)
    # a full fine-tune keeps an fp32 master copy, gradients and Adam moments for every weight; LoRA for adapters
    assert full.parts_gb["trainable states"] == pytest.approx(14 * 8.292, rel=1e-3)
    assert lora.parts_gb["trainable states"] < 1 and lora.parts_gb["activations"] < full.parts_gb["activations"] / 5
    b["grpo_gt"] = {**b["grpo_gt"], "grad_accum": 4}
    jobs = {j.rule: j for j in plan(config)}
    assert jobs["train_builder_grpo_gt"].parts_gb["logits"] * 4 == pytest.approx(
        jobs["train_builder_grpo_critic"].parts_gb["logits"] * b["grpo_critic"].get("grad_accum", 1)
    )


def test_paper_config_fits_an_80gb_gpu(capsys):
    paper = {j.rule: j for j in plan(load_config([PAPER]), GPU(memory_gb=80))}
    for stage in ("sft", "grpo_gt", "grpo_critic"):
        job = paper[f"train_builder_{stage}"]
        assert job.gpus == 4 and 0 < job.total_gb < 80 and job.gpu_hours > 0, job
    assert main(["plan", "--configfile", PAPER, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["rule"] for r in rows} >= {"train_builder_sft", "train_edit_lora"} and all(r["fits"] for r in rows)
    assert main(["plan", "--configfile", PAPER, "--gpu-memory", "24"]) == 1  # a 24 GB card: no
    assert "DOES NOT FIT" in capsys.readouterr().out


def test_unknown_hub_model_names_the_way_out():
    config = load_config([])
    config["builder"]["vlm"]["base"] = "someone/unknown-vlm"
    with pytest.raises(ValueError, match="KNOWN_MODELS"):
        plan(config)
