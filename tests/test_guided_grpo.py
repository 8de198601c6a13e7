"""Off-policy guidance for stage 2 (lego_edit.training.guided_grpo): in a training batch the first sample of each
prompt's group becomes the GT answer, tokenised and ended like a sampled one; evaluation batches are left alone."""

from __future__ import annotations

import pytest
import torch

from lego_edit.models.tokenizer import IM_END, train_tokenizer
from lego_edit.training.grpo_settings import GRPOSettings
from lego_edit.training.guided_grpo import guided, negatives_weighted

TOK = train_tokenizer(["remove the dog", '{"pipeline":[]}', "<think>remove</think>"], vocab_size=300, min_frequency=1)


class Sampler:
    """The two GRPOTrainer methods the guidance hooks, with fixed samples (the unit under test is the hook)."""

    def __init__(self, training=True):
        self._tokenizer = TOK
        self.eos_token_ids = [TOK.convert_tokens_to_ids(IM_END)]
        self.model = type("M", (), {"training": training})()
        self.calls = []

    def _generate_and_score_completions(self, inputs):
        prompts = [x["prompt_ids"] for x in inputs]
        return self._generate_single_turn(prompts, None, {}, 2)

    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        return [[1, 2, 3] for _ in prompt_ids], None


def batch():
    # two prompts, each repeated for a group of two samples, as TRL's sampler lays them out
    return [{"prompt_ids": [5, 6], "guide": "<think>remove</think>{}"}] * 2 + [{"prompt_ids": [7], "guide": None}] * 2


def test_the_first_sample_of_each_group_with_a_guide_is_the_gt_answer():
    completions, _ = guided(Sampler)()._generate_and_score_completions(batch())
    gt = TOK("<think>remove</think>{}", add_special_tokens=False)["input_ids"] + [TOK.convert_tokens_to_ids(IM_END)]
    assert completions == [gt, [1, 2, 3], [1, 2, 3], [1, 2, 3]]  # the second prompt has no GT: all sampled


def test_evaluation_batches_are_not_guided():
    completions, _ = guided(Sampler)(training=False)._generate_and_score_completions(batch())
    assert completions == [[1, 2, 3]] * 4


class Scorer:
    """GRPOTrainer's scoring step with fixed advantages."""

    def _generate_and_score_completions(self, inputs):
        return {"advantages": torch.tensor([1.5, -0.5, -1.0, 0.0])}


def test_negative_advantages_are_weighted_and_positive_ones_kept():
    out = negatives_weighted(Scorer, 0.2)()._generate_and_score_completions([])
    assert torch.allclose(out["advantages"], torch.tensor([1.5, -0.1, -0.2, 0.0]))
    assert torch.equal(
        negatives_weighted(Scorer, 0.0)()._generate_and_score_completions([])["advantages"],
        torch.tensor([1.5, 0.0, 0.0, 0.0]),
    )


def test_stage_settings_reject_a_negative_weight_outside_0_1():
    assert GRPOSettings(negative_weight=0.0).negative_weight == 0.0
    with pytest.raises(ValueError, match="negative_weight"):
        GRPOSettings(negative_weight=1.5)


def test_divergence_credit_stops_a_negative_advantage_after_the_first_wrong_token():
    from lego_edit.training.guided_grpo import divergence_advantages

    gt = [1, 2, 3, 9]
    ids = torch.tensor([[1, 2, 3, 9, 0], [1, 2, 4, 5, 9], [1, 2, 3, 9, 0], [7, 8, 9, 0, 0], [1, 5, 9, 0, 0]])
    mask = (ids != 0).long()
    adv = torch.tensor([1.0, -0.5, -0.5, -0.2, 0.3])
    out = divergence_advantages(adv, ids, mask, [gt, gt, gt, None, gt])
    assert torch.equal(out[0], torch.full((5,), 1.0))  # the GT answer: its whole advantage
    assert torch.equal(out[1], torch.tensor([-0.5, -0.5, -0.5, 0.0, 0.0]))  # up to its first wrong token (4)
    assert torch.equal(out[2], torch.full((5,), -0.5))  # equal to the GT answer: nothing to localise
    assert torch.equal(out[3], torch.full((5,), -0.2))  # no GT answer known for its prompt
    assert torch.equal(out[4], torch.full((5,), 0.3))  # positive advantages are never cut


class GuidedScorer(Sampler):
    """GRPOTrainer's generate-and-score step: samples through the hooked generation, fixed advantages."""

    def _generate_and_score_completions(self, inputs):
        completions, _ = self._generate_single_turn([x["prompt_ids"] for x in inputs], None, {}, 2)
        width = max(map(len, completions))
        ids = torch.tensor([c + [0] * (width - len(c)) for c in completions])
        return {"completion_ids": ids, "completion_mask": (ids != 0).long(), "advantages": torch.tensor([1.0, -1.0])}


def test_divergence_credit_is_applied_against_each_groups_gt_answer():
    rows = [{"prompt_ids": [5, 6], "guide": "<think>remove</think>{}"}] * 2
    out = guided(GuidedScorer, negative_credit="divergence")()._generate_and_score_completions(rows)
    assert out["advantages"].shape == out["completion_ids"].shape
    assert out["advantages"][1, 0] == -1.0 and not out["advantages"][1, 1:].any()  # [1, 2, 3] differs at once
    plain = guided(GuidedScorer)()._generate_and_score_completions(rows)
    assert plain["advantages"].dim() == 1
    with pytest.raises(ValueError, match="negative_credit"):
        guided(GuidedScorer, negative_credit="token")


def test_stage_settings_reject_an_unknown_negative_credit():
    assert GRPOSettings(negative_credit="divergence").negative_credit == "divergence"
    with pytest.raises(ValueError, match="negative_credit"):
        GRPOSettings(negative_credit="token")
