"""The config sections of the training and evaluation stages, as dataclasses: the pipeline's config schema is
generated from them (lego_edit.config_schema), and the rules hand each section to its stage's entry point."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ..data.brick_samples import EDIT_BRICKS
from ..evaluation.judging import EvaluationJudgeConfig, ProtocolPaths
from ..models.critic import OpenAICriticConfig
from ..models.film_critic import FilmCriticConfig
from ..models.flux_fill import FluxFillConfig
from ..models.inpainting import EditModelConfig
from ..models.segmentation import SegmentationConfig
from ..models.vlm import VLMConfig
from .grpo_settings import GRPOSettings
from .loop import LoopConfig
from .vlm_sft import LoraSettings, SFTSettings

# Stage 2's reward: graded arguments and the executed answer's error to the GT target; brick and edge F1
# down-weighted; format and validity (saturated after SFT) off. See config/config.yaml for the measurements.
STAGE2_REWARD_WEIGHTS = {
    "format": 0,
    "validity": 0,
    "arguments": 0,
    "graded_arguments": 1,
    "execution": 1,
    "brick_f1": 0.25,
    "edge_f1": 0.25,
}


@dataclass
class JobSettings:
    """What every training job adds to its config block besides its paths: where it resumes from, the run's seed,
    and the job's CPU threads (a resource, not a training setting)."""

    checkpoint_dir: str = field(default="", metadata={"help": "Resumable checkpoints (not a pipeline output)."})
    seed: int = field(default=0, metadata={"help": "The run's seed."})
    threads: int = field(default=1, metadata={"help": "CPU threads for torch (the job's threads)."})


def _segmentation_model() -> SegmentationConfig:
    model = SegmentationConfig()
    model.unet.block_out_channels = [8, 16, 32, 64]
    return model


@dataclass
class SegmentationSection:
    """Segmentation bricks (RES, SOS, MASK-SEG): one text-conditioned UNet."""

    gpus: int = field(default=0, metadata={"help": "GPUs for this job (0: CPU); >1 launches one process per GPU."})
    model: SegmentationConfig = field(default_factory=_segmentation_model)
    train: LoopConfig = field(
        default_factory=lambda: LoopConfig(steps=1500, batch_size=16, lr=2e-3, checkpoint_every=500)
    )


def _vlm_brick_train(steps: int) -> SFTSettings:
    return SFTSettings(
        steps=steps,
        batch_size=16,
        lr=2e-3,
        lora=LoraSettings(rank=16, alpha=32, modules_to_save=["embed_tokens", "lm_head"]),
    )


@dataclass
class VLMBrickSection:
    """A LoRA adapter on the base VLM (ADD-PRED placement or CMI-PRED captioning)."""

    gpus: int = field(default=0, metadata={"help": "GPUs for this job (0: CPU)."})
    train: SFTSettings = field(default_factory=lambda: _vlm_brick_train(400))
    eval_samples: int = field(default=150, metadata={"help": "Held-out samples for the figures."})


@dataclass
class EditLoraSection:
    """One LoRA per edit brick on the shared base."""

    rank: int = field(default=16, metadata={"help": "LoRA rank (alpha = rank)."})
    train: LoopConfig = field(default_factory=lambda: LoopConfig(steps=25, batch_size=32, lr=5e-4, warmup_steps=5))


@dataclass
class EditSection:
    """Edit bricks: a diffusion inpainting base plus one LoRA per brick."""

    backend: Literal["unet", "flux_fill"] = field(
        default="unet",
        metadata={"help": "unet: the small pixel-space UNet trained here; flux_fill: FLUX.1-Fill-dev with LoRAs."},
    )
    gpus: int = field(default=0, metadata={"help": "GPUs per training job (0: CPU)."})
    bricks: list[str] = field(
        default_factory=lambda: list(EDIT_BRICKS), metadata={"help": "Edit bricks to train (each gets a LoRA)."}
    )
    model: EditModelConfig = field(
        default_factory=lambda: EditModelConfig(prediction="residual", box_coords=True, erase_under_mask=["FILL"])
    )
    flux: FluxFillConfig = field(default_factory=FluxFillConfig, metadata={"help": "Backend flux_fill settings."})
    base: LoopConfig = field(default_factory=lambda: LoopConfig(steps=1300, batch_size=32, lr=1e-3))
    lora: EditLoraSection = field(default_factory=EditLoraSection)
    eval_per_brick: int = field(default=60, metadata={"help": "Held-out samples per brick for the PSNR figures."})


