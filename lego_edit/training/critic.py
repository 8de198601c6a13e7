"""Train the local critic and report how often it ranks the GT target above a wrong edit of the same
instruction on held-out pairs, and how often it orders the trained bricks' own held-out outputs as their PSNR to
the GT target does.

Two architectures (``architecture``):
  * ``film`` (default): a small CNN over the images, FiLM-conditioned on the instruction's words
    (``models.film_critic``). It learns from the clean critic shards and, when given, from the trained bricks'
    executed outputs of GT and perturbed workflows (``executed``): within an instruction, every pair of
    candidates whose PSNR to the GT target differs by more than ``margin_db`` is a Bradley-Terry pair, and each
    candidate's edit success (the evaluation's definition) is a cross-entropy target.
  * ``vlm``: a VLM of the Builder's architecture fine-tuned to answer yes/no to "is the second image the first one
    edited as instructed?" (near chance beyond "nothing changed" at the tiny size), with one of two objectives
    (``objective``):
  * ``pairwise`` (default): on the verdict token only. Each batch holds whole groups (an instruction's GT
    target and its wrong edits); the loss is a Bradley-Terry term per (target, wrong edit) pair on the
    yes-minus-no logit plus a yes/no cross-entropy, as reward models for image editing are trained. The
    candidates of a pair share their text, so the instruction alone cannot lower the pairwise term: only
    what the images show can. On the shapes world it ranks as well as SFT (both near chance beyond "nothing
    changed" for a Builder-sized VLM) in half the time.
  * ``sft``: TRL SFT on the answer "yes|no. The edit: <what it does>".

    python -m lego_edit.training.critic --config cfg.json
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from ..bricks.vlm_prompts import CRITIC_PROMPT, critic_answer, critic_images
from ..data.shard_index import ConcatSamples, ShardSamples, sample_meta
from ..data.shards import load_samples
from ..imageio import atomic_write_json
from ..models.critic import CRITIC_SPEC, FilmCriticScorer, LocalCritic, load_critic_dir
from ..models.vlm import to_pil
from .common import is_main_process, process_index, rank_finished, write_metrics
from .config_sections import CriticSection, JobSettings
from .critic_ranking import (  # noqa: F401 - also re-exported: this module was their import path
    executed_agreement,
    instruction_candidates,
    instruction_groups,
    quality_pairs,
    ranking_accuracy,
    ranking_groups,
    scene_cross_targets,
)
from .vlm_sft import SFTSettings, resolve_base, sft

log = logging.getLogger(__name__)


@dataclass
class CriticTrainConfig(CriticSection, JobSettings):
    """The config's ``bricks.critic`` block as it stands (its ``executed`` settings are the critic samples' job),
    and the job's paths, seed and threads."""

    base: str = field(default="", metadata={"help": "Starting VLM (architecture vlm: the untrained base)."})
    shards: str = field(default="", metadata={"help": "The critic shard folder (clean renders and wrong edits)."})
    executed_shards: str = field(
        default="",
        metadata={
            "help": "Shards of the trained bricks' executed outputs (architecture film; empty: clean renders only)."
        },
    )
    output_dir: str = field(default="", metadata={"help": "Where the critic goes."})
    eval_split: str = field(default="test", metadata={"help": "Held-out split for the ranking figures."})
    samples_in_memory: bool = field(
        default=True,
        metadata={
            "help": "Keep the decoded training samples in memory (false, architecture film: each sample is read "
            "from the shards once, into a memory-mapped file of the critic's image planes beside the checkpoints)."
        },
    )

    def __post_init__(self):
        if self.members < 1:
            raise ValueError(f"critic members must be at least 1, got {self.members}")


def rows(samples: list[dict]) -> list[dict]:
    return [
        {
            "images": [to_pil(im) for im in critic_images(s["source"], s["candidate"])],
            "prompt": [{"role": "user", "content": CRITIC_PROMPT.format(instruction=s["instruction"])}],
            "completion": [{"role": "assistant", "content": critic_answer(bool(s["label"]), s.get("shows"))}],
        }
        for s in samples
    ]


def verdict_margins(model, processor, samples: list[dict]):
    """The yes-minus-no logit at the first answer position, per sample (with gradients)."""
    from ..bricks.vlm_prompts import CRITIC_CHOICES
    from ..models.critic import critic_messages
    from ..models.vlm import _tokenizer, choice_token_ids, next_token_logits

    yes, no = choice_token_ids(_tokenizer(processor), CRITIC_CHOICES)
    logits = next_token_logits(
        model,
        processor,
        [critic_messages(s["instruction"]) for s in samples],
        [critic_images(s["source"], s["candidate"]) for s in samples],
    )
    return logits[:, yes] - logits[:, no]


