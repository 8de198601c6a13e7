"""The workflow as data: steps calling bricks, with references between them.

The published Builder writes::

    {"process": "...", "pipeline": [
        {"step": 1, "model": "RES", "input": {"image": "init[image]", "prompt": "dog"},
         "output": {"mask": "step1[mask]", "image": "step1[image]"}},
        {"result": "[step1[image]]"}]}

Input values are references (``init[image]``, ``init[mask]``, ``stepN[key]``), literal strings,
numbers or null. Output values name where an output is stored (``stepN[key]``) or are null
(output not requested).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

REF_RE = re.compile(r"^(?:init|step(\d+))\[([A-Za-z_][A-Za-z0-9_]*)\]$")
# Strings that look like an attempted reference (so a malformed one is an error, not a literal).
REF_LIKE_RE = re.compile(r"^\s*(?:init|step[^\[\s]*)\s*\[.*\]\s*$")
INIT_KEYS = ("image", "mask")


@dataclass(frozen=True)
class Ref:
    """A reference to the initial inputs (``step is None``) or to an earlier step's output."""

    key: str
    step: int | None = None

    @property
    def is_init(self) -> bool:
        return self.step is None

    def __str__(self) -> str:
        return f"init[{self.key}]" if self.step is None else f"step{self.step}[{self.key}]"

    @classmethod
    def parse(cls, text: str) -> Ref | None:
        """The reference written in ``text``, or None when ``text`` is not a well-formed reference."""
        m = REF_RE.match(text.strip())
        if not m:
            return None
        return cls(key=m.group(2), step=int(m.group(1)) if m.group(1) is not None else None)


Literal = str | float | None
InputValue = Ref | str | float | None


@dataclass
class Step:
    number: int
    brick: str
    inputs: dict[str, InputValue] = field(default_factory=dict)
    outputs: dict[str, Ref | None] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "step": self.number,
            "model": self.brick,
            "input": {k: (str(v) if isinstance(v, Ref) else v) for k, v in self.inputs.items()},
            "output": {k: (str(v) if v is not None else None) for k, v in self.outputs.items()},
        }

    def references(self) -> list[tuple[str, Ref]]:
        return [(k, v) for k, v in self.inputs.items() if isinstance(v, Ref)]


@dataclass
class Workflow:
    process: str
    steps: list[Step]
    result: list[Ref]
    reasoning: str = ""

    def step(self, number: int) -> Step | None:
        for s in self.steps:
            if s.number == number:
                return s
        return None

    def to_dict(self) -> dict:
        """The published format, with ``result`` as the last pipeline item."""
        pipeline: list[dict] = [s.to_dict() for s in self.steps]
        pipeline.append({"result": "[" + ", ".join(str(r) for r in self.result) + "]"})
        return {"process": self.process, "pipeline": pipeline}

    def to_json(self, compact: bool = True) -> str:
        if compact:
            return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":"))
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=2)

    def bricks(self) -> list[str]:
        return [s.brick for s in self.steps]
