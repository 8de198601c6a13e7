"""The pipeline config's JSON schema, generated from the stages' config dataclasses.

Each dataclass field becomes a property with its type, its ``help`` text as description and its default, and
every object forbids unknown keys; so the schema, the defaults and the code cannot drift apart.
``python -m lego_edit.config_schema > config/schema.yaml`` regenerates the file (a test checks it is current).
"""

from __future__ import annotations

import dataclasses
import types
import typing

import yaml

from .data.brick_samples import EDIT_BRICKS, FAMILIES
from .data.builder_sources import BuilderSource
from .data.dataset import InstructionConfig, SceneConfig
from .data.instructions import CATEGORIES
from .data.teacher import TeacherConfig

PATH_FIELDS = {
    "seed",
    "shards",
    "output_dir",
    "checkpoint_dir",
    "base_dir",
    "brick",
    "family",
    "instructions",
    "placement_shards",
    "captioning_shards",
}  # filled in by the rules, not set in the config


def _type_schema(hint, default=None) -> dict:
    """A property's schema; a dataclass's nested defaults are those of ``default`` (the field's default object)
    when given, so that an object's default and its properties' defaults agree."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        inner = _type_schema(args[0]) if len(args) == 1 else {"anyOf": [_type_schema(a) for a in args]}
        if "type" in inner and isinstance(inner["type"], str) and inner["type"] != "object":
            return {**inner, "type": [inner["type"], "null"]}
        # Snakemake fills defaults even inside anyOf branches, and crashes when the value is null: an optional
        # object therefore carries no defaults inside (its dataclass supplies them).
        return {"anyOf": [_without_defaults(inner), {"type": "null"}]}
    if origin is typing.Literal:
        return {"enum": list(typing.get_args(hint))}
    if origin in (list, tuple):
        (item,) = typing.get_args(hint)[:1] or (str,)
        return {"type": "array", "items": _type_schema(item)}
    if origin is dict:
        return {"type": "object"}
    if dataclasses.is_dataclass(hint):
        return dataclass_schema(hint, exclude=set(), instance=default if isinstance(default, hint) else None)
    return {
        int: {"type": "integer"},
        float: {"type": "number"},
        bool: {"type": "boolean"},
        str: {"type": "string"},
    }.get(hint, {})


def _without_defaults(node):
    if isinstance(node, dict):
        return {k: _without_defaults(v) for k, v in node.items() if k != "default"}
    if isinstance(node, list):
        return [_without_defaults(v) for v in node]
    return node


def _default_object(field: dataclasses.Field, instance=None):
    """The field's default: its value in ``instance`` (a parent's default object), else its own default."""
    if instance is not None:
        return getattr(instance, field.name)
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


def dataclass_schema(cls, exclude: set[str] = frozenset(), description: str | None = None, instance=None) -> dict:
    """The schema of a config dataclass; defaults from ``instance`` when given (a field's non-default object)."""
    hints = typing.get_type_hints(cls)
    props = {}
    for f in dataclasses.fields(cls):
        if f.name in exclude:
            continue
        default_object = _default_object(f, instance)
        prop = _type_schema(hints[f.name], None if default_object is dataclasses.MISSING else default_object)
        if dataclasses.is_dataclass(hints[f.name]) and "description" not in f.metadata:
            prop["description"] = (hints[f.name].__doc__ or f.name).strip().splitlines()[0]
        else:
            prop["description"] = f.metadata.get("help", f.name.replace("_", " "))
        prop.update({k: f.metadata[k] for k in ("minimum", "maximum") if k in f.metadata})
        if default_object is not dataclasses.MISSING:
            is_object = dataclasses.is_dataclass(default_object)
            prop["default"] = dataclasses.asdict(default_object) if is_object else default_object
        props[f.name] = prop
    doc = description or (cls.__doc__ or cls.__name__).strip().splitlines()[0]
    return {"type": "object", "additionalProperties": False, "description": doc, "properties": props}


def obj(description: str, properties: dict, required: list[str] | None = None, default=None) -> dict:
    out = {"type": "object", "additionalProperties": False, "description": description, "properties": properties}
    if required:
        out["required"] = required
    out["default"] = {} if default is None else default
    return out


def integer(description: str, default: int, minimum: int = 0) -> dict:
    return {"type": "integer", "minimum": minimum, "default": default, "description": description}


def data_section() -> dict:
    scenes = dataclass_schema(
        SceneConfig, exclude=PATH_FIELDS, description="Shapes-world scenes and their train/val/test split."
    )
    scenes["properties"]["image_size"].update(minimum=32, multipleOf=16)
    scenes["properties"]["max_objects"].update(minimum=1, maximum=4)
    scenes["properties"]["environment_rate"].update(minimum=0, maximum=1)
    for split in ("train", "val", "test"):
        scenes["properties"][split]["minimum"] = 0
    scenes["default"] = {}
    per_scene = {"per_scene": integer("Instructions per scene.", 1)}
    # segmentation draws several referring expressions per scene: RES is the brick the most workflows start from
    family_per_scene = {name: 4 if name == "segmentation" else 1 for name in FAMILIES}

    def family(name: str) -> dict:
        return obj(
            "Samples drawn per scene for one brick family.",
            {"per_scene": integer("Samples per scene.", family_per_scene[name], 1)},
        )

    source = obj(
        "A listing of files (CSV, parquet or JSONL) and the folder its paths are relative to.",
        {
            "listing": {"type": "string", "minLength": 1, "description": "Path of the listing file."},
            "root": {"type": "string", "default": ".", "description": "Folder the listing's paths are relative to."},
        },
        required=["listing"],
    )
    source.pop("default")
    edit_family = obj(
        "Edit-brick samples.",
        {
            "per_scene": integer("Samples per scene and brick.", 1, 1),
            "bricks": {
                "type": "array",
                "minItems": 1,
                "uniqueItems": True,
                "items": {"enum": list(EDIT_BRICKS)},
                "default": list(EDIT_BRICKS),
                "description": "Edit bricks to write samples for.",
            },
        },
    )
    source_item = dataclass_schema(BuilderSource)
    source_item["required"] = ["path"]
    source_item["properties"]["path"].pop("default")
    source_item["properties"]["path"]["minLength"] = 1
    builder_sources = {
        "type": "array",
        "items": source_item,
        "default": [],
        "description": "Real instruction data for the Builder: listings or dataset copies whose instructions the "
        "teacher VLM writes workflows for (empty: the Builder learns from the shapes world only).",
    }
    teacher = dataclass_schema(TeacherConfig)
    teacher["default"] = {}
    for name in ("concurrency", "chunks", "max_tokens", "max_side"):
        teacher["properties"][name]["minimum"] = 1
    teacher["properties"]["shapes_fraction"].update(minimum=0, maximum=1)
    return obj(
        "The data stage.",
        {
            "scenes": scenes,
            "instructions": obj(
                "Instruction synthesis.",
                {
                    "categories": {
                        "type": "array",
                        "minItems": 1,
                        "uniqueItems": True,
                        "items": {"enum": list(CATEGORIES)},
                        "default": list(InstructionConfig().categories),
                        "description": "Edit categories.",
                    },
                    "gt": obj(
                        "Instructions with GT workflows.",
                        {
                            "per_scene": integer("GT instructions per scene.", 2),
                            "rl_per_scene": integer(
                                "More GT instructions per training scene, in the split 'rl': stage 2's prompts when "
                                "builder.grpo_gt.prompt_split is rl (SFT never sees them).",
                                1,
                            ),
                        },
                    ),
                    "open": obj("Open-domain instructions (no GT workflow).", per_scene),
                },
            ),
            "shards": obj(
                "Webdataset shards for brick training.",
                {
                    "samples_per_shard": integer("Samples per tar file.", 1000, 1),
                    "families": obj(
                        "Brick families to write shards for.",
                        {name: (edit_family if name == "edit" else family(name)) for name in FAMILIES},
                    ),
                    "sources": obj(
                        "Real data on disk instead of the shapes world, per brick family.",
                        {name: source for name in FAMILIES},
                    ),
                },
            ),
            "builder_sources": builder_sources,
            "teacher": teacher,
        },
        required=["scenes", "instructions", "shards"],
    )


def build_schema() -> dict:
    from .training.config_sections import stage_sections

    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "description": "Configuration of the lego-edit pipeline (generated by lego_edit.config_schema; see "
        "config/README.md).",
        "type": "object",
        "additionalProperties": False,
        "required": ["seed", "data"],
        "properties": {
            "seed": {
                "type": "integer",
                "minimum": 0,
                "default": 0,
                "description": "The one seed threaded through data, training and sampling.",
            },
            "data": data_section(),
            **stage_sections(),
        },
    }
    return schema


class _NoAliases(yaml.SafeDumper):
    def ignore_aliases(self, data):  # repeated sub-schemas are written out, not as &id anchors
        return True


def schema_yaml() -> str:
    header = "# Generated by `python -m lego_edit.config_schema > config/schema.yaml`; edit the dataclasses instead.\n"
    return header + yaml.dump(build_schema(), Dumper=_NoAliases, sort_keys=False, width=120)


if __name__ == "__main__":
    print(schema_yaml(), end="")
