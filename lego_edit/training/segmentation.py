"""Train the segmentation bricks (RES, SOS, MASK-SEG) on the segmentation shards.

python -m lego_edit.training.segmentation --config cfg.json
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..data.shard_index import ShardSamples
from ..imageio import atomic_write_json
from ..models.segmentation import TASKS, SegmentationModel, candidate_regions, task_text
from .common import rank_finished, write_metrics
from .config_sections import JobSettings, SegmentationSection
from .loop import train

log = logging.getLogger(__name__)


@dataclass
class SegmentationTrainConfig(SegmentationSection, JobSettings):
    """The config's ``bricks.segmentation`` block as it stands, and the job's paths, seed and threads."""

    shards: str = field(default="", metadata={"help": "Segmentation shard folder."})
    output_dir: str = field(default="", metadata={"help": "Where the trained model goes."})
    eval_split: str = field(default="test", metadata={"help": "Held-out split for the IoU figures."})
    samples_in_memory: bool = field(
        default=True,
        metadata={
            "help": "Keep decoded training samples in memory (false: each batch reads its samples from the shards, "
            "so a paper-scale split is never held)."
        },
    )

    def __post_init__(self):
        if not self.shards or not self.output_dir:
            raise ValueError("shards and output_dir are required")


def load_arrays(samples: list[dict], size: int) -> dict:
    """Stack decoded shard samples into uint8 tensors at the working size."""

    def to_t(a, channels):
        t = torch.from_numpy(np.ascontiguousarray(a)).reshape(a.shape[0], a.shape[1], -1).permute(2, 0, 1)[None]
        t = t[:, :channels].float()
        return F.interpolate(t, size=(size, size), mode="nearest").to(torch.uint8)[0]

    images = torch.stack([to_t(s["image"], 3) for s in samples])
    masks = torch.stack([to_t((s["mask"] > 127).astype(np.uint8), 1) for s in samples])
    hints = torch.stack(
        [
            to_t((s["hint"] > 127).astype(np.uint8), 1)
            if "hint" in s
            else torch.zeros(1, size, size, dtype=torch.uint8)
            for s in samples
        ]
    )
    has_aux = all("attributes" in s for s in samples)
    attributes = torch.stack([to_t(s["attributes"], 4) for s in samples]) if has_aux else None
    return {
        "images": images,
        "masks": masks,
        "hints": hints,
        "attributes": attributes,
        "texts": [task_text(s["task"], s.get("text", "")) for s in samples],
        "tasks": [s["task"] for s in samples],
    }


def res_candidates(data: dict, limit: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The RES selector's training candidates: per sample a label map (0: no object, k: candidate k) of the
    scene's objects (connected regions of the attribute maps' object pixels, as SOS would segment them) and
    the index of the candidate the expression names (-1: not a RES sample, or its object is no candidate).
    None when the shards carry no attribute maps (then there is nothing to compare objects with)."""
    if data["attributes"] is None:
        return None
    labels = torch.zeros(data["masks"][:, 0].shape, dtype=torch.uint8)
    target = torch.full((len(labels),), -1, dtype=torch.long)
    for i, task in enumerate(data["tasks"]):
        if task != "RES":
            continue
        regions = candidate_regions(data["attributes"][i, 0].numpy() > 0, limit)
        if not len(regions):
            continue
        for k, r in enumerate(regions):
            labels[i][torch.from_numpy(r)] = k + 1
        overlap = (torch.from_numpy(regions) & (data["masks"][i, 0] > 0)).sum((1, 2))
        if overlap.max() > 0:
            target[i] = int(overlap.argmax())
    return labels, target


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    bce = F.binary_cross_entropy_with_logits(logits, target)
    p = torch.sigmoid(logits)
    inter = (p * target).sum((1, 2, 3))
    dice = 1 - (2 * inter + 1) / (p.sum((1, 2, 3)) + target.sum((1, 2, 3)) + 1)
    return bce + dice.mean()


def iou(pred: np.ndarray, target: np.ndarray) -> float:
    p, t = pred > 0, target > 0
    union = (p | t).sum()
    return 1.0 if union == 0 else float((p & t).sum() / union)


def evaluate(model: SegmentationModel, samples: Sequence[dict], chunk: int = 256) -> dict:
    """IoU and hit rate per task over ``samples``, decoded ``chunk`` at a time (a multiple of predict's batch of 32,
    so the batches, and the masks, are those of one call over the whole split)."""
    found: list[tuple[str, float]] = []
    for start in range(0, len(samples), chunk):
        part = samples[start : start + chunk]
        preds = model.predict(
            [s["image"] for s in part],
            [s["task"] for s in part],
            [s.get("text", "") for s in part],
            [s.get("hint") for s in part],
        )
        found += [(s["task"], iou(p, s["mask"])) for p, s in zip(preds, part)]
    out = {}
    for task in TASKS:
        scores = [v for t, v in found if t == task]
        if scores:
            out[f"iou_{task}"] = round(float(np.mean(scores)), 4)
            # the share that finds the object at all (a referring expression resolved to the wrong object scores
            # near 0, and sends the whole workflow's edit to the wrong place)
            out[f"hit_{task}"] = round(float(np.mean([v >= 0.5 for v in scores])), 4)
            out[f"n_{task}"] = len(scores)
    return out


