# lego-edit: build, train and evaluate a Lego-Edit style image editor. See README.md and config/README.md.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "report/workflow.rst"


scattergather:
    evalchunk=config.get("evaluation", {}).get("chunks", 1),
    teacherchunk=config.get("data", {}).get("teacher", {}).get("chunks", 1),
    editchunk=(config.get("edit") or {}).get("chunks") or 1,


localrules:
    all,
    summarize_bricks,
    summarize_eval,
    plot_data_stats,
    plot_training_curve,
    gather_edit_manifest,
    gather_builder_tables,


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/teacher.smk"
include: "rules/bricks.smk"
include: "rules/builder.smk"
include: "rules/evaluate.smk"
include: "rules/edit.smk"
include: "rules/report.smk"


rule all:
    default_target: True
    input:
        get_final_targets(),
