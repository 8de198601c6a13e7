"""Turn (image, instruction) pairs into workflows with a Builder, in batches, and score the answers.

Used by the Builder's training stages (quick held-out figures) and by the evaluation stage (every Builder
row of the tables): one code path for a local VLM and an OpenAI-compatible endpoint.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..workflow import DEFAULT_LIMITS, Limits, WorkflowError, parse_workflow, validate_workflow
from .backends import BackendError, GenerationBackend, GenerationRequest
from .prompting import builder_system_text, builder_user_text, registry_user_text


@dataclass
class BuilderAnswer:
    text: str | None
    workflow: object | None  # a Workflow, or None
    error: str | None  # why there is no (valid) workflow: backend error, parse error, validation errors
    valid: bool


def requests_for(
    images: Sequence[np.ndarray],
    instructions: Sequence[str],
    registry,
    style: str,
    has_masks: Sequence[bool] | None = None,
) -> list[GenerationRequest]:
    system = builder_system_text(registry, style)
    masks = has_masks or [False] * len(images)
    if style == "registry":
        return [
            GenerationRequest(registry_user_text(t, m), [img[:, :, :3]], system)
            for img, t, m in zip(images, instructions, masks)
        ]
    return [
        GenerationRequest(builder_user_text(t, m), [img[:, :, :3]], system)
        for img, t, m in zip(images, instructions, masks)
    ]


def build_workflows(
    backend: GenerationBackend,
    images,
    instructions,
    registry,
    style: str = "instruction",
    has_masks=None,
    limits: Limits = DEFAULT_LIMITS,
) -> list[BuilderAnswer]:
    """One answer per item, in order; a failed request or an invalid workflow is recorded, never raised."""
    results = backend.generate(requests_for(images, instructions, registry, style, has_masks))
    return [
        answer_from(r, registry, has_mask=bool(has_masks and has_masks[i]), limits=limits)
        for i, r in enumerate(results)
    ]


def answer_from(
    result: str | BackendError, registry, has_mask: bool = False, limits: Limits = DEFAULT_LIMITS
) -> BuilderAnswer:
    """One backend result read as a Builder answer: the request's failure, the parse error, the validator's
    errors, or a valid workflow."""
    if isinstance(result, BackendError):
        return BuilderAnswer(None, None, f"builder request failed: {result}", False)
    try:
        wf = parse_workflow(result)
    except WorkflowError as e:
        return BuilderAnswer(result, None, f"parse: {e}", False)
    report = validate_workflow(wf, registry, has_mask=has_mask, limits=limits)
    err = None if report.ok else "invalid: " + "; ".join(str(x) for x in report.errors[:5])
    return BuilderAnswer(result, wf, err, report.ok)
