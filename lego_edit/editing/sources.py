"""Where a batch's workflows and bricks come from: a fixed workflow file, a Builder stage of a training run, or
an OpenAI-compatible Builder; brick models bound from the run. Everything heavy loads here, once per process."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import replace
from pathlib import Path

from ..layout import BRICK_MODELS, RunLayout
from ..workflow import WorkflowError, parse_workflow, validate_workflow

log = logging.getLogger(__name__)
BUILDER_STAGES = ("grpo_critic", "grpo_gt", "sft", "base")
MODEL_BRICKS = tuple(BRICK_MODELS)


def brick_model_folders(brick: str, run: RunLayout, edit_bricks: tuple[str, ...] | None = None) -> tuple[str, ...]:
    """The trained-model folders of ``run`` that a model-backed brick loads (none for a function brick).
    ``edit_bricks``: the edit bricks that get a LoRA; the others run on the edit base alone."""
    models = run.brick_models()
    if edit_bricks is not None:
        models = replace(models, edit_lora=tuple(p for p in models.edit_lora if Path(p).name in edit_bricks))
    return models.folders_of(brick)


class EditError(ValueError):
    """A batch that cannot start (bad options, a missing Builder, an unusable fixed workflow)."""


def make_registry(run: str | Path | None = None, device: str | None = None):
    """The built-in bricks (and plugins), with the run's trained brick models bound (they load on first use)."""
    from ..bricks.registry import default_registry

    registry = default_registry()
    for msg in registry.plugin_errors:
        log.warning("%s", msg)
    if run is not None:
        from ..bricks.models import bind_model_bricks

        try:
            log.info("brick models bound from %s: %s", run, ", ".join(bind_model_bricks(registry, run, device)))
        except FileNotFoundError as e:
            log.warning("%s; only function bricks will run", e)
    return registry


def read_fixed_workflow(path: str | Path):
    """(workflow, label) of a workflow file applied to every image; EditError if it is not a workflow."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise EditError(f"{path}: cannot read the workflow ({e.strerror or e})") from None
    try:
        wf = parse_workflow(text)
    except WorkflowError as e:
        raise EditError(f"{path}: not a workflow:\n" + "\n".join(f"  {i}" for i in e.issues)) from None
    return wf, "workflow:" + hashlib.sha256(wf.to_json().encode()).hexdigest()[:12]


def check_fixed_workflow(wf, path, registry, run=None) -> None:
    """Fail before the first image if the workflow does not fit the registry or calls a brick with no model."""
    report = validate_workflow(wf, registry, has_mask=None)  # with or without a mask is checked per image
    if not report.ok:
        raise EditError(f"{path}: invalid workflow:\n" + "\n".join(f"  {i}" for i in report.errors))
    missing = [b for b in workflow_bricks(wf, registry) if registry.implementation(b) is None]
    if missing:
        where = f"{run} has no trained model for them" if run else "pass --run <results folder> to bind the models"
        raise EditError(f"{path}: the workflow uses {', '.join(missing)}, which need trained models: {where}")


def workflow_bricks(wf, registry) -> tuple[str, ...]:
    """The canonical names of the bricks a workflow calls (aliases resolved)."""
    names = []
    for brick in wf.bricks():
        spec = registry.resolve(brick)
        name = spec.name if spec else brick
        if name not in names:
            names.append(name)
    return tuple(names)


def model_inputs(
    workflow_path: str | Path | None, run_dir: str = "results", edit_bricks: tuple[str, ...] | None = None
) -> list[str]:
    """The trained-model folders a batch needs (for a Snakemake rule's input): those of the fixed workflow's
    model bricks, or every brick model when a Builder writes the workflows (``workflow_path`` None).
    ``edit_bricks``: the edit bricks that get a LoRA (the pipeline's config); the others run on the base."""
    if workflow_path is None:
        bricks = MODEL_BRICKS
    else:
        from ..bricks.registry import default_registry

        registry = default_registry(plugins=False)
        bricks = workflow_bricks(read_fixed_workflow(workflow_path)[0], registry)
    run, paths = RunLayout(run_dir), []
    for b in bricks:
        paths += [p for p in brick_model_folders(b, run, edit_bricks) if p not in paths]
    return paths


def builder_identity(
    run: str | Path | None, stage: str, url: str | None, model: str | None, prompt_style: str | None
) -> tuple[str, str]:
    """(label, prompt style) of the Builder, without loading it. The label goes into the manifest: an item
    edited by another Builder is edited again on a rerun."""
    if url:
        return f"openai:{model}@{url}", prompt_style or "registry"  # a real VLM reads the full brick list
    if stage not in BUILDER_STAGES:
        raise EditError(f"--builder must be one of {', '.join(BUILDER_STAGES)}, not {stage!r}")
    stage_dir = Path(RunLayout(run).builder(stage))
    if not stage_dir.is_dir():
        raise EditError(
            f"{stage_dir}: no Builder stage '{stage}' in this run (train it first, or choose another "
            f"with --builder {'|'.join(BUILDER_STAGES)})"
        )
    style = prompt_style
    cfg = stage_dir / "train_config.json"
    if style is None and cfg.is_file():
        style = json.loads(cfg.read_text()).get("prompt_style")
    return stage, style or "instruction"


def load_builder(
    run: str | Path | None,
    stage: str,
    url: str | None,
    model: str | None,
    *,
    device: str | None = None,
    max_new_tokens: int = 512,
    batch_size: int = 16,
    seed: int = 0,
    concurrency: int = 1,
):
    """The Builder's generation backend: a local VLM (a stage folder holding a model, or a LoRA adapter over the
    base it names) or an OpenAI-compatible endpoint."""
    from ..builder.backends import LocalVLMBackend, OpenAIChatBackend

    if url:
        return OpenAIChatBackend(
            url, model, max_tokens=max_new_tokens, temperature=0.0, seed=seed, concurrency=concurrency
        )
    from ..training.vlm_sft import resolve_base

    stage_dir = Path(RunLayout(run).builder(stage))
    meta = stage_dir / "adapter_base.json"
    kwargs = dict(device=device, max_new_tokens=max_new_tokens, batch_size=batch_size, seed=seed)
    if meta.is_file():  # a LoRA stage: the adapter over the base it was trained on
        base = Path(json.loads(meta.read_text())["base"])
        if not base.exists():  # the run folder moved since training: the base is its sibling stage
            base = stage_dir.parent / base.name
        log.info("loading the Builder: %s (adapter) over %s", stage_dir, base)
        return LocalVLMBackend(resolve_base(base), adapter=stage_dir, **kwargs)
    log.info("loading the Builder: %s", stage_dir)
    return LocalVLMBackend(resolve_base(stage_dir), **kwargs)
