"""Rule train_edit_base: the shared diffusion base of the edit bricks."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # noqa: F821 - the lego_edit package

from lego_edit.launch import run_stage  # noqa: E402
from lego_edit.pipeline import logging_to  # noqa: E402

sm = snakemake  # noqa: F821

with logging_to(sm.log[0]):
    run_stage(
        "lego_edit.training.edit_bricks",
        "EditTrainConfig",
        {
            **sm.params.section,  # bricks.edit as the config has it; the base trains with its `base` loop
            "shards": sm.input.shards,
            "output_dir": sm.output.model,
            "checkpoint_dir": sm.params.checkpoints,
            "seed": sm.params.seed,
            # how samples are held, not what is learned (the same batches): read from the config, not a param, so
            # that switching it reruns nothing
            "samples_in_memory": sm.config["bricks"]["samples_in_memory"],
            "gpus": sm.resources.gpu,
            "threads": sm.threads,
        },
        gpus=sm.resources.gpu,
        inputs=list(sm.input),
    )
