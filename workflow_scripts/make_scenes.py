"""Rule make_scenes: sample and render the shapes-world scenes."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # noqa: F821 - the lego_edit package

from lego_edit.data.dataset import SceneConfig, make_scenes  # noqa: E402
from lego_edit.pipeline import config_from, logging_to  # noqa: E402

with logging_to(snakemake.log[0]):  # noqa: F821
    cfg = config_from(SceneConfig, snakemake.params.scenes, seed=snakemake.params.seed)  # noqa: F821
    make_scenes(cfg, snakemake.output.table, snakemake.output.images)  # noqa: F821
