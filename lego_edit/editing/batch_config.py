"""What a batch edit is asked to do (``EditConfig``, as the CLI and the Snakemake chunk rule give it) and what it
reports (``EditSummary``). Kept apart from the editing loop in ``batch.py``, which re-exports both."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .sources import BUILDER_STAGES, EditError


@dataclass
class EditConfig:
    folder: str
    output: str
    instruction: str | None = None  # one instruction for every image
    mapping: str | None = None  # CSV/JSONL: file -> instruction[, mask]
    workflow: str | None = None  # one workflow for every image (no Builder)
    run: str | None = None  # a pipeline's results/ folder: the Builder stage and the brick models
    builder: str = "grpo_critic"  # the Builder stage under <run>/builder/
    builder_url: str | None = None  # an OpenAI-compatible Builder instead
    builder_model: str | None = None
    prompt_style: str | None = None  # None: the stage's own (registry for an endpoint)
    batch_size: int = 16  # Builder batch, and items between manifest writes
    retry_failed: bool = False
    chunk: int = 0
    chunks: int = 1
    manifest: str | None = None  # default <output>/manifest.parquet (.chunk-K-of-N for a chunk)
    seed: int = 0
    device: str | None = None
    threads: int = 0  # torch threads for model bricks and a local Builder (0: torch's default)
    max_new_tokens: int = 512
    max_side: int = 1024  # larger images are scaled down to this long side before editing (0: never)
    concurrency: int = 1  # requests in flight to an endpoint
    item_seconds: float = 600.0  # time bound on one image's workflow; past it the image fails (0: no bound)
    progress: bool = True

    def __post_init__(self):
        if not (self.instruction or self.mapping or self.workflow):
            raise EditError("give --instruction, --mapping or --workflow")
        if self.workflow and self.builder_url:
            raise EditError("a fixed --workflow needs no Builder: drop --builder-url")
        if not self.workflow and not (self.run or self.builder_url):
            raise EditError(
                "a Builder is needed to write the workflows: --run <results folder> (with --builder "
                f"{'|'.join(BUILDER_STAGES)}) or --builder-url/--builder-model; or give a fixed --workflow"
            )
        if self.builder_url and not self.builder_model:
            raise EditError("--builder-url needs --builder-model (the served model's name)")
        if self.batch_size < 1:
            raise EditError(f"batch size must be >= 1, got {self.batch_size}")
        if self.chunks < 1 or not 0 <= self.chunk < self.chunks:
            raise EditError(f"chunk must be in 0..{self.chunks - 1}, got {self.chunk}")

    def manifest_path(self) -> Path:
        if self.manifest:
            return Path(self.manifest)
        name = "manifest.parquet" if self.chunks == 1 else f"manifest.chunk-{self.chunk}-of-{self.chunks}.parquet"
        return Path(self.output) / name


@dataclass
class EditSummary:
    items: int  # in this run's selection (the chunk)
    edited: int  # edited now
    failed: int  # failed now
    skipped: int  # not to be edited (not named in the mapping)
    done_before: int  # done by an earlier run, left alone
    failed_before: int  # failed in an earlier run, not retried
    seconds: float
    manifest: str

    def __str__(self) -> str:
        text = (
            f"{self.items} images: {self.edited} edited, {self.failed} failed, {self.done_before} already done, "
            f"{self.skipped} skipped"
        )
        if self.failed_before:
            text += f", {self.failed_before} failed earlier (not retried; --retry-failed retries them)"
        return text + f"; {self.seconds:.1f} s; manifest {self.manifest}"
