"""Rule read_builder_sources: the real instruction listings read into one table (bad rows recorded and skipped)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # noqa: F821 - the lego_edit package

from lego_edit.data.builder_sources import read_builder_sources, sources_from_config  # noqa: E402
from lego_edit.pipeline import logging_to  # noqa: E402

sm = snakemake  # noqa: F821
with logging_to(sm.log[0]):
    read_builder_sources(
        sources_from_config(sm.params.sources),
        sm.output.rows,
        sm.output.rejected,
        sm.output.images,
        max_side=sm.params.max_side,
    )
