"""The workflow language: parse, validate and execute Builder-written workflows (no torch here)."""

from .errors import (
    BrickUnavailableError,
    ExecutionError,
    Issue,
    LimitExceededError,
    WorkflowError,
    WorkflowParseError,
    WorkflowValidationError,
)
from .execute import BrickContext, ExecutionResult, Executor, run_workflow
from .limits import DEFAULT_LIMITS, Limits
from .parse import parse_workflow
from .structure import Ref, Step, Workflow
from .validate import ValidationReport, check_workflow, validate_workflow
from .values import Kind

__all__ = [
    "BrickContext",
    "BrickUnavailableError",
    "DEFAULT_LIMITS",
    "ExecutionError",
    "ExecutionResult",
    "Executor",
    "Issue",
    "Kind",
    "LimitExceededError",
    "Limits",
    "Ref",
    "Step",
    "ValidationReport",
    "Workflow",
    "WorkflowError",
    "WorkflowParseError",
    "WorkflowValidationError",
    "check_workflow",
    "parse_workflow",
    "run_workflow",
    "validate_workflow",
]
