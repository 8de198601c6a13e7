"""Train the Builder: stage 1 SFT on GT workflows (TRL SFTTrainer); stages 2 and 3 GRPO (TRL GRPOTrainer) with
GT-based rewards, then with the critic's score of the executed edit on open-domain instructions.

    python -m lego_edit.training.builder --config cfg.json      (stage: sft | grpo_gt | grpo_critic)
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..bricks.registry import default_registry
from ..builder.prompting import builder_completion, builder_system_text, builder_user_text, registry_user_text
from ..data.dataset import load_instructions, select_rows
from ..imageio import atomic_write_json
from .common import is_main_process, rank_finished, write_metrics
from .config_sections import BuilderSection, JobSettings
from .grpo_settings import GRPOSettings
from .hf_checkpoints import pickle_free
from .vlm_sft import (
    SFTSettings,
    dataset_cache,
    latest_hf_checkpoint,
    peft_config,
    resolve_base,
    sft,
    training_args,
    training_dataset,
    write_history,
)

log = logging.getLogger(__name__)
STAGES = ("sft", "grpo_gt", "grpo_critic")


@dataclass
class BuilderConfig(BuilderSection, JobSettings):
    """The config's ``builder`` block as its stage's rule passes it (the stage's own settings: ``sft``,
    ``grpo_gt`` or ``grpo_critic``; the others keep their defaults and are not read), and the job's stage, inputs,
    paths, seed and threads."""

    stage: str = field(default="sft", metadata={"help": "sft, grpo_gt or grpo_critic."})
    base: str = field(default="", metadata={"help": "Starting model: the base VLM (sft) or the previous stage."})
    instructions: str = field(
        default="", metadata={"help": "Instruction table (gt for sft/grpo_gt, open for grpo_critic)."}
    )
    gt_instructions: str = field(
        default="",
        metadata={"help": "Stage 3 with grpo_critic.gt_share > 0: the GT instruction table its GT prompts come from."},
    )
    models: str | dict = field(
        default="results",
        metadata={
            "help": "The trained brick models (stages 2 and 3 execute their answers): a run's results folder, or "
            "their folders by name (segmentation, base_vlm, placement, captioning, edit_base, edit_lora: a list)."
        },
    )
    critic: str = field(default="", metadata={"help": "Critic folder (stage 3)."})
    output_dir: str = field(default="", metadata={"help": "Where the stage's model goes."})

    def __post_init__(self):
        if self.stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {self.stage!r}")

    @property
    def grpo(self) -> GRPOSettings:
        """A GRPO stage's settings (``grpo_gt`` or ``grpo_critic``)."""
        if self.stage == "sft":
            raise ValueError("stage sft has no GRPO settings")
        return getattr(self, self.stage)


def _image(path: str) -> Image.Image:
    return Image.open(path).convert("RGB")


def prompt_messages(instruction: str, style: str, registry) -> list[dict]:
    """The conversation the Builder sees (the image part comes first in the user turn)."""
    system = builder_system_text(registry, style)
    text = registry_user_text(instruction) if style == "registry" else builder_user_text(instruction)
    head = [{"role": "system", "content": [{"type": "text", "text": system}]}] if system else []
    return head + [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]


def _guide(row: dict) -> str | None:
    """The GT answer as the Builder is trained to write it (SFT's target, stage 2's guidance), if the row has one."""
    return builder_completion(row["reasoning"] or "", row["workflow"]) if row["workflow"] else None


def sft_rows(rows: list[dict], style: str, registry) -> list[dict]:
    out = []
    for r in rows:
        if not r["workflow"]:
            continue
        system = builder_system_text(registry, style)
        user = registry_user_text(r["instruction"]) if style == "registry" else builder_user_text(r["instruction"])
        prompt = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
        out.append(
            {
                "images": [_image(r["image_path"])],
                "prompt": prompt,
                "completion": [{"role": "assistant", "content": _guide(r)}],
            }
        )
    return out


def streamed_sft_rows(rows: list[dict], style: str) -> Iterator[dict]:
    """``sft_rows`` one instruction at a time (each image opened when its row is written)."""
    registry = default_registry()
    for r in rows:
        yield from sft_rows([r], style, registry)


def run_sft(cfg: BuilderConfig) -> dict:
    rows = load_instructions(cfg.instructions, "train")
    stream = functools.partial(streamed_sft_rows, rows, cfg.prompt_style)
    out = Path(cfg.output_dir)
    model, processor, history = sft(
        cfg.base,
        list(stream()) if cfg.samples_in_memory else stream,
        out,
        cfg.checkpoint_dir or out.parent / f".{out.name}-ckpt",
        cfg.seed,
        cfg.sft,
        "Builder stage 1 (SFT)",
        merge_lora=True,
        threads=cfg.threads,
    )  # stage 2 and evaluation load it
    return {"final_loss": next((r["loss"] for r in reversed(history) if "loss" in r), None), "rows": len(rows)}


