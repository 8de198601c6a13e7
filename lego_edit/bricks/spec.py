"""What a brick is, as data: name, kind, description, typed ports, modes and constraint text.

Specs are plain frozen dataclasses with no model code, so the validator and the prompt renderer can
use them without importing torch. Implementations are bound to specs in a ``BrickRegistry``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ..workflow.values import Kind


@dataclass(frozen=True)
class Port:
    """One named, typed input or output of a brick."""

    name: str
    kind: Kind
    description: str = ""
    range: tuple[float, float] | None = None  # inclusive bounds of a Float input


@dataclass(frozen=True)
class Mode:
    """One way to call a brick: the inputs it needs, the other inputs it allows, the outputs it gives.

    Bricks such as INVERSE work either on masks or on images; each way is a mode. A call matches a
    mode when every required input is given (non-null) and every given input is required or allowed.
    """

    requires: tuple[str, ...]
    produces: tuple[str, ...]
    allows: tuple[str, ...] = ()
    label: str = ""

    def matches(self, given: set[str]) -> bool:
        return set(self.requires) <= given <= set(self.requires) | set(self.allows)


@dataclass(frozen=True)
class BrickSpec:
    name: str
    category: Literal["predict", "edit"]
    description: str
    inputs: tuple[Port, ...]
    outputs: tuple[Port, ...]
    constraint: str = "None"
    modes: tuple[Mode, ...] = ()
    aliases: tuple[str, ...] = ()
    backend: Literal["function", "model"] = "function"
    tags: tuple[str, ...] = field(default=())

    def __post_init__(self):
        names = [p.name for p in self.inputs]
        if len(set(names)) != len(names):
            raise ValueError(f"brick {self.name}: duplicate input names {names}")
        out_names = {p.name for p in self.outputs}
        for mode in self.modes:
            unknown = (set(mode.requires) | set(mode.allows)) - set(names)
            if unknown:
                raise ValueError(f"brick {self.name}: mode {mode.label!r} uses unknown inputs {sorted(unknown)}")
            if set(mode.produces) - out_names:
                raise ValueError(f"brick {self.name}: mode {mode.label!r} produces unknown outputs")

    @property
    def all_modes(self) -> tuple[Mode, ...]:
        if self.modes:
            return self.modes
        return (Mode(requires=tuple(p.name for p in self.inputs), produces=tuple(p.name for p in self.outputs)),)

    def input(self, name: str) -> Port | None:
        return next((p for p in self.inputs if p.name == name), None)

    def output(self, name: str) -> Port | None:
        return next((p for p in self.outputs if p.name == name), None)

    def required_everywhere(self) -> set[str]:
        """Inputs every mode requires."""
        sets = [set(m.requires) for m in self.all_modes]
        return set.intersection(*sets) if sets else set()

    def select_mode(self, given: set[str]) -> Mode | None:
        for mode in self.all_modes:
            if mode.matches(given):
                return mode
        return None