@dataclass
class ExecutedSamplesSection:
    """The critic's samples from the trained bricks: GT workflows and perturbed copies, executed and scored
    against the exact GT target."""

    train_instructions: int = field(
        default=450,
        metadata={"help": "Training-split GT instructions executed (0: none; the critic learns from clean renders)."},
    )
    val_instructions: int = field(default=100, metadata={"help": "Validation-split instructions (held-out figure)."})
    open_train_instructions: int = field(
        default=300,
        metadata={
            "help": "Training-split open-domain instructions whose stage-1 Builder answers are executed and scored "
            "against their GT targets: the outputs stage 3 asks the critic to judge (needs builder_answers > 0)."
        },
    )
    open_val_instructions: int = field(default=0, metadata={"help": "Validation-split open-domain instructions."})
    variants: int = field(default=2, metadata={"help": "Perturbed workflows per instruction besides the GT one."})
    builder_answers: int = field(
        default=2,
        metadata={
            "help": "The stage-1 Builder's own answers per instruction (greedy, then sampled), executed too: the "
            "mistakes the outputs stage 3 scores really have (0: none)."
        },
    )
    batch_size: int = field(default=64, metadata={"help": "Workflows executed together."})


@dataclass
class CriticSection:
    """The critic (judge): a small model trained here, or a large VLM behind an OpenAI-compatible API."""

    backend: Literal["local", "openai"] = field(default="local", metadata={"help": "local or openai."})
    gpus: int = field(default=0, metadata={"help": "GPUs for training the local critic (0: CPU)."})
    architecture: Literal["film", "vlm"] = field(
        default="film",
        metadata={
            "help": "Local critic: film (a CNN over the images conditioned on the instruction's words by FiLM) or vlm "
            "(a VLM of the Builder's architecture answering yes/no)."
        },
    )
    film: FilmCriticConfig = field(default_factory=FilmCriticConfig)
    members: int = field(
        default=2,
        metadata={
            "help": "architecture film: critics trained on the same data with different seeds, scored by their mean "
            "logit (an ensemble: steadier rankings, each member costs one more training).",
            "minimum": 1,
        },
    )
    executed: ExecutedSamplesSection = field(default_factory=ExecutedSamplesSection)
    margin_db: float = field(
        default=1.0,
        metadata={
            "help": "architecture film: candidates of one instruction whose PSNR to the GT target differs by more than "
            "this form a ranking pair."
        },
    )
    cross_negatives: int = field(
        default=2,
        metadata={
            "help": "architecture film: per instruction and step, this many GT targets of the other instructions of "
            "its scene read as its wrong edits (hard negatives at no data cost: the same source, a real edit)."
        },
    )
    objective: Literal["pairwise", "sft"] = field(
        default="pairwise",
        metadata={
            "help": "architecture vlm: pairwise (a Bradley-Terry loss on the yes/no verdict over each instruction's GT "
            "target and wrong edits; train.batch_size counts candidates; full fine-tuning only) or sft (TRL SFT "
            "on the answer 'yes|no. The edit: <what it does>', LoRA allowed)."
        },
    )
    train: SFTSettings = field(default_factory=lambda: SFTSettings(steps=1600, batch_size=64, lr=2e-3, warmup_steps=30))
    eval_instructions: int = field(
        default=0, metadata={"help": "Held-out instructions for the ranking figure (0: all of the split's)."}
    )
    openai: OpenAICriticConfig = field(default_factory=OpenAICriticConfig)