def main(cfg: SegmentationTrainConfig) -> dict:
    torch.manual_seed(cfg.seed)
    samples = ShardSamples(cfg.shards, "train")
    n = len(samples)
    if not n:
        raise ValueError(f"{cfg.shards} has no training samples")
    metas = [samples.meta(i) for i in range(n)]
    texts = [task_text(m["task"], m.get("text", "")) for m in metas]
    model = SegmentationModel.build(cfg.model, texts)
    ids = model.prompt_encoder.tokenize(texts)
    log.info("segmentation: %d training samples, %d parameters", n, sum(p.numel() for p in model.parameters()))

    # attribute maps on every sample, or no auxiliary heads and no selector (its candidates come from them)
    with_attributes = all("attributes" in m["__shapes__"] for m in metas)
    # One sample's tensors and RES candidates, computed once and kept when the split is held in memory, else
    # computed again whenever a batch draws the sample (a paper-scale split is never held).
    keep = functools.lru_cache(maxsize=None if cfg.samples_in_memory else 0)
    k_max = cfg.model.max_candidates
    sample_arrays = keep(lambda i: load_arrays([samples[i]], cfg.model.image_size))
    sample_candidates = keep(lambda i: res_candidates(sample_arrays(i), k_max))

    def arrays(idx: torch.Tensor) -> dict:
        parts = [sample_arrays(int(i)) for i in idx]
        out = {k: torch.cat([p[k] for p in parts]) for k in ("images", "masks", "hints")}
        out["attributes"] = torch.cat([p["attributes"] for p in parts]) if with_attributes else None
        return out

    def candidates(idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        labels, target = zip(*(sample_candidates(int(i)) for i in idx))
        return torch.cat(labels), torch.cat(target)

    use_aux = with_attributes and model.aux_head is not None
    res_rows = None
    if model.selector is not None:
        res = [i for i, m in enumerate(metas) if m["task"] == "RES"] if with_attributes else []
        res_rows = torch.tensor([i for i in res if sample_candidates(i)[1][0] >= 0], dtype=torch.long)
    if model.selector is not None and not len(res_rows):
        # An untrained selector would pick objects at random: RES thresholds its own map instead.
        log.warning(
            "segmentation: no RES samples with object maps in %s; RES is trained without the selector", cfg.shards
        )
        res_rows, model.selector = None, None
        model.cfg.selector_layers = 0

    def loss_fn(step, gen, rank, world):
        idx = torch.randint(n, (max(1, cfg.train.batch_size // world),), generator=gen)
        dev = next(model.parameters()).device
        batch = arrays(idx)
        x = batch["images"].float().to(dev) / 127.5 - 1
        enc = model.encode(x, batch["hints"].float().to(dev), ids[idx].to(dev))
        mask_loss = segmentation_loss(enc["logits"][:, None], batch["masks"].float().to(dev))
        parts = {"mask_loss": mask_loss}
        loss = mask_loss
        if use_aux:
            targets = batch["attributes"].long().to(dev)
            # Object pixels only: over all pixels the background dominates and the heads learn nothing else.
            targets = targets.masked_fill(targets[:, :1] == 0, -100)
            aux = torch.split(model.aux_head(enc["pixels"]), list(cfg.model.aux_classes), dim=1)
            parts["aux_loss"] = sum(
                F.cross_entropy(a, targets[:, k], ignore_index=-100) for k, a in enumerate(aux)
            ) / len(aux)
            loss = loss + cfg.model.aux_weight * parts["aux_loss"]
        if res_rows is not None:
            pick = res_rows[
                torch.randint(len(res_rows), (max(1, cfg.model.selector_batch_size // world),), generator=gen)
            ]
            labels, target = candidates(pick)
            cand = (labels.long()[:, None] == torch.arange(1, k_max + 1)[None, :, None, None]).float()
            images = arrays(pick)["images"]
            logits = model.select(images.float().to(dev) / 127.5 - 1, ids[pick].to(dev), cand.to(dev))
            parts["selector_loss"] = F.cross_entropy(logits, target.to(dev))
            loss = loss + cfg.model.selector_weight * parts["selector_loss"]
        return {"loss": loss, **parts}

    out = Path(cfg.output_dir)
    history = train(
        model,
        loss_fn,
        cfg.train,
        cfg.seed,
        cfg.checkpoint_dir or out.parent / f".{out.name}-ckpt",
        out / "metrics.jsonl",
        desc="segmentation",
        threads=cfg.threads,
    )
    if not rank_finished("segmentation", cfg.train.steps):
        return {}
    model.save_pretrained(out)
    held_out = ShardSamples(cfg.shards, cfg.eval_split)  # decoded a chunk at a time
    metrics = {
        "samples": n,
        "steps": cfg.train.steps,
        "final_loss": history[-1]["loss"] if history else None,
        "train_seconds": history[-1]["seconds"] if history else None,
        "eval_split": cfg.eval_split,
        **evaluate(model.eval(), held_out),
    }
    write_metrics(out, metrics)
    atomic_write_json(out / "train_config.json", asdict(cfg))
    log.info("segmentation metrics: %s", metrics)
    return metrics


if __name__ == "__main__":
    from .common import cli

    cli(SegmentationTrainConfig, main)