def pairwise_loss(margins, labels, groups: list[list[int]]) -> dict:
    """Bradley-Terry over every (target, wrong edit) pair of a group + yes/no cross-entropy on every sample."""
    import torch
    import torch.nn.functional as F

    pos, neg = (
        torch.tensor(ix, device=margins.device)
        for ix in zip(*[(p, n) for g in groups for p in g if labels[p] for n in g if not labels[n]])
    )
    gap = margins[pos] - margins[neg]
    pair = F.softplus(-gap).mean()
    bce = F.binary_cross_entropy_with_logits(margins, labels.float())
    wins = (gap > 0).float().mean()
    return {"loss": pair + bce, "pair_loss": pair.detach(), "bce": bce.detach(), "pair_accuracy": wins}


def loop_config(s: SFTSettings):
    """The hand-written loop's settings from the critic's ``train`` section (both critic architectures use it)."""
    from .loop import LoopConfig

    return LoopConfig(
        steps=s.steps,
        batch_size=s.batch_size,
        lr=s.lr,
        warmup_steps=s.warmup_steps,
        weight_decay=s.weight_decay,
        checkpoint_every=s.checkpoint_every,
        checkpoints_kept=s.checkpoints_kept,
        log_every=s.log_every,
    )


@dataclass
class FilmData:
    """What the FiLM critic trains on, built once from the samples (no randomness): an ensemble's members share it."""

    meta: list[dict]  # each sample's fields without its images
    groups: list
    vocab: list[str]
    planes: np.ndarray  # uint8 (N, 12, S, S) image planes of every candidate, in memory or memory-mapped
    grow: np.ndarray  # float32 (N, 2): the canvas growth of every candidate
    success: object
    cross: list


def film_data(cfg: CriticTrainConfig, samples, planes_file: str | Path | None = None) -> FilmData:
    """``samples``: decoded samples (a list) or a ``ShardSamples`` / ``ConcatSamples``, read one at a time. With
    ``planes_file`` the planes go to a memory-mapped .npy file there, so that the split is never held; the values,
    and the critic trained on them, are the same either way."""
    import torch

    from ..models.film_critic import build_vocab, critic_planes

    meta = [sample_meta(samples, i) for i in range(len(samples))]
    groups = ranking_groups(meta, cfg.margin_db)
    if not groups:
        raise ValueError(f"{cfg.shards}: no instruction has two candidates of different quality")
    shape = (len(meta), 12, cfg.film.image_size, cfg.film.image_size)
    if planes_file is None:
        planes = np.empty(shape, np.uint8)
    else:
        Path(planes_file).parent.mkdir(parents=True, exist_ok=True)
        planes = np.lib.format.open_memmap(planes_file, mode="w+", dtype=np.uint8, shape=shape)
    grow = np.empty((len(meta), 2), np.float32)
    for i in range(len(meta)):
        x = samples[i]
        planes[i], grow[i] = critic_planes(x["source"], x["candidate"], cfg.film.image_size)
    if planes_file is not None:
        planes.flush()
    return FilmData(
        meta=meta,
        groups=groups,
        vocab=build_vocab([x["instruction"] for x in meta]),
        planes=planes,
        grow=grow,
        success=torch.tensor([float(x.get("success", x["label"])) for x in meta]),
        cross=scene_cross_targets(meta, groups, planes) if cfg.cross_negatives else [[] for _ in groups],
    )


@contextmanager
def film_training_data(cfg: CriticTrainConfig, samples, checkpoint_dir: Path | str):
    """``film_data`` for a training job: a job that does not hold its samples keeps the planes beside its
    checkpoints, one file per process, removed when the block ends."""
    planes_file = None if cfg.samples_in_memory else Path(checkpoint_dir) / f"film-planes-rank{process_index()}.npy"
    try:
        yield film_data(cfg, samples, planes_file)
    finally:
        if planes_file is not None:
            planes_file.unlink(missing_ok=True)


