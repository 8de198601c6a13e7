"""Rule make_placement_listing: ADD-PRED's training listing from the builder sources' add rows."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # noqa: F821 - the lego_edit package

from lego_edit.data.builder_sources import placement_listing  # noqa: E402
from lego_edit.pipeline import logging_to  # noqa: E402

sm = snakemake  # noqa: F821
with logging_to(sm.log[0]):
    placement_listing(sm.input.rows, sm.output.listing)