def _brick_executor(cfg: BuilderConfig):
    from ..bricks.models import bind_model_bricks
    from ..workflow import BrickContext, Executor

    registry = default_registry()
    bind_model_bricks(registry, cfg.models)
    return Executor(registry, BrickContext(seed=cfg.seed))


def gt_reward_functions(cfg: BuilderConfig) -> list:
    """Stage 2's rewards with a non-zero weight: the GT-workflow terms, and ``execution`` (the answer run with the
    trained bricks, scored against the exact GT target)."""
    from ..builder.rewards import GT_REWARDS, ExecutionReward

    weights = cfg.grpo.reward_weights
    funcs = []
    for name, fn in GT_REWARDS.items():
        if float(weights.get(name, 1.0)) == 0:
            continue

        def wrapped(prompts=None, completions=(), fn=fn, **kw):
            return fn(prompts=prompts, completions=completions, **kw)

        wrapped.__name__ = name  # TRL logs rewards/<__name__>/mean
        funcs.append(wrapped)
    if float(weights.get("execution", 1.0)) != 0:
        funcs.append(
            ExecutionReward(_brick_executor(cfg), seconds=cfg.grpo.execution_seconds, gate=cfg.grpo.execution_gate)
        )
    return funcs


def critic_reward_function(cfg: BuilderConfig):
    from ..builder.rewards import CriticReward
    from ..models.critic import load_critic_dir

    return CriticReward(_brick_executor(cfg), load_critic_dir(cfg.critic), seconds=cfg.grpo.execution_seconds)


def missed_rows(cfg: BuilderConfig, rows: list[dict], registry) -> tuple[list[dict], dict]:
    """The training instructions whose GT workflow the starting model's greedy answer does not match exactly, plus
    a seeded ``solved_share`` of the others. In guided GRPO a group whose samples already match the GT has no
    advantage and no gradient, so the steps go to the instructions the Builder still gets wrong."""
    from ..builder.backends import LocalVLMBackend
    from ..builder.generation import build_workflows
    from ..builder.rewards import exact_match
    from ..workflow import parse_workflow

    backend = LocalVLMBackend(resolve_base(cfg.base), max_new_tokens=cfg.grpo.max_completion_length, batch_size=32)
    answers = build_workflows(
        backend,
        [np.asarray(_image(r["image_path"])) for r in rows],
        [r["instruction"] for r in rows],
        registry,
        cfg.prompt_style,
    )
    solved = [exact_match(a.workflow, parse_workflow(r["workflow"])) for r, a in zip(rows, answers)]
    rng = np.random.default_rng(cfg.seed)
    keep = [r for r, ok in zip(rows, solved) if not ok or rng.random() < cfg.grpo.solved_share]
    info = {"prompt_filter/rows": len(rows), "prompt_filter/solved": int(sum(solved)), "prompt_filter/kept": len(keep)}
    log.info("stage 2 prompt filter: %s", info)
    return keep, info


def grpo_row(r: dict, style: str, registry) -> dict:
    return {
        "prompt": prompt_messages(r["instruction"], style, registry),
        "image": _image(r["image_path"]),
        "instruction": r["instruction"],
        "workflow": r["workflow"],
        "target": r["target_path"],
        "guide": _guide(r),
    }


def streamed_grpo_rows(rows: list[dict], style: str) -> Iterator[dict]:
    registry = default_registry()
    for r in rows:
        yield grpo_row(r, style, registry)


def gt_prompt_rows(cfg: BuilderConfig, open_rows: int) -> list[dict]:
    """Stage 3's GT prompts: a seeded draw of GT training instructions, as many as make ``gt_share`` of the pool,
    stripped of their GT workflow (the critic, not the GT, scores stage 3's answers)."""
    if not cfg.gt_instructions:
        raise ValueError("stage 3 with grpo.gt_share > 0 needs gt_instructions (the GT instruction table)")
    share = cfg.grpo.gt_share
    rows = load_instructions(cfg.gt_instructions, "train")
    picked = select_rows(rows, max(1, round(open_rows * share / (1 - share))), cfg.seed)
    log.info("stage 3: %d open and %d GT prompts (gt_share %.2f)", open_rows, len(picked), share)
    return [{**r, "workflow": None, "reasoning": None} for r in picked]