def train_film(cfg: CriticTrainConfig, samples, out: Path, checkpoint_dir: Path | str, data: FilmData | None = None):
    """Train the FiLM CNN critic (see the module docstring) on ``data`` (built from ``samples``, as ``film_data``
    reads them, when not given); resumable like the UNet bricks."""
    import torch
    import torch.nn.functional as F

    from ..models.film_critic import FilmCritic, planes_to_features
    from .loop import train

    if data is None:
        with film_training_data(cfg, samples, checkpoint_dir) as data:
            return train_film(cfg, samples, out, checkpoint_dir, data)
    s = cfg.train
    meta, groups, planes, grow, success, cross = (
        data.meta,
        data.groups,
        data.planes,
        data.grow,
        data.success,
        data.cross,
    )
    torch.manual_seed(cfg.seed)  # the initial weights follow the run's seed (and differ between ensemble members)
    model = FilmCritic(cfg.film, data.vocab)
    ids = model.encode_words([x["instruction"] for x in meta])
    mean_size = float(np.mean([len(g) + min(cfg.cross_negatives, len(c)) for (g, _), c in zip(groups, cross)]))
    per_step = max(1, round(s.batch_size / mean_size))  # whole groups: batch_size counts candidates
    loop = loop_config(s)
    log.info(
        "film critic: %d samples, %d groups, %d per step, %d parameters",
        len(meta),
        len(groups),
        per_step,
        sum(p.numel() for p in model.parameters()),
    )

    def loss_fn(step, gen, rank, world):
        picked = torch.randperm(len(groups), generator=gen)[rank * per_step : (rank + 1) * per_step].tolist()
        rows = [i for gi in picked for i in groups[gi][0]]
        where = {i: k for k, i in enumerate(rows)}
        better, worse = map(list, zip(*[(where[a], where[b]) for gi in picked for a, b in groups[gi][1]]))
        texts, targets = list(rows), success[rows].tolist()
        for gi in picked:  # another instruction's target, read with this instruction's words: a wrong edit
            own = next((i for i in groups[gi][0] if meta[i]["label"]), None)
            for c in torch.randperm(len(cross[gi]), generator=gen)[: cfg.cross_negatives].tolist():
                better.append(where[own])
                worse.append(len(rows))
                rows.append(cross[gi][c])
                texts.append(own)
                targets.append(0.0)
        dev = model.device
        features = planes_to_features(torch.from_numpy(planes[rows]), torch.from_numpy(grow[rows]))
        logits = model(features.to(dev), ids[texts].to(dev))
        gap = logits[better] - logits[worse]
        pair = F.softplus(-gap).mean()
        bce = F.binary_cross_entropy_with_logits(logits, torch.tensor(targets, device=dev))
        return {
            "loss": pair + bce,
            "pair_loss": pair.detach(),
            "bce": bce.detach(),
            "pair_accuracy": (gap > 0).float().mean(),
        }

    history = train(
        model, loss_fn, loop, cfg.seed, checkpoint_dir, out / "metrics.jsonl", desc="critic", threads=cfg.threads
    )
    if not rank_finished("critic", loop.steps):
        return model.eval(), history
    model.save_pretrained(out)
    return model.eval(), history


def member_seed(seed: int, member: int) -> int:
    """Member 0 keeps the run's seed (one member is the single critic, bit for bit); the others draw apart."""
    return int(seed) + 7919 * int(member)


def train_film_members(cfg: CriticTrainConfig, samples: list[dict], out: Path, checkpoint_dir: Path | str):
    """``cfg.members`` FiLM critics, one after another, each resumable: one saves to ``out``, an ensemble to
    ``out/member-<k>`` (``film_critic_members`` finds them). Returns the trained models and member 0's history."""
    from ..layout import MEMBER_PREFIX

    if cfg.members == 1:
        model, history = train_film(cfg, samples, out, checkpoint_dir)
        return [model], history
    models, histories = [], []
    with film_training_data(cfg, samples, checkpoint_dir) as data:
        for k in range(cfg.members):
            log.info("critic ensemble: member %d of %d", k + 1, cfg.members)
            member = replace(cfg, seed=member_seed(cfg.seed, k))
            name = f"{MEMBER_PREFIX}{k}"
            model, history = train_film(member, samples, out / name, Path(checkpoint_dir) / name, data)
            models.append(model)
            histories.append(history)
    return models, histories[0]


