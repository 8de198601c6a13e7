"""The critic's training data from the trained bricks: GT workflows and near misses of them, executed.

A critic trained on clean renders only has never seen what the bricks really produce: a blurred fill, a recolour
that bleeds, the right edit on the wrong object. Here each sampled GT instruction's workflow is run with the
trained bricks, together with perturbed copies of it, the mistakes a Builder makes:

  * ``wrong_object``: a referring expression (RES, POSE) names another object of the scene;
  * ``wrong_attribute``: a colour, pattern, shape, place, background, style, environment, direction or ratio
    argument is swapped for another value of its kind;
  * ``missing_step``: the workflow's last edit is dropped (the result is that step's input image);

and, when a stage-1 Builder is given, its own answers (``builder``: greedy and sampled), which carry the
mistakes the Builder really makes, as the outputs stage 3 will ask the critic to score do.

Every output is scored against the instruction's exact GT target with the evaluation's own definition
(``evaluation.edit_success``): its PSNR and edit success are the critic's ranking and cross-entropy targets, so a
perturbation that happens to give the right edit is labelled right. Samples go into a shard set like the other
families, keyed ``<instruction id>_x<k>`` so that they join their instruction's clean candidates in one group.

    python -m lego_edit.training.critic_samples --config cfg.json
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..bricks.models import pose_direction, pose_subject
from ..data.dataset import _rng, load_instructions, select_rows
from ..data.instructions import ENV_PROMPT
from ..data.phrases import RESIZE_WORDS
from ..data.referring import candidates, resolve
from ..data.shapes import BACKGROUNDS, COLORS, ORIENTATIONS, PATTERNS, PLACES, SHAPES, STYLES, TEXTURES, Scene
from ..data.shards import load_scene_json, write_shard_set
from ..evaluation.edit_success import load_target, score_edit
from ..imageio import atomic_write_json, load_image
from ..workflow import BrickContext, Executor, parse_workflow
from ..workflow.values import rgb
from .common import write_metrics

log = logging.getLogger(__name__)
PERTURBATIONS = ("wrong_object", "wrong_attribute", "missing_step")
_STREAM = 31  # the random stream of these draws (data.dataset._rng keys)

# Words of one kind, longest first so that "light blue" is found before "blue".
WORD_KINDS = [
    sorted(kind, key=len, reverse=True)
    for kind in (
        list(BACKGROUNDS),
        list(COLORS),
        [p for p in PATTERNS if p != "solid"],
        list(SHAPES),
        list(TEXTURES[1:]),
        list(PLACES),
        list(ORIENTATIONS),
        list(STYLES[1:]),
    )
]


@dataclass
class CriticSamplesConfig:
    instructions: str = field(default="", metadata={"help": "The GT instruction table."})
    open_instructions: str = field(
        default="", metadata={"help": "The open-domain instruction table (GT targets, no GT workflow)."}
    )
    scenes: str = field(default="", metadata={"help": "The scene table (for other objects' expressions)."})
    models: str | dict = field(
        default="results",
        metadata={
            "help": "The trained brick models: a run's results folder, or their folders by name (segmentation, "
            "base_vlm, placement, captioning, edit_base, edit_lora: a list)."
        },
    )
    output_dir: str = ""
    seed: int = 0
    train_instructions: int = field(default=600, metadata={"help": "Training-split instructions executed."})
    val_instructions: int = field(default=100, metadata={"help": "Validation-split instructions (held-out figure)."})
    open_train_instructions: int = field(
        default=300, metadata={"help": "Training-split open instructions whose Builder answers are executed."}
    )
    open_val_instructions: int = field(default=0, metadata={"help": "Validation-split open instructions."})
    variants: int = field(default=2, metadata={"help": "Perturbed workflows per instruction (besides the GT one)."})
    batch_size: int = field(default=64, metadata={"help": "Workflows executed together (one model pass per brick)."})
    builder: str = field(default="", metadata={"help": "A Builder whose own answers are executed too (empty: none)."})
    builder_answers: int = field(
        default=2,
        metadata={"help": "Answers per instruction from that Builder: the greedy one, then samples at temperature 1."},
    )
    samples_per_shard: int = field(default=1000, metadata={"help": "Samples per tar file."})


def _swap_word(text: str, rng) -> str | None:
    """``text`` with one known attribute word replaced by another of its kind, or None if it has none."""
    found = [
        (m.start(), m.end(), kind)
        for kind in WORD_KINDS
        for w in kind
        for m in re.finditer(rf"\b{re.escape(w)}\b", text)
    ]
    found = [f for f in found if not any(o[0] <= f[0] and f[1] <= o[1] and o != f for o in found)]  # longest match
    if not found:
        return None
    start, end, kind = found[int(rng.integers(len(found)))]
    word = text[start:end]
    other = [w for w in kind if w != word and " " not in w] or [w for w in kind if w != word]
    return text[:start] + other[int(rng.integers(len(other)))] + text[end:]


def _other_expression(scene: Scene, current: str, rng) -> str | None:
    """An expression naming an object other than the one ``current`` names (None in a one-object scene)."""
    named = resolve(scene, current)
    options = [e for i in range(len(scene.objects)) if i != named for e in candidates(scene, i) if e != current]
    return options[int(rng.integers(len(options)))] if options else None


def perturb(workflow: dict, scene: Scene, kind: str, rng) -> dict | None:
    """A copy of ``workflow`` (published format) with one mistake of ``kind``, or None where it cannot be made."""
    wf = json.loads(json.dumps(workflow))
    steps = [s for s in wf["pipeline"] if "model" in s]
    if kind == "wrong_object":
        spots = [s for s in steps if s["model"] in ("RES", "POSE") and isinstance(s["input"].get("prompt"), str)]
        if not spots:
            return None
        s = spots[int(rng.integers(len(spots)))]
        prompt = s["input"]["prompt"]
        current = pose_subject(prompt) if s["model"] == "POSE" else prompt
        other = _other_expression(scene, current or "", rng)
        if other is None:
            return None
        s["input"]["prompt"] = (
            f"make the {other} point {pose_direction(prompt) or 'up'}" if s["model"] == "POSE" else other
        )
        return wf
    if kind == "wrong_attribute":
        spots = []
        for s in steps:
            for name, value in s["input"].items():
                if isinstance(value, str) and "[" not in value and value:
                    spots.append((s, name))
                elif name == "ratio" and isinstance(value, (int, float)):
                    spots.append((s, name))
        order = rng.permutation(len(spots)) if spots else []
        for k in order:
            s, name = spots[int(k)]
            value = s["input"][name]
            if name == "ratio":
                s["input"][name] = float(rng.choice([r for r in RESIZE_WORDS if r != value]))
                return wf
            if s["model"] == "ENV":
                s["input"][name] = str(rng.choice([p for p in ENV_PROMPT.values() if p != value]))
                return wf
            swapped = _swap_word(value, rng)
            if swapped is not None:
                s["input"][name] = swapped
                return wf
        return None
    if kind == "missing_step":
        result = wf["pipeline"][-1].get("result")
        last = [s for s in steps if "image" in s["input"] and f"step{s['step']}[image]" in str(result)]
        if not last:
            return None
        wf["pipeline"][-1]["result"] = f"[{last[-1]['input']['image']}]"
        return wf
    raise ValueError(f"unknown perturbation {kind!r}; known: {', '.join(PERTURBATIONS)}")


def _variants(row: dict, scene: Scene, cfg: CriticSamplesConfig, rng) -> list[tuple[str, dict]]:
    if not row["workflow"]:
        return []  # an open instruction: only the Builder's answers are executed
    gt = json.loads(row["workflow"])
    out = [("gt_workflow", gt)]
    for kind in rng.permutation(PERTURBATIONS):
        if len(out) > cfg.variants:
            break
        wf = perturb(gt, scene, str(kind), rng)
        if wf is not None:
            out.append((str(kind), wf))
    return out


def builder_answers(rows: list[dict], cfg: CriticSamplesConfig) -> list[list[str]]:
    """The Builder's answers per row: greedy first, then ``builder_answers - 1`` samples at temperature 1."""
    from ..builder.prompting import builder_user_text
    from ..models.vlm import chat, generate, load_vlm
    from .vlm_sft import resolve_base

    model, processor = load_vlm(resolve_base(cfg.builder))
    messages = [chat(builder_user_text(r["instruction"]), 1) for r in rows]
    images = [[load_image(r["image_path"])] for r in rows]
    runs = [generate(model, processor, messages, images, max_new_tokens=384, batch_size=32)]
    runs += [
        generate(
            model,
            processor,
            messages,
            images,
            max_new_tokens=384,
            do_sample=True,
            temperature=1.0,
            seed=cfg.seed * 1_000 + k,
            batch_size=32,
        )
        for k in range(1, cfg.builder_answers)
    ]
    return [list(answers) for answers in zip(*runs)]


