"""Supervised fine-tuning of the Qwen2.5-VL-architecture models with TRL's SFTTrainer: the Builder's stage 1,
the ADD-PRED and CMI-PRED LoRA adapters, and the critic.

Rows are prompt/completion conversations with their images; the loss is on the completion only. LoRA
(peft) or full fine-tuning is a config switch. Checkpoints go to a folder that is not a pipeline output and
``trainer.train(resume_from_checkpoint=...)`` picks up the latest one, so a killed job resumes.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..imageio import atomic_write_json
from ..models.stable_files import stabilise_adapter
from ..models.vlm import load_vlm, save_vlm
from .common import num_processes, rank_finished
from .hf_checkpoints import pickle_free

log = logging.getLogger(__name__)
VLM_REF = "vlm_ref.json"  # a base that points at a checkpoint (hub id / path) instead of holding weights


@dataclass
class LoraSettings:
    """LoRA adapter settings (peft)."""

    rank: int = field(default=16, metadata={"help": "LoRA rank."})
    alpha: int = field(default=32, metadata={"help": "LoRA alpha."})
    dropout: float = field(default=0.0, metadata={"help": "LoRA dropout."})
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        metadata={"help": "Linear layers that get adapters."},
    )
    modules_to_save: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Modules trained in full next to the adapter (e.g. embed_tokens, lm_head for a base trained from "
            "scratch, whose token embeddings carry nothing yet)."
        },
    )


@dataclass
class SFTSettings:
    """Supervised fine-tuning settings (TRL SFTTrainer)."""

    steps: int = field(default=300, metadata={"help": "Optimizer steps."})
    batch_size: int = field(default=16, metadata={"help": "Global batch size (split across processes)."})
    grad_accum: int = field(default=1, metadata={"help": "Gradient accumulation steps."})
    lr: float = field(default=2e-3, metadata={"help": "Peak learning rate."})
    scheduler: str = field(default="cosine", metadata={"help": "transformers lr_scheduler_type."})
    warmup_steps: int = field(default=20, metadata={"help": "Warm-up steps."})
    weight_decay: float = field(default=0.0, metadata={"help": "Weight decay."})
    max_length: int = field(default=1024, metadata={"help": "Longest tokenised row (prompt + completion)."})
    checkpoint_every: int = field(default=200, metadata={"help": "Steps between resumable checkpoints."})
    checkpoints_kept: int = field(default=2, metadata={"help": "Checkpoints kept after rotation."})
    log_every: int = field(default=10, metadata={"help": "Steps between logged losses."})
    lora: LoraSettings | None = field(default=None, metadata={"help": "LoRA settings; None: full fine-tuning."})
    gradient_checkpointing: bool = field(
        default=False,
        metadata={"help": "Recompute activations in the backward pass (a 7B model's long sequences fit; slower)."},
    )

    def __post_init__(self):
        if isinstance(self.lora, dict):
            self.lora = LoraSettings(**self.lora)
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("steps and batch_size must be at least 1")


def resolve_base(path: str | Path) -> str:
    """The loadable location of a base: the folder itself, or the checkpoint its vlm_ref.json names."""
    ref = Path(path) / VLM_REF
    return json.loads(ref.read_text())["path"] if ref.is_file() else str(path)


def latest_hf_checkpoint(directory: str | Path) -> str | None:
    found = sorted(Path(directory).glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    return str(found[-1]) if found and (found[-1] / "trainer_state.json").is_file() else None


def per_device_batch(batch_size: int, processes: int) -> int:
    """Each process's share of a global batch."""
    if batch_size % processes:
        raise ValueError(f"batch size {batch_size} does not split evenly across {processes} processes")
    return batch_size // processes


def training_args(cls, settings: SFTSettings, checkpoint_dir: str | Path, seed: int, **extra):
    """TrainingArguments-family config with CPU-safe defaults (TRL's bf16/checkpointing defaults are GPU ones).
    ``settings.batch_size`` is the global batch: each of the stage's processes takes its share."""
    on_gpu = torch.cuda.is_available()
    return cls(
        output_dir=str(checkpoint_dir),
        max_steps=settings.steps,
        per_device_train_batch_size=per_device_batch(settings.batch_size, num_processes()),
        gradient_accumulation_steps=settings.grad_accum,
        learning_rate=settings.lr,
        lr_scheduler_type=settings.scheduler,
        warmup_steps=settings.warmup_steps,
        weight_decay=settings.weight_decay,
        logging_steps=settings.log_every,
        save_strategy="steps",
        save_steps=settings.checkpoint_every,
        save_total_limit=settings.checkpoints_kept,
        seed=seed,
        data_seed=seed,
        report_to="none",
        use_cpu=not on_gpu,
        bf16=on_gpu and torch.cuda.is_bf16_supported(),
        gradient_checkpointing=settings.gradient_checkpointing,
        dataloader_num_workers=0,
        disable_tqdm=False,
        save_only_model=False,
        **extra,
    )


def peft_config(lora: LoraSettings | None):
    if lora is None:
        return None
    from peft import LoraConfig

    return LoraConfig(
        r=lora.rank,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        modules_to_save=list(lora.modules_to_save) or None,
        task_type="CAUSAL_LM",
    )


