"""Rule gather_builder_tables: the Builder's gt and open tables from the teacher's verdicts and the shapes world."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # noqa: F821 - the lego_edit package

from lego_edit.data.builder_tables import make_builder_tables  # noqa: E402
from lego_edit.pipeline import logging_to  # noqa: E402

sm = snakemake  # noqa: F821
with logging_to(sm.log[0]):
    make_builder_tables(
        list(sm.input.verdicts),
        sm.input.shapes_gt,
        sm.input.shapes_open,
        sm.output.gt,
        sm.output.open,
        sm.output.verdicts,
        sm.output.summary,
        rejected_path=sm.input.rejected,
        shapes_fraction=sm.params.shapes_fraction,
        seed=sm.params.seed,
    )
