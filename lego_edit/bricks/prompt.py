"""The Builder's system prompt, rendered from the brick registry.

Because the prompt is built from the same specs the validator and executor use, the three can never
disagree, and a brick registered by a plugin is offered to the Builder with no retraining. The layout
follows the published prompt: role, rules, the four types, the brick library (PREDICT then EDIT, each
with description, typed inputs/outputs and a constraint), worked examples, then the instruction.
"""

from __future__ import annotations

import json
from typing import Literal

from .registry import BrickRegistry

Naming = Literal["canonical", "published"]
MASK_PREFIX = "The user provided a mask and wants to: "
PUBLISHED_MASK_PREFIX = "用户提供了mask并希望"  # the published demo's prefix (Chinese)

ROLE = (
    "**System Role**\n"
    "You are the scheduler of an image-editing engine. Turn the user's instruction into a JSON workflow that "
    "chains the bricks below. Every input must come from the initial image (or mask), the instruction, an "
    "earlier step's output, or your own reading of the instruction.\n"
)
RULES = (
    "**Rules**\n"
    "1. Each input is one of: init[image]; init[mask] when the user gave a mask; text from the instruction; "
    "an earlier output written stepN[key]; a number; or null for an optional input.\n"
    "2. Find the objects and actions in the instruction, look at the image, and pick a brick for each action "
    "whose inputs and constraint fit.\n"
    "3. Every step's output must be used by a later step or by the result; otherwise the step is redundant.\n"
    '4. Answer with your reasoning inside <think></think>, then the JSON: {"process": instruction, '
    '"pipeline": [steps..., {"result": "[stepN[image]]"}]}.\n'
)
TYPES = "**Types**\nThere are four types: Image, Mask, Str (English only), Float.\n"

EXAMPLES = [
    (
        "remove the dog and show me its segmentation",
        {
            "process": "remove the dog and show me its segmentation",
            "pipeline": [
                {
                    "step": 1,
                    "model": "RES",
                    "input": {"image": "init[image]", "prompt": "dog"},
                    "output": {"mask": "step1[mask]", "image": "step1[image]"},
                },
                {
                    "step": 2,
                    "model": "FASTINPAINT",
                    "input": {"image": "init[image]", "mask": "step1[mask]"},
                    "output": {"image": "step2[image]", "score": "step2[score]"},
                },
                {
                    "step": 3,
                    "model": "INPAINT",
                    "input": {
                        "image": "init[image]",
                        "mask": "step1[mask]",
                        "preimage": "step2[image]",
                        "score": "step2[score]",
                    },
                    "output": {"image": "step3[image]"},
                },
                {"result": "[step1[image], step3[image]]"},
            ],
        },
    ),
    (
        "add a cat, then expand the picture two times",
        {
            "process": "add a cat, then expand the picture two times",
            "pipeline": [
                {
                    "step": 1,
                    "model": "ADD-PRED",
                    "input": {"image": "init[image]", "prompt": "add a cat", "mask": None},
                    "output": {"mask": "step1[mask]"},
                },
                {
                    "step": 2,
                    "model": "FILL",
                    "input": {"image": "init[image]", "mask": "step1[mask]", "prompt": "cat", "preimage": None},
                    "output": {"image": "step2[image]"},
                },
                {
                    "step": 3,
                    "model": "CMI-PRED",
                    "input": {
                        "image": "step2[image]",
                        "left_ratio": 2.0,
                        "right_ratio": 2.0,
                        "top_ratio": 2.0,
                        "bottom_ratio": 2.0,
                    },
                    "output": {"caption": "step3[caption]", "image": "step3[image]", "mask": "step3[mask]"},
                },
                {
                    "step": 4,
                    "model": "FILL",
                    "input": {
                        "image": "step3[image]",
                        "mask": "step3[mask]",
                        "prompt": "step3[caption]",
                        "preimage": "step2[image]",
                    },
                    "output": {"image": "step4[image]"},
                },
                {"result": "[step4[image]]"},
            ],
        },
    ),
    (
        MASK_PREFIX + "turn the picture into a watercolor",
        {
            "process": MASK_PREFIX + "turn the picture into a watercolor",
            "pipeline": [
                {
                    "step": 1,
                    "model": "CMI-PRED",
                    "input": {
                        "image": "init[image]",
                        "left_ratio": None,
                        "right_ratio": None,
                        "top_ratio": None,
                        "bottom_ratio": None,
                    },
                    "output": {"caption": "step1[caption]", "image": None, "mask": None},
                },
                {
                    "step": 2,
                    "model": "STYLE",
                    "input": {
                        "image": "init[image]",
                        "mask": "init[mask]",
                        "prompt": "step1[caption]",
                        "style": "watercolor style",
                    },
                    "output": {"image": "step2[image]"},
                },
                {"result": "[step2[image]]"},
            ],
        },
    ),
    (
        "make the background a beach",
        {
            "process": "make the background a beach",
            "pipeline": [
                {"step": 1, "model": "SOS", "input": {"image": "init[image]"}, "output": {"mask": "step1[mask]"}},
                {
                    "step": 2,
                    "model": "INVERSE",
                    "input": {"mask1": None, "mask2": "step1[mask]", "image1": None, "image2": None},
                    "output": {"mask": "step2[mask]"},
                },
                {
                    "step": 3,
                    "model": "CBG",
                    "input": {
                        "image": "init[image]",
                        "mask": "step2[mask]",
                        "prompt": "change the background to a beach",
                    },
                    "output": {"image": "step3[image]"},
                },
                {"result": "[step3[image]]"},
            ],
        },
    ),
]


