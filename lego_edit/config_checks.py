"""Checks of a pipeline config that a JSON schema cannot express (files that must exist, cross-field
rules). Run by rules/common.smk right after schema validation, so a bad config fails before any job."""

from __future__ import annotations

from pathlib import Path


class ConfigError(ValueError):
    """A config value that cannot work, named by its key path."""


def _check_path(key: str, value: str | None, kind: str = "file") -> None:
    if value is None:
        return
    path = Path(value)
    ok = path.is_file() if kind == "file" else path.is_dir() if kind == "dir" else path.exists()
    if not ok:
        raise ConfigError(f"config key {key}: {kind} {value!r} does not exist")


PLACEHOLDER = "SET_ME"


def _placeholders(node, path: str = "") -> list[str]:
    if isinstance(node, dict):
        return [p for k, v in node.items() for p in _placeholders(v, f"{path}.{k}" if path else str(k))]
    if isinstance(node, list):
        return [p for i, v in enumerate(node) for p in _placeholders(v, f"{path}[{i}]")]
    return [path] if isinstance(node, str) and node.startswith(PLACEHOLDER) else []


def check_config(config: dict) -> None:
    unset = _placeholders(config)
    if unset:
        raise ConfigError(
            "these config keys still hold a SET_ME placeholder; set them to your paths or endpoints: "
            + ", ".join(unset)
        )
    shards = config["data"]["shards"]
    for family, source in shards.get("sources", {}).items():
        if family not in shards["families"]:
            raise ConfigError(f"config key data.shards.sources.{family}: no such family in data.shards.families")
        _check_path(f"data.shards.sources.{family}.listing", source["listing"])
        _check_path(f"data.shards.sources.{family}.root", source.get("root", "."), "dir")
    _check_builder_sources(config["data"])
    if (
        "critic" in shards["families"]
        and config["data"]["instructions"]["gt"]["per_scene"] == 0
        and config["data"]["instructions"]["open"]["per_scene"] == 0
    ):
        raise ConfigError("config key data.instructions: the critic needs instructions, but per_scene is 0 for both")
    if (
        config["builder"]["grpo_gt"].get("prompt_split") == "rl"
        and config["data"]["instructions"]["gt"].get("rl_per_scene", 0) == 0
    ):
        raise ConfigError(
            "config key builder.grpo_gt.prompt_split is rl, but data.instructions.gt.rl_per_scene is 0: "
            "set rl_per_scene above 0 (stage 2's own instructions) or prompt_split to train"
        )
    ev = config.get("evaluation", {})
    _check_path("evaluation.gedit.path", (ev.get("gedit") or {}).get("path"), "any")
    _check_path("evaluation.imgedit.json", (ev.get("imgedit") or {}).get("json"))
    _check_path("evaluation.imgedit.images", (ev.get("imgedit") or {}).get("images"), "dir")
    _check_judge(ev)
    folder = (config.get("edit") or {}).get("folder")
    _check_path("edit.folder", folder, "dir")


def _check_builder_sources(data: dict) -> None:
    """Each builder source exists, and a teacher endpoint is named when there is any."""
    sources = data.get("builder_sources") or []
    for i, source in enumerate(sources):
        _check_path(f"data.builder_sources[{i}].path", source["path"], "any")
        _check_path(f"data.builder_sources[{i}].root", source.get("root", "."), "dir")
    teacher = data.get("teacher") or {}
    if sources and not (teacher.get("base_url") and teacher.get("model")):
        raise ConfigError(
            "config key data.teacher: data.builder_sources needs a teacher endpoint; set data.teacher.base_url and "
            "data.teacher.model (or empty data.builder_sources)"
        )


def _check_judge(ev: dict) -> None:
    """evaluation.judge names an endpoint whole or not at all; each protocol checkout holds its prompt file."""
    from .evaluation.protocols import ProtocolLayoutError, protocol_file

    judge = ev.get("judge") or {}
    if bool(judge.get("base_url")) != bool(judge.get("model")):
        raise ConfigError(
            "config key evaluation.judge: set both base_url and model (an endpoint judge), or neither "
            "(the run's critic judges)"
        )
    for set_name, path in (ev.get("protocols") or {}).items():
        if path:
            try:
                protocol_file(set_name, path)
            except ProtocolLayoutError as e:
                raise ConfigError(f"config key evaluation.protocols.{set_name}: {e}") from None
