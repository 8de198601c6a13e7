"""The config schema (generated from the stage dataclasses) and the checks a schema cannot express."""

from __future__ import annotations

import copy
import re
from dataclasses import asdict
from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate

from lego_edit.config_checks import ConfigError, check_config
from lego_edit.config_schema import build_schema, resolve, schema_yaml
from lego_edit.pipeline import config_from
from lego_edit.training.config_sections import stage_sections

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "config" / "schema.yaml"
PAPER_SET_ME_KEYS = [
    "data.shards.sources.segmentation.listing",
    "data.shards.sources.segmentation.root",
    "data.shards.sources.captioning.listing",
    "data.shards.sources.captioning.root",
    "data.shards.sources.edit.listing",
    "data.shards.sources.edit.root",
    "data.builder_sources[0].path",
    "data.teacher.base_url",
    "bricks.critic.openai.base_url",
    "evaluation.gedit.path",
    "evaluation.imgedit.json",
    "evaluation.imgedit.images",
    "evaluation.judge.base_url",
    "evaluation.protocols.gedit",
    "evaluation.protocols.imgedit",
]


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def validated(config: dict) -> dict:
    """The config as the Snakefile sees it: validated, with the schema's defaults filled in."""
    config = copy.deepcopy(config)
    validate(config, str(SCHEMA))
    return config


def test_schema_file_is_current():
    assert SCHEMA.read_text() == schema_yaml(), (
        "config/schema.yaml is stale: run `python -m lego_edit.config_schema > config/schema.yaml`"
    )
    assert yaml.safe_load(SCHEMA.read_text()) == build_schema()


@pytest.mark.parametrize(
    "path", ["config/config.yaml", ".test/config/config.yaml", "config/paper.yaml", "config/gpu-smoke.yaml"]
)
def test_configs_validate(path):
    config = validated(load(ROOT / path))
    assert config["seed"] == 0
    assert set(config) <= set(build_schema()["properties"])