def executed_samples(rows: list[dict], cfg: CriticSamplesConfig, executor: Executor, split: str):
    """(key, images, meta) for every executed variant of every row; failed executions are left out."""
    from ..builder.rewards import try_parse

    answers = builder_answers(rows, cfg) if cfg.builder and cfg.builder_answers > 0 else [[] for _ in rows]
    jobs = []
    for r, own in zip(rows, answers):
        rng = _rng(cfg.seed, _STREAM, r["scene_id"], int(r["id"].rsplit("_", 1)[1]))
        scene = Scene.from_json(load_scene_json(cfg.scenes, r["scene_id"]))
        jobs += [(r, kind, parse_workflow(json.dumps(wf))) for kind, wf in _variants(r, scene, cfg, rng)]
        jobs += [(r, "builder", wf) for wf in map(try_parse, own) if wf is not None]
    for start in range(0, len(jobs), cfg.batch_size):
        chunk = jobs[start : start + cfg.batch_size]
        sources = [load_image(r["image_path"]) for r, *_ in chunk]
        results = executor.run_batch([wf for *_, wf in chunk], sources)
        for k, ((r, kind, _), source, result) in enumerate(zip(chunk, sources, results), start):
            if isinstance(result, Exception):
                log.info("%s/%s: %s", r["id"], kind, result)
                continue
            raw = result.images[0]
            score = score_edit(source, raw, load_target(r["target_path"]))
            yield (
                f"{r['id']}_x{k}",
                {"source": source, "candidate": rgb(raw)[:, :, :3]},
                {
                    "instruction": r["instruction"],
                    "label": int(score.success),
                    "success": bool(score.success),
                    "psnr": round(score.psnr, 3),
                    "kind": kind,
                    "category": r["category"],
                },
            )
        log.info("%s: executed %d/%d workflows", split, min(start + cfg.batch_size, len(jobs)), len(jobs))