def run_grpo(cfg: BuilderConfig) -> dict:
    from transformers import set_seed
    from trl import GRPOConfig, GRPOTrainer

    from ..models.vlm import load_vlm

    g = cfg.grpo
    torch.set_num_threads(max(1, cfg.threads))
    set_seed(cfg.seed)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    registry = default_registry()
    if cfg.stage == "grpo_gt":
        rows = [r for r in load_instructions(cfg.instructions, g.prompt_split) if r["workflow"]]
        if not rows:
            raise ValueError(
                f"stage 2: the GT table has no {g.prompt_split!r} instructions"
                + (" (set data.instructions.gt.rl_per_scene above 0)" if g.prompt_split == "rl" else "")
            )
    else:
        rows = load_instructions(cfg.instructions, "train")
    rows = select_rows(rows, g.max_train_rows, cfg.seed)
    if cfg.stage == "grpo_critic" and g.gt_share > 0:
        rows = rows + gt_prompt_rows(cfg, len(rows))
    filtered = {}
    if cfg.stage == "grpo_gt" and g.prompt_filter == "missed":
        rows, filtered = missed_rows(cfg, rows, registry)
    checkpoints = cfg.checkpoint_dir or Path(cfg.output_dir).parent / "ckpt"
    stream = functools.partial(streamed_grpo_rows, rows, cfg.prompt_style)
    data = training_dataset(list(stream()) if cfg.samples_in_memory else stream, dataset_cache(checkpoints))
    rewards = gt_reward_functions(cfg) if cfg.stage == "grpo_gt" else [critic_reward_function(cfg)]
    weights = [float(g.reward_weights.get(getattr(f, "__name__", ""), 1.0)) for f in rewards]
    settings = SFTSettings(
        steps=g.steps,
        batch_size=g.prompts_per_step * g.num_generations // g.grad_accum,
        grad_accum=g.grad_accum,
        lr=g.lr,
        scheduler=g.scheduler,
        warmup_steps=0,
        checkpoint_every=g.checkpoint_every,
        checkpoints_kept=g.checkpoints_kept,
        log_every=g.log_every,
        gradient_checkpointing=g.gradient_checkpointing,
    )
    extra = dict(
        num_generations=g.num_generations,
        max_completion_length=g.max_completion_length,
        temperature=g.temperature,
        beta=g.beta,
        reward_weights=weights,
        use_vllm=g.use_vllm,
        log_completions=False,
        remove_unused_columns=False,
    )
    if g.use_vllm:
        extra["vllm_mode"] = g.vllm_mode
    args = training_args(GRPOConfig, settings, checkpoints, cfg.seed, **extra)
    model, processor = load_vlm(
        resolve_base(cfg.base),
        device="cuda" if torch.cuda.is_available() else "cpu",
        dtype="float32" if not torch.cuda.is_available() else None,
    )
    model.generation_config.do_sample = True  # GRPO samples; the saved model keeps greedy decoding
    trainer_cls = pickle_free(GRPOTrainer)
    if g.guidance and cfg.stage == "grpo_gt":
        from .guided_grpo import guided

        trainer_cls = guided(trainer_cls, negative_credit=g.negative_credit)
    if g.negative_weight != 1.0:
        from .guided_grpo import negatives_weighted

        trainer_cls = negatives_weighted(trainer_cls, g.negative_weight)
    trainer = trainer_cls(
        model=model,
        reward_funcs=rewards,
        args=args,
        train_dataset=data,
        processing_class=processor,
        peft_config=peft_config(g.lora),
    )
    trainer.train(resume_from_checkpoint=latest_hf_checkpoint(args.output_dir))
    shutil.rmtree(dataset_cache(checkpoints), ignore_errors=True)
    if not rank_finished(f"Builder {cfg.stage}", trainer.state.global_step):
        return {}
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    trained = trainer.model
    if g.lora is not None:
        trained = trained.merge_and_unload()  # later stages and evaluation load a plain model
    trained.generation_config.do_sample = False
    from ..models.vlm import save_vlm

    save_vlm(trained, processor, out)
    history = write_history(trainer.state.log_history, out)
    info = {"rows": len(rows), **filtered, **movement(history)}
    for f in rewards:
        if hasattr(f, "stats"):
            info[f"execution/{f.__name__}"] = dict(f.stats)
        if getattr(f, "gate", False):
            info["execution/gated"] = f.gated
    return info


def movement(history: list[dict]) -> dict:
    """Whether a GRPO stage moved: the mean share of groups whose samples all got the same reward (no gradient)
    and the KL to the starting model, at the start and the end."""

    def series(key):
        return [r[key] for r in history if r.get(key) is not None]

    zero, kl = series("frac_reward_zero_std"), series("kl")
    out = {}
    if zero:
        out["frac_reward_zero_std/mean"] = round(float(np.mean(zero)), 4)
    if kl:
        out["kl/first"], out["kl/last"], out["kl/max"] = (round(float(v), 5) for v in (kl[0], kl[-1], max(kl)))
    return out


def recorded_config(cfg: BuilderConfig) -> dict:
    """The stage's config as it trained: the other stages' settings and the base VLM's sizes (``vlm``,
    ``vocab_size``: prepare_base_vlm's) are left out, since the rule does not pass them and they would read as the
    run's values while holding the dataclass defaults."""
    unread = {s for s in STAGES if s != cfg.stage} | {"vlm", "vocab_size"}
    return {k: v for k, v in asdict(cfg).items() if k not in unread}


def main(cfg: BuilderConfig) -> dict:
    info = run_sft(cfg) if cfg.stage == "sft" else run_grpo(cfg)
    if not is_main_process():
        return info
    out = Path(cfg.output_dir)
    metrics = {"stage": cfg.stage, **info}
    write_metrics(out, metrics)
    atomic_write_json(out / "train_config.json", recorded_config(cfg))
    log.info("builder %s: %s", cfg.stage, metrics)
    return metrics


if __name__ == "__main__":
    from .common import cli

    cli(BuilderConfig, main)