def display_name(spec, naming: Naming) -> str:
    return spec.aliases[0] if naming == "published" and spec.aliases else spec.name


def _ports(ports) -> str:
    return "{" + ", ".join(f"{p.kind}[{p.name}]" for p in ports) + "}"


def render_library(registry: BrickRegistry, naming: Naming = "canonical") -> str:
    lines = ["**Brick library**", "Bricks are PREDICT bricks (they analyse) or EDIT bricks (they change pixels)."]
    for category, title in (("predict", "PREDICT bricks:"), ("edit", "EDIT bricks:")):
        lines.append(title)
        for i, spec in enumerate((s for s in registry if s.category == category), start=1):
            lines.append(f"{i}.{display_name(spec, naming)} ({spec.description})")
            lines.append(f"Input: {_ports(spec.inputs)}")
            lines.append(f"Output: {_ports(spec.outputs)}")
            ranges = [f"{p.name} in [{p.range[0]:g}, {p.range[1]:g}]" for p in spec.inputs if p.range]
            constraint = _renamed(spec.constraint, registry, naming) + (
                " Ranges: " + "; ".join(ranges) + "." if ranges else ""
            )
            lines.append(f"Constraint: {constraint}")
        lines.append("")
    return "\n".join(lines)


def _renamed(text: str, registry: BrickRegistry, naming: Naming) -> str:
    """Brick names inside free text (constraints) in the chosen naming, so the prompt is consistent."""
    if naming == "canonical":
        return text
    import re

    names = {s.name: display_name(s, naming) for s in registry if display_name(s, naming) != s.name}
    if not names:
        return text
    alternatives = "|".join(map(re.escape, sorted(names, key=len, reverse=True)))
    pattern = re.compile(r"(?<![\w-])(" + alternatives + r")(?![\w-])")
    return pattern.sub(lambda m: names[m.group(1)], text)


def _rename(example: dict, registry: BrickRegistry, naming: Naming) -> dict:
    out = json.loads(json.dumps(example))
    for item in out["pipeline"]:
        if "model" in item:
            spec = registry.resolve(item["model"])
            item["model"] = display_name(spec, naming)
    return out


def render_system_prompt(registry: BrickRegistry, naming: Naming = "canonical", examples: bool = True) -> str:
    parts = [ROLE, RULES, TYPES, render_library(registry, naming)]
    if examples:
        usable = [ex for ex in EXAMPLES if all(registry.resolve(i["model"]) for i in ex[1]["pipeline"] if "model" in i)]
        for i, (instruction, workflow) in enumerate(usable, start=1):
            parts.append(
                f"**Example {i}:**\nInstruction: {instruction}\nAnswer:\n"
                + json.dumps(_rename(workflow, registry, naming), indent=2, ensure_ascii=False)
                + "\n"
            )
    return "\n".join(parts)


def instruction_line(instruction: str, has_mask: bool = False) -> str:
    if has_mask and not has_mask_prefix(instruction):
        instruction = MASK_PREFIX + instruction
    return f'Now the image and the instruction: "{instruction}". Write the workflow JSON.'


def has_mask_prefix(instruction: str) -> bool:
    return instruction.startswith(MASK_PREFIX) or instruction.startswith(PUBLISHED_MASK_PREFIX)


def render_prompt(
    registry: BrickRegistry, instruction: str, has_mask: bool = False, naming: Naming = "canonical"
) -> str:
    """The whole prompt as the published Builder reads it: system text followed by the instruction."""
    return render_system_prompt(registry, naming) + "\n" + instruction_line(instruction, has_mask)
