"""Rule make_shards: write one brick family's webdataset shards and manifest."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # noqa: F821 - the lego_edit package

from lego_edit.data.shards import ShardConfig, build_shards  # noqa: E402
from lego_edit.pipeline import config_from, logging_to  # noqa: E402

with logging_to(snakemake.log[0]):  # noqa: F821
    sm = snakemake  # noqa: F821
    cfg = config_from(ShardConfig, sm.params.shards, seed=sm.params.seed)
    build_shards(
        sm.wildcards.family,
        cfg,
        sm.output.shards,
        scenes_path=sm.input.scenes,
        instruction_paths=sm.input.get("instructions", []),
        source=sm.params.source,
    )
