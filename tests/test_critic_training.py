"""The local critic's pairwise objective (lego_edit.training.critic): groups, loss, and a tiny VLM that learns
to rank the edit an instruction asks for above wrong ones by looking at them (CPU, seconds).

Only one instruction is used: a Builder-sized VLM learns an image-only decision in tens of steps, but tying a
word of the instruction to what the image shows takes it hundreds (measured: 0.83 of the pairs after 300 steps
with three colour words), which is why the shapes-world critic stays far from its ranking target."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from openai_server import TINY, solid

from lego_edit.bricks.vlm_prompts import CRITIC_PROMPT
from lego_edit.models import vlm
from lego_edit.models.critic import LocalCritic
from lego_edit.models.tokenizer import train_tokenizer
from lego_edit.training.critic import (
    CriticTrainConfig,
    instruction_groups,
    pairwise_loss,
    ranking_accuracy,
    train_pairwise,
)
from lego_edit.training.vlm_sft import SFTSettings

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220)}


def colour_samples(n_sources: int = 4, colours=tuple(COLOURS)) -> list[dict]:
    """Per grey source and colour: 'make it <colour>' with the right fill (label 1), the two other fills and the
    untouched source (label 0). Only the pixels tell the right candidate from the wrong ones."""
    out = []
    for i in range(n_sources):
        source = solid((100 + 10 * i,) * 3)
        for name in colours:
            rgb = COLOURS[name]
            key = f"s{i}_{name}"
            cands = (
                [(solid(rgb), 1, "target")]
                + [(solid(o), 0, "same_category") for k, o in COLOURS.items() if k != name]
                + [(source, 0, "no_edit")]
            )
            out += [
                {
                    "__key__": f"{key}_{j}",
                    "instruction": f"make it {name}",
                    "source": source,
                    "candidate": c,
                    "label": lab,
                    "kind": kind,
                }
                for j, (c, lab, kind) in enumerate(cands)
            ]
    return out


def test_instruction_groups_keep_groups_with_both_labels():
    s = colour_samples(1)
    s.append({"__key__": "lonely_0", "label": 1})  # a target without a wrong edit teaches no ranking
    groups = instruction_groups(s)
    assert len(groups) == 3 and all(len(g) == 4 for g in groups)
    assert all(sum(s[i]["label"] for i in g) == 1 for g in groups)


def test_pairwise_loss_falls_as_the_target_pulls_ahead():
    labels = torch.tensor([True, False, False, True, False])
    groups = [[0, 1, 2], [3, 4]]
    tied = pairwise_loss(torch.zeros(5), labels, groups)
    ahead = pairwise_loss(torch.tensor([3.0, -3.0, -3.0, 3.0, -3.0]), labels, groups)
    behind = pairwise_loss(torch.tensor([-3.0, 3.0, 3.0, -3.0, 3.0]), labels, groups)
    assert ahead["loss"] < tied["loss"] < behind["loss"]
    assert tied["pair_loss"] == pytest.approx(np.log(2))
    assert ahead["pair_accuracy"] == 1.0 and behind["pair_accuracy"] == 0.0


def test_pairwise_critic_learns_to_rank_by_the_pixels(tmp_path):
    texts = [CRITIC_PROMPT.format(instruction=f"make it {c}") for c in COLOURS] + ["yes", "no"]
    tok = train_tokenizer(texts, vocab_size=400, min_frequency=1)
    model, processor = vlm.build_tiny_vlm(TINY, tok)
    vlm.save_vlm(model, processor, tmp_path / "base")
    samples = colour_samples(colours=("blue",))
    cfg = CriticTrainConfig(
        base=str(tmp_path / "base"),
        output_dir=str(tmp_path / "critic"),
        checkpoint_dir=str(tmp_path / "ckpt"),
        seed=0,
        cross_negatives=0,
        train=SFTSettings(steps=40, batch_size=8, lr=3e-3, warmup_steps=2, log_every=10, checkpoint_every=20),
    )
    before = ranking_accuracy(LocalCritic(model=(model, processor)), [dict(s) for s in samples], 100)
    trained, proc, history = train_pairwise(cfg, samples, tmp_path / "critic", tmp_path / "ckpt")
    after = ranking_accuracy(LocalCritic(model=(trained, proc)), [dict(s) for s in samples], 100)
    assert before["ranking_accuracy/same_category"] < 1.0 and after["ranking_accuracy/same_category"] == 1.0, (
        before,
        after,
        history[-1],
    )
    reloaded = LocalCritic(str(tmp_path / "critic"), device="cpu")
    s = samples[:4]
    args = ([x["instruction"] for x in s], [x["source"] for x in s], [x["candidate"] for x in s])
    assert [c.score for c in reloaded.score(*args)] == pytest.approx(
        [c.score for c in LocalCritic(model=(trained, proc)).score(*args)], rel=1e-5
    )


def test_film_critic_ties_the_colour_word_to_the_pixels(tmp_path):
    """Three colour words: the FiLM critic must read the word to rank (the tiny VLM needs hundreds of steps)."""
    from lego_edit.models.critic import FilmCriticScorer, load_critic_dir
    from lego_edit.training.critic import train_film

    samples = colour_samples()
    cfg = CriticTrainConfig(
        output_dir=str(tmp_path / "critic"),
        seed=0,
        cross_negatives=0,
        train=SFTSettings(steps=120, batch_size=16, lr=3e-3, warmup_steps=5, log_every=20, checkpoint_every=60),
    )
    trained, history = train_film(cfg, samples, tmp_path / "critic", tmp_path / "ckpt")
    after = ranking_accuracy(FilmCriticScorer(model=trained), [dict(s) for s in samples], 100)
    assert after["ranking_accuracy"] == 1.0, (after, history[-1])
    reloaded = load_critic_dir(tmp_path / "critic")
    assert isinstance(reloaded, FilmCriticScorer)
    s = samples[:6]
    args = ([x["instruction"] for x in s], [x["source"] for x in s], [x["candidate"] for x in s])
    assert [c.score for c in reloaded.score(*args)] == pytest.approx(
        [c.score for c in FilmCriticScorer(model=trained).score(*args)], rel=1e-5
    )


def test_a_film_ensemble_scores_by_its_members_mean_logit_and_one_member_is_the_single_critic(tmp_path):
    """members: 2 trains two differently seeded critics into member-<k>/ folders; loading the folder scores by the
    sigmoid of their mean logit; member 0 is the critic that members: 1 trains, weight for weight."""
    from safetensors.torch import load_file

    from lego_edit.models.critic import FilmCriticScorer, load_critic_dir
    from lego_edit.training.critic import train_film_members

    samples = colour_samples()
    settings = SFTSettings(steps=30, batch_size=16, lr=3e-3, warmup_steps=5, log_every=10, checkpoint_every=30)
    pair = CriticTrainConfig(seed=3, members=2, cross_negatives=0, train=settings)
    models, _ = train_film_members(pair, samples, tmp_path / "pair", tmp_path / "ckpt-pair")
    assert sorted(p.name for p in (tmp_path / "pair").iterdir() if p.is_dir()) == ["member-0", "member-1"]
    assert all((tmp_path / "pair" / m / "metrics.jsonl").is_file() for m in ("member-0", "member-1"))
    single, _ = train_film_members(
        CriticTrainConfig(seed=3, members=1, cross_negatives=0, train=settings),
        samples,
        tmp_path / "one",
        tmp_path / "c1",
    )
    assert len(single) == 1
    one = load_file(str(tmp_path / "one" / "model.safetensors"))
    first = load_file(str(tmp_path / "pair" / "member-0" / "model.safetensors"))
    second = load_file(str(tmp_path / "pair" / "member-1" / "model.safetensors"))
    assert all(torch.equal(one[k], first[k]) for k in one)
    assert not all(torch.equal(first[k], second[k]) for k in first)

    loaded = load_critic_dir(tmp_path / "pair")
    assert isinstance(loaded, FilmCriticScorer) and len(loaded.models) == 2
    s = samples[:6]
    args = ([x["instruction"] for x in s], [x["source"] for x in s], [x["candidate"] for x in s])
    with torch.no_grad():
        mean_logit = (models[0].logits(*args) + models[1].logits(*args)) / 2
    assert [c.score for c in loaded.score(*args)] == pytest.approx(torch.sigmoid(mean_logit).tolist(), rel=1e-5)
    with pytest.raises(ValueError, match="members must be at least 1"):
        train_film_members(CriticTrainConfig(members=0, train=settings), samples, tmp_path / "x", tmp_path / "cx")


def test_quality_pairs_rank_by_psnr_and_fall_back_to_labels():
    from lego_edit.training.critic import quality_pairs, ranking_groups

    samples = [
        {"__key__": "a_0", "label": 1, "psnr": 60.0},
        {"__key__": "a_x1", "label": 0, "psnr": 20.0},
        {"__key__": "a_x2", "label": 0, "psnr": 20.5},
        {"__key__": "a_3", "label": 0},
        {"__key__": "b_0", "label": 0, "psnr": 18.0},
    ]
    assert sorted(quality_pairs(samples, [0, 1, 2, 3], 1.0)) == [(0, 1), (0, 2), (0, 3)]  # 0.5 dB is no pair
    groups = ranking_groups(samples, 1.0)
    assert [g for g, _ in groups] == [[0, 1, 2, 3]]  # b has one candidate: no pair, left out


def test_scene_cross_targets_pair_the_other_instructions_targets_of_a_scene():
    from lego_edit.training.critic import ranking_groups, scene_cross_targets

    red, blue, grey = solid((220, 30, 30)), solid((30, 30, 220)), solid((128, 128, 128))

    def sample(key, candidate, label):
        return {"__key__": key, "source": grey, "candidate": candidate, "label": label}

    samples = [
        sample("gt_000001_0_0", red, 1),
        sample("gt_000001_0_1", grey, 0),
        sample("gt_000001_1_0", blue, 1),
        sample("gt_000001_1_1", grey, 0),
        sample("open_000001_0_0", red, 1),
        sample("open_000001_0_1", grey, 0),  # same scene, same image
        sample("gt_000002_0_0", blue, 1),
        sample("gt_000002_0_1", grey, 0),
    ]  # another scene
    groups = ranking_groups(samples, 1.0)
    planes = np.stack([np.concatenate([s["source"], s["candidate"]], axis=2).transpose(2, 0, 1) for s in samples])
    cross = scene_cross_targets(samples, groups, planes)
    assert [sorted(c) for c in cross] == [[2], [0, 4], [], [2]]  # groups in key order: gt_1_0, gt_1_1, gt_2_0, open_1_0


def test_film_critic_learns_which_edit_from_cross_negatives_alone(tmp_path):
    """Only "nothing changed" as a wrong edit: the colour word is learnt from the other instructions' targets."""
    from lego_edit.models.critic import FilmCriticScorer
    from lego_edit.training.critic import train_film

    train = [s for s in colour_samples() if s["kind"] in ("target", "no_edit")]
    cfg = CriticTrainConfig(
        output_dir=str(tmp_path / "critic"),
        seed=0,
        cross_negatives=2,
        train=SFTSettings(steps=120, batch_size=16, lr=3e-3, warmup_steps=5, log_every=20, checkpoint_every=60),
    )
    trained, history = train_film(cfg, train, tmp_path / "critic", tmp_path / "ckpt")
    after = ranking_accuracy(FilmCriticScorer(model=trained), colour_samples(), 100)
    assert after["ranking_accuracy/same_category"] == 1.0, (after, history[-1])


