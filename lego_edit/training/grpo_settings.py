"""Stage 2 and 3's settings (TRL GRPOTrainer), a section of the pipeline's config: steps, group, learning rate,
KL, rewards and their weights, guidance and prompt sampling."""

from __future__ import annotations

from dataclasses import dataclass, field

from .vlm_sft import LoraSettings


@dataclass
class GRPOSettings:
    """GRPO settings (TRL GRPOTrainer)."""

    steps: int = field(default=40, metadata={"help": "Optimizer steps."})
    prompts_per_step: int = field(default=4, metadata={"help": "Distinct instructions per step."})
    num_generations: int = field(default=4, metadata={"help": "Sampled workflows per instruction (the group)."})
    grad_accum: int = field(
        default=1,
        metadata={
            "help": "Micro-steps per optimizer step: a step's completions are generated together and trained on in "
            "this many slices (the logits of a 7B's long completions fit)."
        },
    )
    lr: float = field(default=2e-5, metadata={"help": "Learning rate."})
    beta: float = field(default=0.02, metadata={"help": "KL penalty towards the starting model."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature."})
    max_completion_length: int = field(default=320, metadata={"help": "Longest sampled answer, in tokens."})
    scheduler: str = field(default="constant", metadata={"help": "transformers lr_scheduler_type."})
    checkpoint_every: int = field(default=20, metadata={"help": "Steps between resumable checkpoints."})
    checkpoints_kept: int = field(default=2, metadata={"help": "Checkpoints kept after rotation."})
    log_every: int = field(default=5, metadata={"help": "Steps between logged metrics."})
    use_vllm: bool = field(default=False, metadata={"help": "Generate with vLLM (TRL's integration; GPU runs)."})
    vllm_mode: str = field(default="colocate", metadata={"help": "TRL vllm_mode: colocate or server."})
    lora: LoraSettings | None = field(default=None, metadata={"help": "LoRA settings; None: full fine-tuning."})
    gradient_checkpointing: bool = field(
        default=False,
        metadata={"help": "Recompute activations in the backward pass (a 7B policy's long completions fit; slower)."},
    )
    reward_weights: dict = field(
        default_factory=dict,
        metadata={
            "help": "Stage 2: weight per reward (format, validity, brick_f1, edge_f1, arguments, graded_arguments, "
            "execution); a reward not named here weighs 1, one weighted 0 is not computed."
        },
    )
    execution_seconds: float = field(default=20.0, metadata={"help": "Stage 3: time bound per workflow execution."})
    max_train_rows: int = field(default=0, metadata={"help": "Instructions drawn from (0: all training rows)."})
    guidance: bool = field(
        default=False,
        metadata={
            "help": "Stage 2: the GT answer is one sample of each group, scored like the others (off-policy guidance)."
        },
    )
    execution_gate: bool = field(
        default=False,
        metadata={
            "help": "Stage 2: the execution reward counts only where the GT workflow, run by the trained bricks, is an "
            "edit success (elsewhere the bricks' failure, not the answer, decides the score)."
        },
    )
    negative_weight: float = field(
        default=1.0,
        metadata={
            "help": "Multiplies negative advantages (1: plain GRPO; 0: only samples better than their group's mean "
            "are reinforced). Below 1 a higher lr stays safe for the answer's structure."
        },
    )
    negative_credit: str = field(
        default="sequence",
        metadata={
            "help": "Stage 2 with guidance: sequence (a sample's advantage on all its tokens, GRPO) or divergence (a "
            "negative advantage only up to the sample's first token that departs from the GT answer)."
        },
    )
    prompt_split: str = field(
        default="train",
        metadata={
            "help": "Stage 2's instructions: the GT table's train split (SFT's own) or rl (instructions on the "
            "training scenes that SFT never saw: data.instructions.gt.rl_per_scene)."
        },
    )
    prompt_filter: str = field(
        default="all",
        metadata={
            "help": "Stage 2's training instructions: all, or missed (those whose GT the starting model's greedy "
            "answer does not match exactly, plus solved_share of the others)."
        },
    )
    solved_share: float = field(
        default=0.1,
        metadata={
            "help": "With prompt_filter missed: the share of already-solved instructions kept (against forgetting)."
        },
    )
    gt_share: float = field(
        default=0.0,
        metadata={
            "help": "Stage 3: the share of its prompts drawn from the GT table's training instructions (their GT "
            "workflows unused: the critic scores the answers as it scores the open ones), so the policy keeps what "
            "stages 1 and 2 taught it there while it learns the open phrasings.",
            "minimum": 0,
            "maximum": 0.9,
        },
    )

    def __post_init__(self):
        if isinstance(self.lora, dict):
            self.lora = LoraSettings(**self.lora)
        if self.num_generations < 2:
            raise ValueError("GRPO needs num_generations >= 2 (it compares samples within a group)")
        if self.grad_accum < 1 or (self.prompts_per_step * self.num_generations) % self.grad_accum:
            raise ValueError(
                f"grad_accum {self.grad_accum} must divide prompts_per_step x num_generations = "
                f"{self.prompts_per_step * self.num_generations}"
            )
        if self.prompt_split not in ("train", "rl"):
            raise ValueError(f"prompt_split must be train or rl, got {self.prompt_split!r}")
        if self.prompt_filter not in ("all", "missed"):
            raise ValueError(f"prompt_filter must be all or missed, got {self.prompt_filter!r}")
        if self.negative_credit not in ("sequence", "divergence"):
            raise ValueError(f"negative_credit must be sequence or divergence, got {self.negative_credit!r}")
        if not 0 <= self.negative_weight <= 1:
            raise ValueError(f"negative_weight must be in [0, 1], got {self.negative_weight}")
        if not 0 <= self.gt_share <= 0.9:
            raise ValueError(f"gt_share must be in [0, 0.9], got {self.gt_share}")
        if not 0 <= self.solved_share <= 1:
            raise ValueError(f"solved_share must be in [0, 1], got {self.solved_share}")