# The full logits of a batch up to this size are computed by the model's own loss; above it, TRL's fused LM head
# (tiles of the vocabulary, never the whole logits: a 152k-token vocabulary at 2048 tokens is 1.2 GB a sequence).
FULL_LOGITS_BYTES = 256 * 2**20


def full_logits_bytes(model, settings: SFTSettings) -> int:
    """fp32 logits of one device's batch at the longest sequence."""
    vocab = model.get_output_embeddings().weight.shape[0]
    return per_device_batch(settings.batch_size, num_processes()) * settings.max_length * vocab * 4


def model_loss_trainer(trainer_cls):
    """``trainer_cls`` (an SFTTrainer) with the model's own cross-entropy as its loss. TRL's fused LM head also
    computes each token's entropy and top-1 hit in fp32 tiles, for its logged metrics: for the tiny Builder on a
    CPU that was a quarter of an SFT step (0.55 -> 0.42 s); the loss values are the same (completion tokens only,
    summed over the batch and divided by their count)."""
    from transformers import Trainer

    class ModelLossSFTTrainer(trainer_cls):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            inputs["use_cache"] = False
            return Trainer.compute_loss(self, model, inputs, return_outputs, num_items_in_batch)

    ModelLossSFTTrainer.__name__ = ModelLossSFTTrainer.__qualname__ = f"ModelLoss{trainer_cls.__name__}"
    return ModelLossSFTTrainer


def write_history(log_history: list[dict], out_dir: Path) -> list[dict]:
    rows = [r for r in log_history if "loss" in r or "reward" in r]
    (out_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def dataset_cache(checkpoint_dir: str | Path) -> Path:
    """Where ``training_dataset`` writes a job's rows: beside its checkpoints, one folder per process."""
    return Path(checkpoint_dir) / f".dataset-rank{int(os.environ.get('RANK', 0))}"


def training_dataset(rows, cache_dir: Path):
    """The SFT rows as a ``datasets.Dataset``. A list is held in memory (``Dataset.from_list``); a callable that
    yields the rows (a module-level function, so that datasets can fingerprint it) is written to an Arrow file in
    ``cache_dir`` as it is read, then memory-mapped: a paper-scale set of images never sits in memory. The folder is
    fresh for each call, so a dataset of other rows is never reused."""
    from datasets import Dataset

    if isinstance(rows, list):
        return Dataset.from_list(rows)
    shutil.rmtree(cache_dir, ignore_errors=True)
    return Dataset.from_generator(rows, cache_dir=str(cache_dir), keep_in_memory=False)


def sft(
    base: str | Path,
    rows: list[dict] | Callable[[], Iterator[dict]],
    out_dir: str | Path,
    checkpoint_dir: str | Path,
    seed: int,
    settings: SFTSettings,
    title: str,
    merge_lora: bool = False,
    threads: int = 1,
) -> tuple[object, object, list[dict]]:
    """Fine-tune ``base`` on rows of {"images", "prompt", "completion"} (a list, or a function yielding them:
    ``training_dataset``); save to ``out_dir``.

    Returns (model, processor, logged history). With LoRA, ``out_dir`` holds the adapter and the processor (a
    brick loads it on its base), or with ``merge_lora`` the merged model (a stage that the next one starts from).
    """
    from transformers import set_seed
    from trl import SFTConfig, SFTTrainer

    torch.set_num_threads(max(1, threads))
    set_seed(seed)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    model, processor = load_vlm(
        resolve_base(base),
        device="cuda" if torch.cuda.is_available() else "cpu",
        dtype="float32" if not torch.cuda.is_available() else None,
    )
    model.train()
    dataset = training_dataset(rows, dataset_cache(checkpoint_dir))
    args = training_args(
        SFTConfig,
        settings,
        checkpoint_dir,
        seed,
        max_length=settings.max_length,
        completion_only_loss=True,
        packing=False,
    )
    trainer_cls = pickle_free(SFTTrainer)
    if full_logits_bytes(model, settings) <= FULL_LOGITS_BYTES:
        trainer_cls = model_loss_trainer(trainer_cls)
    trainer = trainer_cls(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=processor,
        peft_config=peft_config(settings.lora),
    )
    trainer.train(resume_from_checkpoint=latest_hf_checkpoint(checkpoint_dir))
    shutil.rmtree(dataset_cache(checkpoint_dir), ignore_errors=True)  # rebuilt from the rows if the job runs again
    if not rank_finished(title, trainer.state.global_step):
        return trainer.model.eval(), processor, []
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    trained = trainer.model
    if settings.lora is not None and merge_lora:
        trained = trained.merge_and_unload()
    if settings.lora is None or merge_lora:
        save_vlm(trained, processor, out)
    else:
        trained.save_pretrained(out)
        processor.save_pretrained(out)
        stabilise_adapter(out)  # the same bytes on every run (peft writes target_modules in set order)
        atomic_write_json(out / "adapter_base.json", {"base": str(base)})
    history = write_history(trainer.state.log_history, out)
    atomic_write_json(out / "sft_settings.json", asdict(settings))
    return trained.eval(), processor, history
