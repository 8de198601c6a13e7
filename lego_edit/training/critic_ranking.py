"""The critic's samples grouped for ranking, and the ranking figures measured on held-out samples.

Shard keys are ``<instruction>_<candidate>``: an instruction's candidates form a group; the pairs of a group (GT
target over wrong edit, or by PSNR to the target) are what training ranks and what ``ranking_accuracy`` and
``executed_agreement`` count. Kept apart from the training loops in ``critic.py``, which re-exports these names.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np


def instruction_candidates(samples: list[dict]) -> list[list[int]]:
    """Sample indices per instruction (shard keys <instruction>_<candidate>), in key order."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(samples):
        groups[s["__key__"].rsplit("_", 1)[0]].append(i)
    return [g for _, g in sorted(groups.items())]


def instruction_groups(samples: list[dict]) -> list[list[int]]:
    """Indices of each instruction's candidates, groups with a GT target and at least one wrong edit only, in key
    order."""
    return [
        g
        for g in instruction_candidates(samples)
        if any(samples[i]["label"] for i in g) and any(not samples[i]["label"] for i in g)
    ]


def quality_pairs(samples: list[dict], group: list[int], margin_db: float) -> list[tuple[int, int]]:
    """(better, worse) sample indices within one instruction's candidates: by PSNR to the GT target where both
    have one (differing by more than ``margin_db``), else by label."""
    pairs = []
    for i in group:
        for j in group:
            a, b = samples[i], samples[j]
            if a.get("psnr") is not None and b.get("psnr") is not None:
                if a["psnr"] - b["psnr"] > margin_db:
                    pairs.append((i, j))
            elif a["label"] and not b["label"]:
                pairs.append((i, j))
    return pairs


def ranking_groups(samples: list[dict], margin_db: float) -> list[tuple[list[int], list[tuple[int, int]]]]:
    """Each instruction's candidates (shard keys <instruction>_<candidate>) with their ranking pairs; groups
    without a pair are left out."""
    out = []
    for g in instruction_candidates(samples):
        pairs = quality_pairs(samples, g, margin_db)
        if pairs:
            out.append((g, pairs))
    return out


def scene_cross_targets(
    samples: list[dict], groups: list[tuple[list[int], list[tuple[int, int]]]], planes
) -> list[list[int]]:
    """Per ranking group: the GT-target samples of the other instructions of its scene (shard keys
    <domain>_<scene>_<instruction>_<candidate>; the gt and open instructions of a scene share its image) whose image
    differs from the group's own target."""

    def target(g):
        return next((i for i in g if samples[i]["label"]), None)

    def scene(g):
        return samples[g[0]]["__key__"].rsplit("_", 2)[0].split("_", 1)[-1]

    by_scene: dict[str, list[int]] = defaultdict(list)
    for g, _ in groups:
        t = target(g)
        if t is not None:
            by_scene[scene(g)].append(t)
    out = []
    for g, _ in groups:
        t = target(g)
        out.append(
            []
            if t is None
            else [j for j in by_scene[scene(g)] if j != t and not np.array_equal(planes[j][3:6], planes[t][3:6])]
        )
    return out


def ranking_accuracy(critic, samples: list[dict], limit: int) -> dict:
    """Share of (GT target, wrong edit) pairs of one instruction where the target scores higher."""
    chosen = [[samples[i] for i in g] for g in instruction_groups(samples)[: limit or None]]
    flat = [s for g in chosen for s in g]
    scores = critic.score([s["instruction"] for s in flat], [s["source"] for s in flat], [s["candidate"] for s in flat])
    for s, sc in zip(flat, scores):
        if sc.score is not None:  # an endpoint critic may leave a sample unscored
            s["p_yes"] = sc.score
    chosen = [[s for s in g if "p_yes" in s] for g in chosen]
    flat = [s for s in flat if "p_yes" in s]
    wins, pairs, by_kind = 0, 0, defaultdict(list)
    for g in chosen:
        pos = [s["p_yes"] for s in g if s["label"]]
        if not pos:
            continue
        for neg in (s for s in g if not s["label"]):
            ok = min(pos) > neg["p_yes"]
            wins += ok
            pairs += 1
            by_kind[neg["kind"]].append(ok)
    return {
        "ranking_accuracy": round(wins / max(1, pairs), 4),
        "pairs": pairs,
        "coverage": len(flat),
        **{f"ranking_accuracy/{k}": round(float(np.mean(v)), 4) for k, v in sorted(by_kind.items())},
    }


def executed_agreement(critic, samples: list[dict], margin_db: float = 1.0) -> dict:
    """On the trained bricks' held-out outputs: the share of pairs of one instruction's candidates whose PSNR to
    the GT target differs by more than ``margin_db`` that the critic orders the same way (ties disagree)."""
    if not samples:
        return {}
    from ..evaluation.metrics import ordering_agreement

    scores = critic.score(
        [s["instruction"] for s in samples], [s["source"] for s in samples], [s["candidate"] for s in samples]
    )
    agree = pairs = 0
    for group in instruction_candidates(samples):
        scored = [i for i in group if scores[i].score is not None]
        a, n = ordering_agreement([samples[i]["psnr"] for i in scored], [scores[i].score for i in scored], margin_db)
        agree, pairs = agree + a, pairs + n
    return {"executed_agreement": round(agree / max(1, pairs), 4), "executed_pairs": pairs}