@dataclass
class BricksSection:
    """Brick models: training settings of every model-backed brick family."""

    segmentation: SegmentationSection = field(default_factory=SegmentationSection)
    placement: VLMBrickSection = field(default_factory=VLMBrickSection)
    captioning: VLMBrickSection = field(default_factory=lambda: VLMBrickSection(train=_vlm_brick_train(450)))
    edit: EditSection = field(default_factory=EditSection)
    critic: CriticSection = field(default_factory=CriticSection)
    samples_in_memory: bool = field(
        default=True,
        metadata={
            "help": "Brick training (segmentation, edit, the ADD-PRED / CMI-PRED adapters, the FiLM critic) keeps its "
            "decoded samples in memory (the embedded default: decoded once). false: segmentation and edit batches "
            "read their samples from the shards, the adapters' rows go to a memory-mapped Arrow file, the critic's "
            "image planes to a memory-mapped file read once from the shards (paper scale: a split is never held; "
            "the batches, and so the models, are the same)."
        },
    )


def _tiny_builder_vlm() -> VLMConfig:
    return VLMConfig(
        hidden_size=128,
        num_layers=2,
        num_heads=8,
        num_kv_heads=2,
        intermediate_size=256,
        vision_depth=2,
        vision_hidden_size=64,
        vision_heads=4,
        vision_intermediate_size=128,
        image_size=112,
    )


@dataclass
class BuilderSection:
    """The Builder: its base VLM and its three training stages."""

    gpus: int = field(default=0, metadata={"help": "GPUs per Builder training job (0: CPU)."})
    samples_in_memory: bool = field(
        default=True,
        metadata={
            "help": "The training stages hold their rows (images decoded) in memory; false: the rows are written to a "
            "memory-mapped Arrow file as the images are read (paper scale). The same rows, in the same order."
        },
    )
    vlm: VLMConfig = field(default_factory=_tiny_builder_vlm)
    vocab_size: int = field(
        default=1024, metadata={"help": "Upper bound of the trained tokenizer's vocabulary (tiny base only)."}
    )
    prompt_style: Literal["instruction", "registry"] = field(
        default="instruction",
        metadata={
            "help": "instruction: the Builder reads only the instruction (tiny models); registry: it also reads the "
            "system prompt rendered from the brick registry (real VLMs, API models)."
        },
    )
    sft: SFTSettings = field(
        default_factory=lambda: SFTSettings(steps=1200, batch_size=16, lr=3e-3),
        metadata={"help": "Stage 1: supervised fine-tuning on GT workflows."},
    )
    grpo_gt: GRPOSettings = field(
        default_factory=lambda: GRPOSettings(
            steps=80,
            prompts_per_step=16,
            lr=1e-4,
            beta=0.04,
            temperature=0.4,
            guidance=True,
            reward_weights=dict(STAGE2_REWARD_WEIGHTS),
            execution_gate=True,
        ),
        metadata={"help": "Stage 2: GRPO with GT-based rewards."},
    )
    grpo_critic: GRPOSettings = field(
        default_factory=lambda: GRPOSettings(
            steps=64, prompts_per_step=8, num_generations=8, lr=1e-4, beta=0.04, temperature=0.8
        ),
        metadata={"help": "Stage 3: GRPO on open-domain instructions, critic reward."},
    )


@dataclass
class OpenAIBuilderConfig:
    """An OpenAI-compatible Builder (zero-shot API agent, or a vLLM-served checkpoint)."""

    base_url: str = field(default="", metadata={"help": "Endpoint, e.g. http://localhost:8000/v1."})
    model: str = field(default="", metadata={"help": "Model name the endpoint serves."})
    api_key_env: str = field(default="OPENAI_API_KEY", metadata={"help": "Environment variable with the key."})
    prompt_style: Literal["instruction", "registry"] = field(
        default="registry", metadata={"help": "An API model needs the brick library in its prompt."}
    )
    concurrency: int = field(default=4, metadata={"help": "Requests in flight."})


