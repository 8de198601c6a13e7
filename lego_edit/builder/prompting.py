"""What the Builder reads and writes: its prompt (image + instruction, with the system prompt rendered from
the brick registry, or the bare instruction for the tiny model) and its answer (reasoning + JSON workflow)."""

from __future__ import annotations

import json
from typing import Literal

from ..bricks.prompt import MASK_PREFIX, has_mask_prefix, instruction_line, render_system_prompt

PromptStyle = Literal["registry", "instruction"]


def builder_user_text(instruction: str, has_mask: bool = False) -> str:
    """The user turn's text (the image comes before it)."""
    if has_mask and not has_mask_prefix(instruction):
        instruction = MASK_PREFIX + instruction
    return f"Instruction: {instruction}"


def builder_system_text(registry, style: PromptStyle, naming: str = "canonical") -> str | None:
    """The system prompt: the brick library rendered from the registry ('registry'), or none ('instruction').

    The tiny Builder reads only the instruction: a 2,800-token tool list would cost it most of its compute.
    A real VLM (or an API model) gets the full prompt, so bricks added later reach it without retraining.
    """
    return render_system_prompt(registry, naming=naming) if style == "registry" else None


def registry_user_text(instruction: str, has_mask: bool = False) -> str:
    return instruction_line(instruction, has_mask)


def builder_completion(reasoning: str, workflow: dict | str) -> str:
    """The answer the Builder is trained to write: '<think>plan</think>' then compact JSON."""
    text = workflow if isinstance(workflow, str) else json.dumps(workflow, separators=(",", ":"), ensure_ascii=False)
    return f"<think>{reasoning}</think>{text}"