def test_a_film_critic_read_from_its_shards_is_the_critic_trained_in_memory(tmp_path):
    """samples_in_memory: false reads each sample once from the shards into a memory-mapped file of the critic's
    planes (paper scale: the split is never held); the ensemble trained on it is the in-memory one, weight for weight,
    and the planes file is gone afterwards."""
    from safetensors.torch import load_file

    from lego_edit.data.shard_index import ConcatSamples, ShardSamples
    from lego_edit.data.shards import write_shard_set
    from lego_edit.training.critic import train_film_members

    samples = colour_samples()
    write_shard_set(
        {
            "train": (
                (
                    s["__key__"],
                    {"source": s["source"], "candidate": s["candidate"]},
                    {k: s[k] for k in ("instruction", "label", "kind")},
                )
                for s in samples
            )
        },
        "critic",
        tmp_path / "shards",
        samples_per_shard=16,
    )
    settings = SFTSettings(steps=12, batch_size=16, lr=3e-3, warmup_steps=2, log_every=4, checkpoint_every=12)
    weights = {}
    for held in (True, False):
        cfg = CriticTrainConfig(seed=1, members=2, cross_negatives=1, samples_in_memory=held, train=settings)
        source = samples if held else ConcatSamples([ShardSamples(tmp_path / "shards", "train"), []])
        out, ckpt = tmp_path / f"critic-{held}", tmp_path / f"ckpt-{held}"
        train_film_members(cfg, source, out, ckpt)
        weights[held] = [load_file(str(out / m / "model.safetensors")) for m in ("member-0", "member-1")]
        assert not list(ckpt.glob("film-planes-*"))
    for in_memory, streamed in zip(weights[True], weights[False]):
        assert in_memory.keys() == streamed.keys()
        assert all(torch.equal(in_memory[k], streamed[k]) for k in in_memory)
