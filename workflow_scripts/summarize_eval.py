"""Rule summarize_eval: the evaluation tables and the before/after grids."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # noqa: F821 - the lego_edit package

from lego_edit.evaluation.tables import summarize_evaluation  # noqa: E402
from lego_edit.pipeline import logging_to  # noqa: E402

sm = snakemake  # noqa: F821
with logging_to(sm.log[0]):
    summarize_evaluation(
        list(sm.input.rows),
        sm.input.gt,
        Path(sm.output.markdown).parent,
        sm.output.per_item,
        sm.output.grids,
        sm.params.grid_samples,
    )
