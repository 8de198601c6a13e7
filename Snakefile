# lego-edit: build, train and evaluate a Lego-Edit style image editor. See README.md and config/README.md.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/data.smk"


rule all:
    default_target: True
    input:
        get_final_targets(),
