"""Rule summarize_bricks: one table of every brick's held-out figures."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # noqa: F821 - the lego_edit package

from lego_edit.evaluation.brick_report import summarize  # noqa: E402
from lego_edit.pipeline import logging_to  # noqa: E402

sm = snakemake  # noqa: F821
with logging_to(sm.log[0]):
    summarize(
        sm.input.segmentation,
        sm.input.placement,
        sm.input.captioning,
        sm.input.edit_base,
        list(sm.input.edit_lora),
        sm.input.critic,
        sm.output.table,
        sm.output.json,
    )
