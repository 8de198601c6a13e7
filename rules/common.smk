# Helpers shared by the rule files: config validation, paths and parameter lookups. No rules here.
import sys
from pathlib import Path

from snakemake.utils import validate

validate(config, schema="../config/schema.yaml")

sys.path.insert(0, str(Path(workflow.basedir)))
from lego_edit.config_checks import check_config  # noqa: E402

check_config(config)

FAMILIES = list(config["data"]["shards"]["families"])
DOMAINS = ["gt", "open"]


wildcard_constraints:
    family="|".join(FAMILIES),
    domain="gt|open",


def get_final_targets():
    targets = ["results/data/scenes.parquet"]
    targets += expand("results/data/instructions/{domain}.parquet", domain=DOMAINS)
    targets += expand("results/data/shards/{family}", family=FAMILIES)
    return targets


def get_instruction_params(wildcards):
    return {
        **config["data"]["instructions"][wildcards.domain],
        "categories": config["data"]["instructions"]["categories"],
    }


def get_shard_inputs(wildcards):
    inputs = {"scenes": "results/data/scenes.parquet"}
    if wildcards.family == "critic":  # the critic learns from instructions and their targets
        inputs["instructions"] = expand(
            "results/data/instructions/{domain}.parquet", domain=DOMAINS
        )
    return inputs


def get_shard_params(wildcards):
    family = config["data"]["shards"]["families"][wildcards.family]
    return {
        "samples_per_shard": config["data"]["shards"]["samples_per_shard"],
        **family,
    }


def get_shard_source(wildcards):
    return config["data"]["shards"]["sources"].get(wildcards.family)
