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


def _read_workflow(path: str):
    from .workflow import parse_workflow

    text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8", errors="replace")
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
        print(json.dumps({"valid": not errors, "errors": [e.to_dict() for e in errors],
                          "warnings": [w.to_dict() for w in warnings]}, indent=2))
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
    atomic_write_json(out / "run.json", {
        "workflow": wf.to_dict(), "reasoning": wf.reasoning, "results": paths,
        "steps": [{"step": r.step, "brick": r.brick, "seconds": round(r.seconds, 6)} for r in result.steps],
        "warnings": [w.to_dict() for w in result.warnings], "seconds": round(result.seconds, 6)})
    for w in result.warnings:
        print(f"warning: {w}", file=sys.stderr)
    print("\n".join(paths))
    return 0


def cmd_bricks(args) -> int:
    registry = _registry(args)
    if args.json:
        print(json.dumps([{
            "name": s.name, "aliases": list(s.aliases), "category": s.category, "backend": s.backend,
            "inputs": {p.name: str(p.kind) for p in s.inputs}, "outputs": {p.name: str(p.kind) for p in s.outputs},
            "available": registry.implementation(s.name) is not None, "source": registry.source(s.name),
        } for s in registry], indent=2))
        return 0
    rows = [("NAME", "KIND", "INPUTS", "OUTPUTS", "STATUS", "ALIASES")]
    for s in registry:
        status = "ready" if registry.implementation(s.name) else "no model"
        if registry.source(s.name).startswith("plugin"):
            status += " (plugin)"
        rows.append((s.name, s.category, ", ".join(f"{p.name}:{p.kind}" for p in s.inputs),
                     ", ".join(f"{p.name}:{p.kind}" for p in s.outputs), status, ", ".join(s.aliases)))
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


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    p = argparse.ArgumentParser(prog="lego-edit", description="Build, train and run a Lego-Edit style image editor.")
    p.add_argument("--version", action="version", version=f"lego-edit {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    v = sub.add_parser("validate", help="check a workflow JSON against the brick registry (exit 1 if invalid)")
    v.add_argument("workflow", help="workflow file (a Builder answer or JSON), or - for stdin")
    v.add_argument("--mask", action="store_true", default=None, help="a user mask comes with the image")
    v.add_argument("--json", action="store_true", help="print the verdict as JSON")
    v.set_defaults(func=cmd_validate)

    r = sub.add_parser("run-workflow", help="execute a workflow on one image")
    r.add_argument("workflow")
    r.add_argument("--image", required=True)
    r.add_argument("--mask", help="a user mask (white = selected, or the alpha channel)")
    r.add_argument("--out", required=True, help="output folder")
    r.add_argument("--models", help="trained brick models (a run's results/bricks folder)")
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
    pr.add_argument("--naming", choices=("canonical", "published"), default="canonical",
                    help="'published' writes FLUX-FILL etc. as the released Builder expects")
    pr.set_defaults(func=cmd_prompt)

    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
