"""The pipeline config's JSON schema, generated from the stages' config dataclasses.

Each dataclass field becomes a property with its type, its ``help`` text as description, its bounds (``minimum``,
``maximum``, ``multipleOf``, ``minLength`` in the field's metadata) and its default, and every object forbids unknown
keys; so the schema, the defaults and the code cannot drift apart. A config dataclass nested in a section is written
once, under ``$defs``, with its class defaults; where a field's default object differs (the stage-2 and stage-3 GRPO
settings, say), the reference carries just the differing defaults, ahead of the ``$ref`` so that Snakemake, which
fills defaults in keyword order, takes them first. ``python -m lego_edit.config_schema > config/schema.yaml``
regenerates the file (a test checks it is current).
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
BOUNDS = ("minimum", "maximum", "multipleOf", "minLength")
_defs: dict | None = None  # the $defs being collected while build_schema runs


def _type_schema(hint, default=None) -> dict:
    """A property's schema; a dataclass's nested defaults are those of ``default`` (the field's default object)
    when given, so that an object's default and its properties' defaults agree."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1 and dataclasses.is_dataclass(args[0]):
            inner = dataclass_schema(args[0])  # written out: it must carry no defaults (below)
        else:
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
        return _reference(hint, default)
    return {
        int: {"type": "integer"},
        float: {"type": "number"},
        bool: {"type": "boolean"},
        str: {"type": "string"},
    }.get(hint, {})


def _reference(cls, default) -> dict:
    """A nested config dataclass: a reference to its one definition, preceded by the defaults that differ here."""
    if _defs is None:
        raise RuntimeError("a nested config dataclass is written under $defs: build the schema with build_schema()")
    if cls.__name__ not in _defs:
        _defs[cls.__name__] = {}  # claimed before the fields are read, against a type that nests itself
        _defs[cls.__name__] = dataclass_schema(cls)
    out = {}
    differing = _differing_defaults(cls, default, cls()) if isinstance(default, cls) else {}
    if differing:
        out["properties"] = differing
    out["$ref"] = f"#/$defs/{cls.__name__}"
    return out


def _differing_defaults(cls, value, base) -> dict:
    """The fields of ``value`` that differ from ``base``, as property schemas holding only their defaults."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        mine, theirs = getattr(value, f.name), getattr(base, f.name)
        if mine == theirs:
            continue
        kind = hints[f.name]
        if dataclasses.is_dataclass(kind) and isinstance(mine, kind) and isinstance(theirs, kind):
            out[f.name] = {"default": {}, "properties": _differing_defaults(kind, mine, theirs)}
        else:
            out[f.name] = {"default": dataclasses.asdict(mine) if dataclasses.is_dataclass(mine) else mine}
    return out


def resolve(schema: dict, node: dict) -> dict:
    """``node`` with its ``$ref`` (into ``schema``'s ``$defs``) followed: the definition's keywords."""
    while "$ref" in node:
        node = schema["$defs"][node["$ref"].removeprefix("#/$defs/")]
    return node


def _without_defaults(node):
    if isinstance(node, dict):
        return {k: _without_defaults(v) for k, v in node.items() if k != "default"}
    if isinstance(node, list):
        return [_without_defaults(v) for v in node]
    return node


def _default_object(field: dataclasses.Field):
    """The field's own default (MISSING if it has none)."""
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


def dataclass_schema(cls, exclude: set[str] = frozenset(), description: str | None = None) -> dict:
    """The schema of a config dataclass, with its class defaults (a nested one: a reference, see _reference)."""
    hints = typing.get_type_hints(cls)
    props = {}
    for f in dataclasses.fields(cls):
        if f.name in exclude:
            continue
        default_object = _default_object(f)
        kind = hints[f.name]
        typed = _type_schema(kind, None if default_object is dataclasses.MISSING else default_object)
        if dataclasses.is_dataclass(kind) and "help" not in f.metadata:
            prop = {"description": (kind.__doc__ or f.name).strip().splitlines()[0]}
        else:
            prop = {"description": f.metadata.get("help", f.name.replace("_", " "))}
        if default_object is not dataclasses.MISSING:
            if dataclasses.is_dataclass(kind) and isinstance(default_object, kind):
                prop["default"] = {}  # its properties' defaults fill it: one place for each default
            elif dataclasses.is_dataclass(default_object):
                prop["default"] = dataclasses.asdict(default_object)
            else:
                prop["default"] = default_object
        prop.update(typed)
        prop.update({k: f.metadata[k] for k in BOUNDS if k in f.metadata})
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
                                0,
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
        },
    }
    global _defs
    _defs = {}
    try:
        schema["properties"]["data"] = data_section()
        for name, cls in stage_sections().items():
            schema["properties"][name] = {**dataclass_schema(cls), "default": {}}
        schema["$defs"] = dict(sorted(_defs.items()))
    finally:
        _defs = None
    return schema


class _NoAliases(yaml.SafeDumper):
    def ignore_aliases(self, data):  # repeated sub-schemas are written out, not as &id anchors
        return True


def schema_yaml() -> str:
    header = "# Generated by `python -m lego_edit.config_schema > config/schema.yaml`; edit the dataclasses instead.\n"
    return header + yaml.dump(build_schema(), Dumper=_NoAliases, sort_keys=False, width=120)


if __name__ == "__main__":
    print(schema_yaml(), end="")
