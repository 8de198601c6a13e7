"""GRPO with off-policy guidance from the GT answer (stage 2): in each group of sampled workflows, one sample is
replaced by the GT workflow itself, scored by the same rewards as the others.

Stage 2 has a GT workflow for every prompt. Plain GRPO only learns from what the policy samples, and a small
Builder rarely samples the right arguments where it is wrong (pass@8 a few points above greedy), so most groups
carry no useful signal. With the GT answer in the group (LUFFY, Yan et al. 2025, "Learning to Reason under
Off-Policy Guidance"), a group whose samples fall short of the GT gets a positive advantage on the GT's tokens and
a negative one on the wrong samples; a group whose samples already match the GT gets none. The loss is TRL's, with
the GT's tokens treated as if sampled (no importance correction: the ratio is 1 at the single update per batch).
"""

from __future__ import annotations


def guided(trainer_cls: type, column: str = "guide", negative_credit: str = "sequence") -> type:
    """``trainer_cls`` (TRL's GRPOTrainer or a subclass) where the first sample of each prompt's group in a training
    batch is the dataset's ``column`` text (the GT completion), tokenised and ended like a sampled answer.

    ``negative_credit``: ``sequence`` gives a sample's advantage to all its tokens (GRPO); ``divergence`` gives a
    negative advantage only to the tokens up to and including the first one where the sample leaves the GT answer.
    A wrong workflow shares its JSON with the right one; after its first wrong token every later token is written
    in a wrong context, and pushing those down teaches nothing about the error. Measured on the tiny Builder (seed 0,
    held out): it does not keep long answers valid at lr 1e-3 either (valid 0.976 -> 0.895, sequence credit 0.84),
    and no lr gave a GT-success gain over SFT that held on two seeds, so sequence stays the default."""
    if negative_credit not in ("sequence", "divergence"):
        raise ValueError(f"negative_credit must be sequence or divergence, got {negative_credit!r}")

    class Guided(trainer_cls):
        def _generate_and_score_completions(self, inputs):
            self._guides = [x.get(column) for x in inputs] if self.model.training else None
            self._row_guides = None
            try:
                out = super()._generate_and_score_completions(inputs)
            finally:
                self._guides = None
            if negative_credit == "divergence" and self._row_guides is not None:
                out["advantages"] = divergence_advantages(
                    out["advantages"], out["completion_ids"], out["completion_mask"], self._row_guides
                )
            return out

        def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
            completion_ids, logprobs = super()._generate_single_turn(
                prompt_ids, images, multimodal_fields, num_generations, has_tool_images
            )
            guides = getattr(self, "_guides", None)
            if not guides or len(guides) != len(completion_ids):
                return completion_ids, logprobs
            guide_ids: dict = {}
            completion_ids = list(completion_ids)
            for i, guide in enumerate(guides):
                key = (guide, tuple(prompt_ids[i]))
                if not guide or key in guide_ids:
                    continue
                # the first copy of each prompt in the batch carries the GT answer
                ids = self._tokenizer(guide, add_special_tokens=False)["input_ids"] + [self.eos_token_ids[0]]
                guide_ids[key] = ids
                completion_ids[i] = ids
                if logprobs is not None:
                    logprobs[i] = [0.0] * len(ids)
            self._row_guides = [guide_ids.get((g, tuple(p))) for g, p in zip(guides, prompt_ids)]
            return completion_ids, logprobs

    Guided.__name__ = f"Guided{trainer_cls.__name__}"
    Guided.__qualname__ = Guided.__name__
    return Guided


def divergence_advantages(advantages, completion_ids, completion_mask, row_guides: list):
    """Per-token advantages (B, T): a row with a negative advantage and a known GT answer keeps it on its tokens up
    to and including its first departure from that answer, 0 after; every other row keeps it on every token."""
    per_token = advantages.unsqueeze(1).expand_as(completion_ids).clone()
    lengths = completion_mask.sum(1).tolist()
    for i, guide in enumerate(row_guides):
        if guide is None or advantages[i] >= 0:
            continue
        sample = completion_ids[i, : int(lengths[i])].tolist()
        if sample == guide:
            continue
        first_wrong = next((t for t, (a, b) in enumerate(zip(sample, guide)) if a != b), min(len(sample), len(guide)))
        per_token[i, first_wrong + 1 :] = 0.0
    return per_token


def negatives_weighted(trainer_cls: type, weight: float) -> type:
    """``trainer_cls`` with every negative advantage multiplied by ``weight`` (0: positive samples only).

    A sample worse than its group's mean gets a negative advantage on every token, the JSON structure it shares
    with the right answer included. At a learning rate that moves the small Builder (1e-3), that push on shared
    structure broke valid output (valid 0.97 -> 0.84 held out) while the positive side (the GT answer and better
    samples) carried the gain; weighting negatives down (W-REINFORCE, Zhu et al. 2025, "The Surprising
    Effectiveness of Negative Reinforcement in LLM Reasoning") keeps the structure."""

    class NegativesWeighted(trainer_cls):
        def _generate_and_score_completions(self, inputs):
            out = super()._generate_and_score_completions(inputs)
            adv = out["advantages"]
            out["advantages"] = adv.where(adv >= 0, adv * weight)
            return out

    NegativesWeighted.__name__ = f"NegativesWeighted{trainer_cls.__name__}"
    NegativesWeighted.__qualname__ = NegativesWeighted.__name__
    return NegativesWeighted
