"""Rule gather_edit_manifest: merge the chunk manifests of a batch edit into one."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # noqa: F821 - the lego_edit package

from lego_edit.editing import merge_manifests  # noqa: E402
from lego_edit.pipeline import logging_to  # noqa: E402

sm = snakemake  # noqa: F821
with logging_to(sm.log[0]):
    counts = merge_manifests(list(sm.input.manifests), sm.output.manifest)
    print(f"{sum(counts.values())} images: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
