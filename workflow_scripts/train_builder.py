"""Rules train_builder_*: one Builder training stage (sft, grpo_gt or grpo_critic)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # noqa: F821 - the lego_edit package

from lego_edit.launch import run_stage  # noqa: E402
from lego_edit.layout import BrickModels  # noqa: E402
from lego_edit.pipeline import logging_to  # noqa: E402

sm = snakemake  # noqa: F821
with logging_to(sm.log[0]):
    run_stage(
        "lego_edit.training.builder",
        "BuilderConfig",
        {
            **sm.params.section,  # the stage, its settings and the prompt style, as the config has them
            "base": sm.input.base,
            "instructions": sm.input.instructions,
            "critic": sm.input.get("critic", ""),
            "gt_instructions": sm.input.get("gt_instructions", ""),
            # the trained bricks stages 2 and 3 execute their answers with, by name
            "models": BrickModels.from_named(sm.input).as_dict(),
            "output_dir": sm.output.model,
            "checkpoint_dir": sm.params.checkpoints,
            "seed": sm.params.seed,
            # how rows are held, not what is learned: from the config, not a param, so that switching reruns nothing
            "samples_in_memory": sm.config["builder"]["samples_in_memory"],
            "gpus": sm.resources.gpu,
            "threads": sm.threads,
        },
        gpus=sm.resources.gpu,
        inputs=list(sm.input),
    )
