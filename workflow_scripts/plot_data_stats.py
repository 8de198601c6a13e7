"""Rule plot_data_stats: instruction counts per category and split, and a sample of scenes with instructions."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # noqa: F821 - the lego_edit package

from lego_edit.evaluation.data_report import plot_data_stats  # noqa: E402
from lego_edit.pipeline import logging_to  # noqa: E402

sm = snakemake  # noqa: F821
with logging_to(sm.log[0]):
    plot_data_stats(sm.input.scenes, list(sm.input.instructions), sm.output.stats, sm.output.samples)