def executed_rows(cfg: CriticSamplesConfig, split: str) -> list[dict]:
    """The instructions of ``split`` whose workflows are executed: a seeded draw of GT instructions (their GT,
    perturbed and Builder workflows) and, with a Builder, of open ones (its answers only: the outputs stage 3 asks
    the critic to score)."""
    n, n_open = (
        (cfg.train_instructions, cfg.open_train_instructions)
        if split == "train"
        else (cfg.val_instructions, cfg.open_val_instructions)
    )
    with_gt = [r for r in load_instructions(cfg.instructions, split) if r["workflow"]]
    rows = select_rows(with_gt, n, cfg.seed) if n > 0 else []
    if n_open > 0 and cfg.open_instructions and cfg.builder and cfg.builder_answers > 0:
        rows += select_rows(load_instructions(cfg.open_instructions, split), n_open, cfg.seed)
    return rows


def main(cfg: CriticSamplesConfig) -> dict:
    from ..bricks.models import bind_model_bricks
    from ..bricks.registry import default_registry

    registry = default_registry()
    bind_model_bricks(registry, cfg.models)
    executor = Executor(registry, BrickContext(seed=cfg.seed))
    by_split = {}
    for split in ("train", "val"):
        rows = executed_rows(cfg, split)
        if rows:
            by_split[split] = executed_samples(rows, cfg, executor, split)
    table = write_shard_set(by_split, "critic_executed", cfg.output_dir, cfg.samples_per_shard)
    kinds = table.column("kind").to_pylist()
    metrics = {"samples": table.num_rows, **{f"samples/{k}": kinds.count(k) for k in sorted(set(kinds))}}
    write_metrics(cfg.output_dir, metrics)
    atomic_write_json(Path(cfg.output_dir) / "config.json", asdict(cfg))
    log.info("executed critic samples: %s", metrics)
    return metrics


if __name__ == "__main__":
    from .common import cli

    cli(CriticSamplesConfig, main)