@dataclass
class GEditSpec:
    """A local copy of GEdit-Bench (save_to_disk folder, arrow files or parquet export)."""

    path: str | None = field(default=None, metadata={"help": "Path of the copy; null: not evaluated."})
    # Both, as the published tables report GEdit-Bench-EN and -CN.
    languages: list[str] = field(default_factory=lambda: ["en", "cn"], metadata={"help": "en, cn or both."})
    published_inputs: bool = field(
        default=True,
        metadata={
            "help": "As the published evaluation: the editor gets input_image_raw resized to about 512x512 pixels "
            "and the judge compares the edit with input_image; false: input_image for both."
        },
    )


@dataclass
class ImgEditSpec:
    """A local copy of ImgEdit-Bench Basic (basic_edit.json and its image folder)."""

    json: str | None = field(default=None, metadata={"help": "Path of basic_edit.json; null: not evaluated."})
    images: str | None = field(default=None, metadata={"help": "Folder the JSON's image paths are relative to."})


@dataclass
class EvaluationSection:
    """Batch-edit the evaluation sets with every Builder and score them."""

    builders: list[str] = field(
        default_factory=lambda: ["sft", "grpo_gt", "grpo_critic", "oracle"],
        metadata={
            "help": "Rows: Builder stages (base, sft, grpo_gt, grpo_critic) and "
            "oracle (GT workflows run by the trained bricks)."
        },
    )
    api_builder: OpenAIBuilderConfig | None = field(
        default=None, metadata={"help": "Also evaluate an OpenAI-compatible Builder (row 'api'); null: no."}
    )
    shapes_gt_items: int = field(default=0, metadata={"help": "Items of the GT test split (0: all)."})
    shapes_open_items: int = field(default=0, metadata={"help": "Items of the open-domain test split (0: all)."})
    benchmark_items: int = field(default=0, metadata={"help": "Items per benchmark (0: all)."})
    gedit: GEditSpec = field(default_factory=GEditSpec)
    imgedit: ImgEditSpec = field(default_factory=ImgEditSpec)
    judge: EvaluationJudgeConfig = field(default_factory=EvaluationJudgeConfig)
    protocols: ProtocolPaths = field(default_factory=ProtocolPaths)
    chunks: int = field(default=1, metadata={"help": "Chunks per (Builder, set): parallel jobs on a cluster."})
    gpus: int = field(default=0, metadata={"help": "GPUs per chunk job (0: CPU)."})
    execution_seconds: float = field(default=60.0, metadata={"help": "Time bound per workflow execution."})
    grid_samples: int = field(default=2, metadata={"help": "Samples per category in the report's image grids."})


@dataclass
class EditFolderSection:
    """Batch editing of an image folder in the pipeline (nothing runs while folder is null)."""

    folder: str | None = field(default=None, metadata={"help": "Image folder to edit (recursive); null: none."})
    instruction: str | None = field(default=None, metadata={"help": "One instruction for every image."})
    mapping: str | None = field(
        default=None, metadata={"help": "CSV or JSONL: file (relative to folder) -> instruction, optional mask."}
    )
    workflow: str | None = field(default=None, metadata={"help": "A fixed workflow for every image (no Builder)."})
    builder: Literal["grpo_critic", "grpo_gt", "sft", "base"] = field(
        default="grpo_critic", metadata={"help": "Builder stage that writes the workflows."}
    )
    chunks: int = field(default=4, metadata={"help": "Parallel jobs, each editing every N-th image."})
    batch_size: int = field(default=16, metadata={"help": "Images per Builder generation batch."})
    max_side: int = field(default=1024, metadata={"help": "Larger images are scaled down to this long side."})
    gpus: int = field(default=0, metadata={"help": "GPUs per chunk job (0: CPU)."})


def stage_sections() -> dict:
    """The config's top-level blocks that are stage sections, by key."""
    return {
        "bricks": BricksSection,
        "builder": BuilderSection,
        "evaluation": EvaluationSection,
        "edit": EditFolderSection,
    }
