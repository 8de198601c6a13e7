"""Rule prepare_base_vlm: the tokenizer and the untrained tiny VLM (or a pointer to a real checkpoint)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # noqa: F821 - the lego_edit package

from lego_edit.launch import run_stage  # noqa: E402
from lego_edit.pipeline import logging_to  # noqa: E402

sm = snakemake  # noqa: F821

with logging_to(sm.log[0]):
    run_stage(
        "lego_edit.training.base_vlm",
        "BaseVLMConfig",
        {
            "instructions": list(sm.input.instructions),
            "placement_shards": sm.input.placement,
            "captioning_shards": sm.input.captioning,
            "output_dir": sm.output.base,
            "seed": sm.params.seed,
            "vocab_size": sm.params.vocab_size,
            "vlm": sm.params.vlm,
        },
    )
