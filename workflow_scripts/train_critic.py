"""Rule train_critic: the local critic (FiLM CNN or VLM); with an OpenAI-compatible judge configured, it only
records that."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # noqa: F821 - the lego_edit package

from lego_edit.launch import run_stage  # noqa: E402
from lego_edit.pipeline import logging_to  # noqa: E402

sm = snakemake  # noqa: F821

with logging_to(sm.log[0]):
    run_stage(
        "lego_edit.training.critic",
        "CriticTrainConfig",
        {
            **sm.params.section,  # bricks.critic as the config has it
            "base": sm.input.get("base", ""),
            "shards": sm.input.shards,
            "executed_shards": sm.input.get("executed", ""),
            "output_dir": sm.output.model,
            "checkpoint_dir": sm.params.checkpoints,
            "samples_in_memory": sm.config["bricks"]["samples_in_memory"],
            "seed": sm.params.seed,
            "gpus": sm.resources.gpu,
            "threads": sm.threads,
        },
        gpus=sm.resources.gpu,
        inputs=list(sm.input),
    )
