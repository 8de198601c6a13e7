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


def guided(trainer_cls: type, column: str = "guide") -> type:
    """``trainer_cls`` (TRL's GRPOTrainer or a subclass) where the first sample of each prompt's group in a training
    batch is the dataset's ``column`` text (the GT completion), tokenised and ended like a sampled answer."""

    class Guided(trainer_cls):
        def _generate_and_score_completions(self, inputs):
            self._guides = [x.get(column) for x in inputs] if self.model.training else None
            try:
                return super()._generate_and_score_completions(inputs)
            finally:
                self._guides = None

        def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
            completion_ids, logprobs = super()._generate_single_turn(
                prompt_ids, images, multimodal_fields, num_generations, has_tool_images
            )
            guides = getattr(self, "_guides", None)
            if not guides or len(guides) != len(completion_ids):
                return completion_ids, logprobs
            seen: set = set()
            completion_ids = list(completion_ids)
            for i, guide in enumerate(guides):
                key = (guide, tuple(prompt_ids[i]))
                if not guide or key in seen:
                    continue
                seen.add(key)  # the first copy of each prompt in the batch carries the GT answer
                ids = self._tokenizer(guide, add_special_tokens=False)["input_ids"]
                completion_ids[i] = ids + [self.eos_token_ids[0]]
                if logprobs is not None:
                    logprobs[i] = [0.0] * len(completion_ids[i])
            return completion_ids, logprobs

    Guided.__name__ = f"Guided{trainer_cls.__name__}"
    Guided.__qualname__ = Guided.__name__
    return Guided


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
