"""Rule edit_eval_chunk: one chunk of one evaluation set, edited by one Builder and scored."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # noqa: F821 - the lego_edit package

from lego_edit.evaluation.runner import evaluate_chunk  # noqa: E402
from lego_edit.layout import BrickModels  # noqa: E402
from lego_edit.pipeline import logging_to  # noqa: E402

sm = snakemake  # noqa: F821
with logging_to(sm.log[0]):
    spec = {**sm.params.evalset, "table": sm.input.get("table")}
    evaluate_chunk(
        sm.wildcards.evalset,
        spec,
        tuple(sm.params.chunk),
        sm.params.builder,
        models=BrickModels.from_named(sm.input),  # the trained bricks, by name
        builder_dir=sm.input.get("builder"),
        critic_dir=sm.input.critic,
        images_dir=sm.output.images,
        rows_path=sm.output.rows,
        style=sm.params.style,
        seed=sm.params.seed,
        seconds=sm.params.seconds,
        judge=sm.params.judge,
        protocol=sm.params.protocol,
    )