def dotted(node: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in node.items():
        name = f"{prefix}.{key}" if prefix else key
        out.update(dotted(value, name) if isinstance(value, dict) and value else {name: value})
    return out


# What the GPU smoke config may change in the test config: GPU counts, the FLUX edit backend and its budget, the
# Builder's LoRA / checkpointing / bf16 path. Anything else would let it test another pipeline than CI's.
GPU_PATH_KEYS = (
    r"(.+\.)?gpus",
    r"bricks\.edit\.(backend|base\..+|flux\..+|lora\.train\.batch_size|model\..+)",
    r"builder\.(sft|grpo_gt|grpo_critic)\.(lora\..+|gradient_checkpointing|use_vllm)",
    r"builder\.vlm\.dtype",
)


def test_the_gpu_smoke_config_is_the_test_config_on_the_gpu_path():
    test, smoke = dotted(load(ROOT / ".test/config/config.yaml")), dotted(load(ROOT / "config/gpu-smoke.yaml"))
    differ = sorted(k for k in test.keys() | smoke.keys() if test.get(k, "<unset>") != smoke.get(k, "<unset>"))
    assert differ, "the smoke config should differ on the GPU path"
    assert [k for k in differ if not any(re.fullmatch(p, k) for p in GPU_PATH_KEYS)] == []


def walk(node: dict, where: str = "schema"):
    """Every sub-schema with its location (a reference's own properties only hold defaults: its definition, walked
    under $defs, holds the types and descriptions)."""
    yield where, node
    for key in ("$defs",) if "$ref" in node else ("properties", "$defs"):
        for name, child in node.get(key, {}).items():
            yield from walk(child, f"{where}.{name}")
    for key in ("anyOf", "oneOf", "allOf"):
        for i, child in enumerate(node.get(key, [])):
            yield from walk(child, f"{where}/{key}[{i}]")
    if isinstance(node.get("items"), dict):
        yield from walk(node["items"], f"{where}[]")


def test_every_object_is_closed_and_every_property_described():
    schema = build_schema()
    objects = [(w, n) for w, n in walk(schema) if n.get("type") == "object" or "properties" in n]
    assert len(objects) > 20
    # a reference is closed by its definition (which is walked too)
    open_objects = [
        w for w, n in objects if resolve(schema, n).get("additionalProperties") is not False and "properties" in n
    ]
    assert open_objects == []
    # a free-form mapping (e.g. reward weights) has no properties to close, but says what it holds
    for w, n in objects:
        if "properties" not in n:
            assert n.get("description"), w
    undescribed = [
        f"{w}.{name}"
        for w, n in walk(schema)
        for name, prop in ({} if "$ref" in n else n.get("properties", {})).items()
        if not (isinstance(prop.get("description"), str) and prop["description"].strip())
    ]
    assert undescribed == []


def as_numbers(node):
    """Ints as floats, so that 0.002 and 2e-3, or 1 and 1.0, compare equal."""
    if isinstance(node, dict):
        return {k: as_numbers(v) for k, v in node.items()}
    if isinstance(node, list):
        return [as_numbers(v) for v in node]
    return float(node) if isinstance(node, int) and not isinstance(node, bool) else node


def minimal_config() -> dict:
    """A config that sets only what the schema requires."""
    return {"seed": 0, "data": {"scenes": {}, "instructions": {}, "shards": {}}}


def test_the_dataclass_defaults_are_the_default_config():
    """A config that names nothing but the required blocks means config/config.yaml, at every depth: a key left out of
    a config means what the embedded default means."""
    default, minimal = validated(load(ROOT / "config" / "config.yaml")), validated(minimal_config())
    assert as_numbers(minimal["data"]) == as_numbers(default["data"])
    # the stage sections as their stages get them (an optional block such as a LoRA's is filled by its dataclass)
    for name, cls in stage_sections().items():
        assert asdict(config_from(cls, minimal[name])) == asdict(config_from(cls, default[name])), name
    assert set(minimal) == set(default)


def test_a_partly_given_section_gets_its_own_defaults():
    """Stage 2 and stage 3 share one GRPO definition but not its defaults: a block that sets one key gets the rest
    from its own stage (the defaults written ahead of the reference win)."""
    default = validated(load(ROOT / "config" / "config.yaml"))
    for stage in ("grpo_gt", "grpo_critic"):
        config = minimal_config()
        config["builder"] = {stage: {"lr": 0.5}, "vlm": {"hidden_size": 64}}
        got = validated(config)["builder"]
        assert as_numbers(got[stage]) == as_numbers({**default["builder"][stage], "lr": 0.5})
        assert got["vlm"] == {**default["builder"]["vlm"], "hidden_size": 64}
        other = "grpo_critic" if stage == "grpo_gt" else "grpo_gt"
        assert as_numbers(got[other]) == as_numbers(default["builder"][other])


def test_repeated_types_are_defined_once():
    schema = build_schema()
    assert {"GRPOSettings", "SFTSettings", "LoopConfig", "VLMConfig"} <= set(schema["$defs"])
    builder = schema["properties"]["builder"]["properties"]
    assert builder["grpo_gt"]["$ref"] == builder["grpo_critic"]["$ref"] == "#/$defs/GRPOSettings"
    assert resolve(schema, builder["grpo_gt"])["properties"]["steps"]["type"] == "integer"


def test_unknown_keys_are_rejected():
    config = load(ROOT / "config" / "config.yaml")
    config["data"]["shards"]["mergeReads"] = True
    with pytest.raises(Exception, match="mergeReads"):
        validated(config)


def test_default_configs_pass_check_config():
    check_config(validated(load(ROOT / "config" / "config.yaml")))
    check_config(validated(load(ROOT / ".test" / "config" / "config.yaml")))


def test_set_me_placeholder_is_named():
    config = validated(load(ROOT / "config" / "config.yaml"))
    config["evaluation"]["gedit"] = {"path": "SET_ME_gedit_bench_copy"}
    with pytest.raises(ConfigError, match=r"SET_ME placeholder.*: evaluation\.gedit\.path$"):
        check_config(config)


def test_missing_listing_is_named(tmp_path):
    config = validated(load(ROOT / "config" / "config.yaml"))
    missing = tmp_path / "nope.parquet"
    config["data"]["shards"]["sources"] = {"segmentation": {"listing": str(missing), "root": str(tmp_path)}}
    with pytest.raises(ConfigError) as err:
        check_config(config)
    assert (
        str(err.value) == f"config key data.shards.sources.segmentation.listing: file {str(missing)!r} does not exist"
    )
    # with the listing present, a missing root folder is named instead
    missing.write_text("")
    config["data"]["shards"]["sources"]["segmentation"]["root"] = str(tmp_path / "no_dir")
    with pytest.raises(ConfigError, match=r"^config key data\.shards\.sources\.segmentation\.root: dir "):
        check_config(config)
    config["data"]["shards"]["sources"]["segmentation"]["root"] = str(tmp_path)
    check_config(config)


def test_source_for_an_unknown_family_is_named(tmp_path):
    config = validated(load(ROOT / "config" / "config.yaml"))
    del config["data"]["shards"]["families"]["captioning"]
    listing = tmp_path / "l.csv"
    listing.write_text("")
    config["data"]["shards"]["sources"] = {"captioning": {"listing": str(listing), "root": str(tmp_path)}}
    with pytest.raises(ConfigError, match=r"^config key data\.shards\.sources\.captioning: no such family"):
        check_config(config)


def test_paper_config_validates_but_lists_every_set_me_key():
    config = validated(load(ROOT / "config" / "paper.yaml"))
    with pytest.raises(ConfigError) as err:
        check_config(config)
    message = str(err.value)
    assert message.startswith("these config keys still hold a SET_ME placeholder")
    assert message.split(": ", 1)[1].split(", ") == PAPER_SET_ME_KEYS


def test_config_from_builds_nested_dataclasses_and_names_unknown_keys():
    from lego_edit.pipeline import config_from
    from lego_edit.training.segmentation import SegmentationTrainConfig

    paths = {"shards": "s", "output_dir": "o"}
    cfg = config_from(SegmentationTrainConfig, {"train": {"steps": 7, "batch_size": 2}, **paths}, seed=3)
    assert cfg.train.steps == 7 and cfg.seed == 3 and not isinstance(cfg.train, dict)
    with pytest.raises(ValueError, match="SegmentationTrainConfig has no option.s. stesp"):
        config_from(SegmentationTrainConfig, {"stesp": 7, **paths})
    with pytest.raises(ValueError, match="LoopConfig has no option.s. stesp"):
        config_from(SegmentationTrainConfig, {"train": {"stesp": 7}, **paths})


def test_stage_two_on_the_rl_split_needs_rl_instructions():
    config = validated(load(ROOT / "config" / "config.yaml"))
    config["builder"]["grpo_gt"]["prompt_split"] = "rl"
    config["data"]["instructions"]["gt"]["rl_per_scene"] = 0
    with pytest.raises(ConfigError, match=r"prompt_split is rl, but data\.instructions\.gt\.rl_per_scene is 0"):
        check_config(config)
    config["data"]["instructions"]["gt"]["rl_per_scene"] = 1
    check_config(config)


def _holds(run, given) -> bool:
    """Every value ``given`` names is ``run``'s (a nested block may leave keys to their defaults)."""
    if isinstance(given, dict):
        return isinstance(run, dict) and all(k in run and _holds(run[k], v) for k, v in given.items())
    return run == given


@pytest.mark.parametrize("config_file", ["config/config.yaml", ".test/config/config.yaml", "config/paper.yaml"])
def test_each_training_job_takes_its_config_block_as_it_stands(config_file):
    """A training stage's run config is its YAML block plus the job's paths, seed and threads: the rule's block goes
    in unrenamed, and every value of it is the run config's own (what the scripts pass, key for key)."""
    from lego_edit.training.builder import BuilderConfig
    from lego_edit.training.config_sections import (
        BuilderSection,
        CriticSection,
        EditSection,
        SegmentationSection,
        VLMBrickSection,
    )
    from lego_edit.training.critic import CriticTrainConfig
    from lego_edit.training.edit_bricks import EditTrainConfig
    from lego_edit.training.segmentation import SegmentationTrainConfig
    from lego_edit.training.vlm_bricks import VLMBrickConfig

    config = validated(load(ROOT / config_file))
    bricks, builder = config["bricks"], config["builder"]
    paths = {"shards": "s", "output_dir": "o", "checkpoint_dir": "c", "seed": 3, "threads": 2}
    jobs = [
        (SegmentationTrainConfig, SegmentationSection, bricks["segmentation"], paths),
        (EditTrainConfig, EditSection, bricks["edit"], paths),
        (EditTrainConfig, EditSection, bricks["edit"], {**paths, "brick": "RCM", "base_dir": "b"}),
        (VLMBrickConfig, VLMBrickSection, bricks["placement"], {**paths, "family": "placement"}),
        (VLMBrickConfig, VLMBrickSection, bricks["captioning"], {**paths, "family": "captioning"}),
        (CriticTrainConfig, CriticSection, bricks["critic"], {**paths, "executed_shards": "e"}),
    ]
    for stage in ("sft", "grpo_gt", "grpo_critic"):  # rules/common.smk: builder_stage_section
        block = {"stage": stage, stage: builder[stage], "prompt_style": builder["prompt_style"]}
        jobs.append((BuilderConfig, BuilderSection, block, {k: v for k, v in paths.items() if k != "shards"}))
    for run_cls, section_cls, block, job in jobs:
        assert issubclass(run_cls, section_cls)
        run = asdict(config_from(run_cls, {**block, **job}))
        assert _holds(as_numbers(run), as_numbers(dict(block))), run_cls.__name__
    lora = config_from(EditTrainConfig, {**bricks["edit"], **paths, "brick": "RCM", "base_dir": "b"})
    base = config_from(EditTrainConfig, {**bricks["edit"], **paths})
    assert _holds(as_numbers(asdict(lora.loop)), as_numbers(bricks["edit"]["lora"]["train"]))
    assert _holds(as_numbers(asdict(base.loop)), as_numbers(bricks["edit"]["base"]))


def test_a_builder_stage_records_only_what_its_rule_gave_it():
    """train_config.json of a Builder stage: its own settings as the config has them, never the other stages'
    settings or the base VLM's sizes, which the rule does not pass (they would read as the run's, at defaults)."""
    from lego_edit.training.builder import BuilderConfig, recorded_config

    builder = validated(load(ROOT / ".test/config/config.yaml"))["builder"]
    for stage in ("sft", "grpo_gt", "grpo_critic"):
        block = {"stage": stage, stage: builder[stage], "prompt_style": builder["prompt_style"]}
        recorded = recorded_config(config_from(BuilderConfig, {**block, "output_dir": "o", "seed": 3}))
        assert _holds(as_numbers(recorded), as_numbers(block)) and recorded["seed"] == 3
        assert not ({"sft", "grpo_gt", "grpo_critic", "vlm", "vocab_size"} - {stage}) & set(recorded)