def train_pairwise(cfg: CriticTrainConfig, samples: list[dict], out: Path, checkpoint_dir: Path | str):
    """Fine-tune the whole VLM on the verdict token (see the module docstring); resumable like the UNet bricks."""
    import torch

    from ..models.vlm import load_vlm, save_vlm
    from .loop import train

    s = cfg.train
    if s.lora is not None:
        raise ValueError(
            "the pairwise critic objective fine-tunes the whole VLM; set train.lora to null (or use objective: sft)"
        )
    groups = instruction_groups(samples)
    if not groups:
        raise ValueError(f"{cfg.shards}: no instruction has both a GT target and a wrong edit")
    per_step = max(1, s.batch_size // max(len(g) for g in groups))  # whole groups: batch_size is in candidates
    loop = loop_config(s)
    model, processor = load_vlm(
        resolve_base(cfg.base),
        device="cuda" if torch.cuda.is_available() else "cpu",
        dtype="float32" if not torch.cuda.is_available() else None,
    )
    model.train()

    def loss_fn(step, gen, rank, world):
        picked = torch.randperm(len(groups), generator=gen)[rank * per_step : (rank + 1) * per_step].tolist()
        rows, local = [], []
        for gi in picked:
            local.append(list(range(len(rows), len(rows) + len(groups[gi]))))
            rows.extend(samples[i] for i in groups[gi])
        margins = verdict_margins(model, processor, rows)
        labels = torch.tensor([bool(r["label"]) for r in rows], device=margins.device)
        return pairwise_loss(margins, labels, local)

    history = train(
        model, loss_fn, loop, cfg.seed, checkpoint_dir, out / "metrics.jsonl", desc="critic", threads=cfg.threads
    )
    if not rank_finished("critic", loop.steps):
        return model.eval(), processor, history
    save_vlm(model, processor, out)
    return model.eval(), processor, history


def main(cfg: CriticTrainConfig) -> dict:
    out = Path(cfg.output_dir)
    if cfg.backend == "openai":  # nothing to train: record the endpoint; the figure is measured through it
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / CRITIC_SPEC, {"backend": "openai", **asdict(cfg.openai)})
        critic = load_critic_dir(out)
        held_out = load_samples(cfg.shards, cfg.eval_split)
        metrics = {
            "backend": "openai",
            "model": cfg.openai.model,
            **ranking_accuracy(critic, held_out, cfg.eval_instructions),
        }
        write_metrics(out, metrics)
        return metrics
    # The FiLM critic reads its samples one at a time when they are not held (film_data); the VLM critic holds them.
    stream = cfg.architecture == "film" and not cfg.samples_in_memory
    read = ShardSamples if stream else load_samples
    train_samples = read(cfg.shards, "train")
    if not len(train_samples):
        raise ValueError(f"{cfg.shards} has no training samples")
    checkpoints = cfg.checkpoint_dir or out.parent / f".{out.name}-ckpt"
    held_out = load_samples(cfg.shards, cfg.eval_split)
    if cfg.architecture == "film":
        executed = read(cfg.executed_shards, "train") if cfg.executed_shards else []
        models, history = train_film_members(cfg, ConcatSamples([train_samples, executed]), out, checkpoints)
        if not is_main_process():
            return {}
        critic = FilmCriticScorer(model=models)
        metrics = {
            "architecture": "film",
            "members": len(models),
            "samples": len(train_samples),
            "executed_samples": len(executed),
            "steps": cfg.train.steps,
            "final_loss": history[-1]["loss"] if history else None,
            "eval_split": cfg.eval_split,
            **ranking_accuracy(critic, held_out, cfg.eval_instructions),
        }
        if cfg.executed_shards:
            metrics.update(executed_agreement(critic, load_samples(cfg.executed_shards, "val"), cfg.margin_db))
        write_metrics(out, metrics)
        atomic_write_json(out / "train_config.json", asdict(cfg))
        log.info("critic metrics: %s", metrics)
        return metrics
    if cfg.architecture != "vlm":
        raise ValueError(f"unknown critic architecture {cfg.architecture!r} (use film or vlm)")
    if cfg.objective == "pairwise":
        model, processor, history = train_pairwise(cfg, train_samples, out, checkpoints)
    elif cfg.objective == "sft":
        model, processor, history = sft(
            cfg.base, rows(train_samples), out, checkpoints, cfg.seed, cfg.train, "critic", threads=cfg.threads
        )
    else:
        raise ValueError(f"unknown critic objective {cfg.objective!r} (use pairwise or sft)")
    if not is_main_process():
        return {}
    metrics = {
        "samples": len(train_samples),
        "steps": cfg.train.steps,
        "objective": cfg.objective,
        "final_loss": next((r["loss"] for r in reversed(history) if "loss" in r), None),
        "eval_split": cfg.eval_split,
        **ranking_accuracy(LocalCritic(model=(model, processor)), held_out, cfg.eval_instructions),
    }
    write_metrics(out, metrics)
    atomic_write_json(out / "train_config.json", asdict(cfg))
    log.info("critic metrics: %s", metrics)
    return metrics


if __name__ == "__main__":
    from .common import cli

    cli(CriticTrainConfig, main)
