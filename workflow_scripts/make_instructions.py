"""Rule make_instructions: write the GT or open-domain instructions of every scene."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # noqa: F821 - the lego_edit package

from lego_edit.data.dataset import InstructionConfig, make_instructions  # noqa: E402
from lego_edit.pipeline import config_from, logging_to  # noqa: E402

with logging_to(snakemake.log[0]):  # noqa: F821
    sm = snakemake  # noqa: F821
    cfg = config_from(InstructionConfig, sm.params.instructions, seed=sm.params.seed)
    make_instructions(cfg, sm.wildcards.domain, sm.input.scenes, sm.output.table, sm.output.targets)
