"""The ``lego-edit`` command line. Heavy imports happen inside each command, so ``validate`` starts fast."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _registry(args):
    from .bricks.registry import default_registry

    registry = default_registry()
    for msg in registry.plugin_errors:
        print(f"warning: {msg}", file=sys.stderr)
    if getattr(args, "models", None):
        from .bricks.models import bind_model_bricks

        bind_model_bricks(registry, args.models, device=getattr(args, "device", None))
    return registry


class UsageError(Exception):
    """A command-line input that cannot be used (a missing or unreadable file): one line on stderr, exit 2."""


def _read_workflow(path: str):
    from .workflow import parse_workflow

    if path == "-":
        return parse_workflow(sys.stdin.read())
    p = Path(path)
    if not p.exists():
        raise UsageError(f"{path}: no such workflow file")
    if p.is_dir():
        raise UsageError(f"{path}: is a folder, not a workflow file")
    try:
        text = p.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise UsageError(f"{path}: cannot read the workflow file ({e.strerror or e})") from None
    return parse_workflow(text)


def cmd_validate(args) -> int:
    from .workflow import WorkflowError, validate_workflow

    try:
        wf = _read_workflow(args.workflow)
    except WorkflowError as e:
        _print_issues(args, e.issues, [])
        return 1
    report = validate_workflow(wf, _registry(args), has_mask=args.mask)
    _print_issues(args, report.errors, report.warnings)
    return 0 if report.ok else 1


def _print_issues(args, errors, warnings) -> None:
    if getattr(args, "json", False):
        print(
            json.dumps(
                {
                    "valid": not errors,
                    "errors": [e.to_dict() for e in errors],
                    "warnings": [w.to_dict() for w in warnings],
                },
                indent=2,
            )
        )
        return
    for e in errors:
        print(f"error: {e}")
    for w in warnings:
        print(f"warning: {w}")
    if not errors:
        print("valid")


def cmd_run_workflow(args) -> int:
    from .imageio import ImageReadError, atomic_write_json, load_image, load_mask, save_image
    from .workflow import BrickContext, ExecutionError, Executor, WorkflowError

    try:
        wf = _read_workflow(args.workflow)
        image = load_image(args.image)
        mask = load_mask(args.mask, size=(image.shape[1], image.shape[0])) if args.mask else None
        executor = Executor(_registry(args), BrickContext(seed=args.seed))
        result = executor.run(wf, image, mask)
    except WorkflowError as e:
        for issue in e.issues:
            print(f"error: {issue}", file=sys.stderr)
        return 1
    except (ExecutionError, ImageReadError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    out = Path(args.out)
    paths = []
    for i, img in enumerate(result.images):
        path = out / f"result_{i}.png"
        save_image(path, img)
        paths.append(str(path))
    atomic_write_json(
        out / "run.json",
        {
            "workflow": wf.to_dict(),
            "reasoning": wf.reasoning,
            "results": paths,
            "steps": [{"step": r.step, "brick": r.brick, "seconds": round(r.seconds, 6)} for r in result.steps],
            "warnings": [w.to_dict() for w in result.warnings],
            "seconds": round(result.seconds, 6),
        },
    )
    for w in result.warnings:
        print(f"warning: {w}", file=sys.stderr)
    print("\n".join(paths))
    return 0


def cmd_bricks(args) -> int:
    registry = _registry(args)
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "name": s.name,
                        "aliases": list(s.aliases),
                        "category": s.category,
                        "backend": s.backend,
                        "inputs": {p.name: str(p.kind) for p in s.inputs},
                        "outputs": {p.name: str(p.kind) for p in s.outputs},
                        "available": registry.implementation(s.name) is not None,
                        "source": registry.source(s.name),
                    }
                    for s in registry
                ],
                indent=2,
            )
        )
        return 0
    rows = [("NAME", "KIND", "INPUTS", "OUTPUTS", "STATUS", "ALIASES")]
    for s in registry:
        status = "ready" if registry.implementation(s.name) else "no model"
        if registry.source(s.name).startswith("plugin"):
            status += " (plugin)"
        rows.append(
            (
                s.name,
                s.category,
                ", ".join(f"{p.name}:{p.kind}" for p in s.inputs),
                ", ".join(f"{p.name}:{p.kind}" for p in s.outputs),
                status,
                ", ".join(s.aliases),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return 0


def cmd_prompt(args) -> int:
    from .bricks.prompt import render_prompt, render_system_prompt

    registry = _registry(args)
    if args.instruction:
        print(render_prompt(registry, args.instruction, has_mask=args.mask, naming=args.naming))
    else:
        print(render_system_prompt(registry, naming=args.naming))
    return 0


def cmd_edit(args) -> int:
    """Batch-edit a folder. Exit 0: every image edited (or done before); 1: some failed (see the manifest);
    2: the batch could not start (bad options, mapping file or workflow)."""
    import logging

    from .editing import EditConfig, EditError, ManifestError, MappingError, edit_folder

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = EditConfig(
            folder=args.folder,
            output=args.out,
            instruction=args.instruction,
            mapping=args.mapping,
            workflow=args.workflow,
            run=args.run,
            builder=args.builder,
            builder_url=args.builder_url,
            builder_model=args.builder_model,
            prompt_style=args.prompt_style,
            batch_size=args.batch_size,
            retry_failed=args.retry_failed,
            chunk=args.chunk,
            chunks=args.chunks,
            manifest=args.manifest,
            seed=args.seed,
            device=args.device,
            threads=args.threads,
            max_new_tokens=args.max_new_tokens,
            max_side=args.max_side,
            item_seconds=args.item_seconds,
            concurrency=args.concurrency,
            progress=not args.no_progress,
        )
        summary = edit_folder(cfg)
    except (EditError, MappingError, ManifestError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: the manifest holds every image finished; rerun the same command to go on", file=sys.stderr)
        return 130
    print(summary)
    return 1 if summary.failed or summary.failed_before else 0


def cmd_plan(args) -> int:
    from .plan import GPU, format_plan, load_config, plan

    gpu = GPU(memory_gb=args.gpu_memory, tflops=args.tflops, bandwidth_tbs=args.bandwidth, mfu=args.mfu)
    jobs = plan(load_config(args.configfile), gpu)
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "rule": j.rule,
                        "gpus": j.gpus,
                        "model": j.model,
                        "memory_gb": j.parts_gb,
                        "total_gb": j.total_gb,
                        "fits": j.total_gb <= gpu.memory_gb,
                        "step_seconds": j.step_seconds,
                        "steps": j.steps,
                        "gpu_hours": j.gpu_hours,
                        "note": j.note,
                    }
                    for j in jobs
                ],
                indent=2,
            )
        )
    else:
        print(format_plan(jobs, gpu))
    return 0 if all(j.total_gb <= gpu.memory_gb for j in jobs) else 1


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    p = argparse.ArgumentParser(prog="lego-edit", description="Build, train and run a Lego-Edit style image editor.")
    p.add_argument("--version", action="version", version=f"lego-edit {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    v = sub.add_parser("validate", help="check a workflow JSON against the brick registry (exit 1 if invalid)")
    v.add_argument("workflow", help="workflow file (a Builder answer or JSON), or - for stdin")
    mask = v.add_mutually_exclusive_group()
    mask.add_argument(
        "--mask",
        dest="mask",
        action="store_true",
        default=None,
        help="a user mask comes with the image (init[mask] is allowed)",
    )
    mask.add_argument(
        "--no-mask",
        dest="mask",
        action="store_false",
        help="no user mask comes with the image (init[mask] is an error)",
    )
    v.add_argument("--json", action="store_true", help="print the verdict as JSON")
    v.set_defaults(func=cmd_validate)

    r = sub.add_parser("run-workflow", help="execute a workflow on one image")
    r.add_argument("workflow")
    r.add_argument("--image", required=True)
    r.add_argument("--mask", help="a user mask (white = selected, or the alpha channel)")
    r.add_argument("--out", required=True, help="output folder")
    r.add_argument("--models", help="trained brick models: a pipeline run's results/ folder")
    r.add_argument("--device", help="torch device for model bricks (default: cuda if available)")
    r.add_argument("--seed", type=int, default=0)
    r.set_defaults(func=cmd_run_workflow)

    b = sub.add_parser("bricks", help="list the registered bricks")
    b.add_argument("--json", action="store_true")
    b.add_argument("--models", help="bind trained model bricks from this folder")
    b.set_defaults(func=cmd_bricks)

    pr = sub.add_parser("prompt", help="print the Builder's system prompt rendered from the registry")
    pr.add_argument("instruction", nargs="?", help="append this instruction as the Builder sees it")
    pr.add_argument("--mask", action="store_true", help="the user gave a mask")
    pr.add_argument(
        "--naming",
        choices=("canonical", "published"),
        default="canonical",
        help="'published' writes FLUX-FILL etc. as the released Builder expects",
    )
    pr.set_defaults(func=cmd_prompt)

    e = sub.add_parser(
        "edit",
        help="batch-edit an image folder (resumable; writes a manifest.parquet)",
        description="Edit every image of FOLDER (recursive; png/jpg/jpeg/webp/gif/bmp/tif, an animated "
        "GIF's first frame) into --out, mirroring "
        "the folder tree: the edited image(s), a .workflow.json per image and "
        "manifest.parquet. A rerun skips the images already done.",
    )
    e.add_argument("folder", help="the input image folder")
    e.add_argument("--out", required=True, help="output folder")
    what = e.add_argument_group("what to do (one of --instruction / --mapping / --workflow, or a mapping with either)")
    what.add_argument("--instruction", help="one instruction for every image")
    what.add_argument(
        "--mapping",
        help="CSV (header file,instruction[,mask]) or JSONL: image path relative to the "
        "folder -> instruction, optional mask",
    )
    what.add_argument("--workflow", help="apply this workflow JSON to every image (no Builder)")
    who = e.add_argument_group("the Builder and the brick models")
    who.add_argument("--run", help="a pipeline's results/ folder: Builder stage and trained brick models")
    who.add_argument(
        "--builder",
        default="grpo_critic",
        choices=("grpo_critic", "grpo_gt", "sft", "base"),
        help="Builder stage under <run>/builder/ (default: grpo_critic)",
    )
    who.add_argument("--builder-url", help="an OpenAI-compatible endpoint serving the Builder instead")
    who.add_argument("--builder-model", help="the served model's name (with --builder-url)")
    who.add_argument(
        "--prompt-style",
        choices=("instruction", "registry"),
        help="Builder prompt (default: the stage's own; registry for an endpoint)",
    )
    who.add_argument("--max-new-tokens", type=int, default=512)
    who.add_argument("--concurrency", type=int, default=1, help="requests in flight to the endpoint")
    how = e.add_argument_group("running")
    how.add_argument(
        "--batch-size", type=int, default=16, help="images per Builder batch and between manifest writes (default 16)"
    )
    how.add_argument("--retry-failed", action="store_true", help="edit again the images that failed before")
    how.add_argument("--chunk", type=int, default=0, help="edit only chunk K of --chunks (every N-th image)")
    how.add_argument("--chunks", type=int, default=1)
    how.add_argument(
        "--manifest",
        help="manifest path (default <out>/manifest.parquet, or manifest.chunk-K-of-N.parquet for a chunk)",
    )
    how.add_argument("--device", help="torch device for the models (default: cuda if available)")
    how.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    how.add_argument(
        "--max-side",
        type=int,
        default=1024,
        help="scale larger images down to this long side before editing (0: never)",
    )
    how.add_argument(
        "--item-seconds",
        type=float,
        default=600.0,
        help="time bound on one image's workflow; past it that image fails (0: none; default 600)",
    )
    how.add_argument("--seed", type=int, default=0)
    how.add_argument("--no-progress", action="store_true", help="no progress bar")
    e.set_defaults(func=cmd_edit)

    pl = sub.add_parser(
        "plan",
        help="per training job: GPUs, memory per GPU, fit, step time, GPU-hours",
        description="Estimate what a config's training jobs ask of each GPU (exit 1 if one does "
        "not fit), from config/config.yaml with each --configfile merged over it.",
    )
    pl.add_argument("--configfile", nargs="*", default=[], help="config files, as given to snakemake")
    pl.add_argument("--gpu-memory", type=float, default=80.0, help="GB per GPU (default 80)")
    pl.add_argument("--tflops", type=float, default=312.0, help="dense bf16 TFLOP/s per GPU (default: A100)")
    pl.add_argument("--bandwidth", type=float, default=2.0, help="memory bandwidth, TB/s (default: A100)")
    pl.add_argument("--mfu", type=float, default=0.35, help="share of peak FLOPs a training step reaches")
    pl.add_argument("--json", action="store_true")
    pl.set_defaults(func=cmd_plan)

    return p


def main(argv: list[str] | None = None) -> int:
    # Workflows are untrusted text: a lone surrogate ("\\ud800" in the JSON) must not crash printing.
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="backslashreplace")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UsageError as e:
        print(f"lego-edit {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
