"""Rule teacher_workflows: one chunk of the real rows, each with the teacher's workflow and its verdict."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # noqa: F821 - the lego_edit package

from lego_edit.data.teacher import TeacherConfig, run_teacher_chunk  # noqa: E402
from lego_edit.layout import BrickModels  # noqa: E402
from lego_edit.pipeline import config_from, logging_to  # noqa: E402

sm = snakemake  # noqa: F821
with logging_to(sm.log[0]):
    run_teacher_chunk(
        config_from(TeacherConfig, sm.params.teacher),
        sm.input.rows,
        tuple(sm.params.chunk),
        BrickModels.from_named(sm.input),  # the trained bricks, by name
        sm.output.verdicts,
        judge=sm.params.judge,
        seed=sm.params.seed,
    )
