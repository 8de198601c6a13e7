"""Rule edit_folder_chunk: batch-edit every N-th image of the configured folder (resumable)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # noqa: F821 - the lego_edit package

from lego_edit.editing import EditConfig, edit_chunk  # noqa: E402
from lego_edit.pipeline import config_from, logging_to  # noqa: E402

sm = snakemake  # noqa: F821
with logging_to(sm.log[0]):
    chunk, chunks = sm.params.chunk
    cfg = config_from(
        EditConfig, dict(sm.params.edit), output=sm.params.output_dir, chunk=chunk, chunks=chunks, threads=sm.threads
    )
    edit_chunk(cfg, sm.output.manifest)
