"""Errors of the workflow language.

``WorkflowError`` is the one documented error type for bad workflows: parsing and validation raise it
(or a subclass) and nothing else, whatever the input. Failures while *running* a valid workflow are
``ExecutionError`` (a brick failed, a model is missing, a size bound was hit).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Issue:
    """One problem found in a workflow, located by step number and field."""

    message: str
    step: int | None = None
    field: str | None = None
    code: str = "invalid"

    def location(self) -> str:
        parts = []
        if self.step is not None:
            parts.append(f"step {self.step}")
        if self.field:
            parts.append(self.field)
        return ", ".join(parts) or "workflow"

    def __str__(self) -> str:
        return f"{self.location()}: {self.message}"

    def to_dict(self) -> dict:
        return {"step": self.step, "field": self.field, "code": self.code, "message": self.message}


class WorkflowError(ValueError):
    """A workflow that cannot be accepted. ``issues`` lists every problem found, not just the first."""

    def __init__(self, issues: list[Issue] | Issue | str):
        if isinstance(issues, str):
            issues = [Issue(issues)]
        elif isinstance(issues, Issue):
            issues = [issues]
        self.issues: list[Issue] = list(issues)
        super().__init__("\n".join(str(i) for i in self.issues) or "invalid workflow")


class WorkflowParseError(WorkflowError):
    """The text is not a workflow in the published format (bad JSON, wrong structure)."""


class WorkflowValidationError(WorkflowError):
    """The workflow is well formed but does not fit the brick registry (unknown brick, bad reference, ...)."""


class ExecutionError(RuntimeError):
    """A valid workflow failed while running; names the step and the brick."""

    def __init__(self, message: str, step: int | None = None, brick: str | None = None):
        self.step = step
        self.brick = brick
        where = f"step {step} ({brick}): " if step is not None else ""
        super().__init__(where + message)


class BrickUnavailableError(ExecutionError):
    """A model-backed brick was called but no model is configured for it."""


class LimitExceededError(ExecutionError):
    """A step would exceed a configured bound (image size, step time)."""
