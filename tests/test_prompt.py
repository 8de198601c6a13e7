"""The Builder's system prompt, rendered from the registry: layout, every brick, examples that validate."""

from __future__ import annotations

import json
import re

import pytest

from lego_edit.bricks import BrickSpec, Port
from lego_edit.bricks.prompt import (
    EXAMPLES,
    MASK_PREFIX,
    PUBLISHED_MASK_PREFIX,
    display_name,
    has_mask_prefix,
    instruction_line,
    render_library,
    render_prompt,
    render_system_prompt,
)
from lego_edit.workflow import Kind, check_workflow, parse_workflow

RES_BLOCK = (
    "2.RES (Segment the object that the prompt refers to)\n"
    "Input: {Image[image], Str[prompt]}\n"
    "Output: {Mask[mask], Image[image]}\n"
    "Constraint: The prompt is English and keeps the locative words and adjectives of the instruction. The output "
    "image is the cut-out object (transparent elsewhere); use it when the user asks for the segmentation itself.\n"
)
RESIZE_BLOCK = (
    "8.RESIZE (Scale the object of a mask or image by the ratio (bottom-aligned, centred))\n"
    "Input: {Mask[mask], Image[image], Float[ratio]}\n"
    "Output: {Mask[mask], Image[image]}\n"
    "Constraint: Give a mask or an image, not both; it returns the same kind. A cut-out image scales its object; a "
    "plain image zooms about its centre. Ranges: ratio in [0.1, 4].\n"
)


def examples_in(prompt: str) -> list[tuple[str, str]]:
    """(instruction, answer JSON) of each worked example in a rendered prompt."""
    return re.findall(r"\*\*Example \d+:\*\*\nInstruction: ([^\n]*)\nAnswer:\n(\{.*?\n\})\n", prompt, re.DOTALL)


def test_layout_follows_the_published_prompt(registry):
    prompt = render_system_prompt(registry)
    heads = [
        "**System Role**",
        "**Rules**",
        "**Types**",
        "**Brick library**",
        "PREDICT bricks:",
        "EDIT bricks:",
        "**Example 1:**",
        "**Example 2:**",
        "**Example 3:**",
        "**Example 4:**",
    ]
    positions = [prompt.index(h) for h in heads]
    assert positions == sorted(positions)
    assert "**Example 5:**" not in prompt
    assert "There are four types: Image, Mask, Str (English only), Float.\n" in prompt
    assert RES_BLOCK in prompt and RESIZE_BLOCK in prompt
    assert (
        "7.BBOX (The bounding-box mask of a mask)\nInput: {Mask[mask]}\nOutput: {Mask[mask]}\nConstraint: None\n"
        in prompt
    )


def test_every_registered_brick_is_in_the_library_under_its_category(registry):
    library = render_library(registry)
    predict, edit = library.split("EDIT bricks:")
    for category, text in (("predict", predict), ("edit", edit)):
        bricks = [s for s in registry if s.category == category]
        headers = re.findall(r"^(\d+)\.(\S+) \(", text, re.MULTILINE)
        assert headers == [(str(i), s.name) for i, s in enumerate(bricks, start=1)]
        for s in bricks:
            assert (
                f"{s.name} ({s.description})\nInput: {{"
                + ", ".join(f"{p.kind}[{p.name}]" for p in s.inputs)
                + "}\nOutput: {"
                + ", ".join(f"{p.kind}[{p.name}]" for p in s.outputs)
                + "}\nConstraint: "
                in text
            )
    assert len(re.findall(r"^\d+\.", library, re.MULTILINE)) == len(registry) == 18


def test_published_naming(registry):
    prompt = render_system_prompt(registry, naming="published")
    for name in (
        "FLUX-FILL",
        "FLUX-RCM",
        "FLUX-INPAINT",
        "FLUX-CBG",
        "FLUX-STYLE",
        "FLUX-ENV",
        "FLUX-POSE",
        "FLUX-BRIGHT",
    ):
        assert re.search(rf"^\d+\.{name} \(", prompt, re.MULTILINE), name
    assert "\n2.FLUX-FILL (Generate what the prompt describes inside the mask; not for recolouring)\n" in prompt
    assert not re.search(r"^\d+\.FILL \(", prompt, re.MULTILINE)
    assert RES_BLOCK in prompt  # bricks without a FLUX- name keep theirs
    answers = [json.loads(a) for _, a in examples_in(prompt)]
    assert [item["model"] for item in answers[0]["pipeline"] if "model" in item] == [
        "RES",
        "FASTINPAINT",
        "FLUX-INPAINT",
    ]
    canonical = render_system_prompt(registry)
    assert "\n2.FILL (Generate what the prompt describes" in canonical and "FLUX-FILL" not in canonical
    assert display_name(registry.resolve("FILL"), "published") == "FLUX-FILL"
    assert display_name(registry.resolve("RES"), "published") == "RES"


@pytest.mark.parametrize("naming", ["canonical", "published"])
def test_worked_examples_are_valid_workflows(registry, naming):
    found = examples_in(render_system_prompt(registry, naming=naming))
    assert [instruction for instruction, _ in found] == [ex[0] for ex in EXAMPLES]
    for instruction, answer in found:
        wf = parse_workflow(answer)
        assert wf.process == instruction
        report = check_workflow(wf, registry, has_mask=has_mask_prefix(instruction))
        assert report.warnings == [], instruction  # every step is used
        assert report.needed == {s.number for s in wf.steps}


def test_examples_that_need_a_missing_brick_are_left_out(registry):
    registry.unregister("RES")
    prompt = render_system_prompt(registry)
    assert [i for i, _ in examples_in(prompt)] == [ex[0] for ex in EXAMPLES[1:]]
    assert "**Example 3:**" in prompt and "**Example 4:**" not in prompt
    assert not re.search(r"^\d+\.RES \(", prompt, re.MULTILINE)
    assert "\n2.SOS (" in prompt  # renumbered
    assert "**Example" not in render_system_prompt(registry, examples=False)


def test_a_new_brick_is_offered_without_retraining(registry):
    registry.register(
        BrickSpec(
            "DEPTH",
            "predict",
            "Estimate a depth map",
            (Port("image", Kind.IMAGE),),
            (Port("image", Kind.IMAGE),),
            "Near is bright.",
            aliases=("FLUX-DEPTH",),
        )
    )
    block = (
        "8.DEPTH (Estimate a depth map)\nInput: {Image[image]}\nOutput: {Image[image]}\nConstraint: Near is bright.\n"
    )
    assert block in render_system_prompt(registry)
    assert block.replace("DEPTH (", "FLUX-DEPTH (") in render_system_prompt(registry, naming="published")


def test_instruction_line_and_mask_prefix():
    assert (
        instruction_line("remove the dog") == 'Now the image and the instruction: "remove the dog". Write the '
        "workflow JSON."
    )
    with_mask = instruction_line("make it red", has_mask=True)
    assert with_mask == f'Now the image and the instruction: "{MASK_PREFIX}make it red". Write the workflow JSON.'
    assert instruction_line(MASK_PREFIX + "make it red", has_mask=True) == with_mask  # not prefixed twice
    chinese = PUBLISHED_MASK_PREFIX + "把图像换成水彩画风格"
    assert (
        instruction_line(chinese, has_mask=True) == f'Now the image and the instruction: "{chinese}". Write the '
        "workflow JSON."
    )
    assert has_mask_prefix(chinese) and has_mask_prefix(MASK_PREFIX + "x") and not has_mask_prefix("x")


def test_render_prompt_is_the_system_prompt_then_the_instruction(registry):
    prompt = render_prompt(registry, "make it night", has_mask=True, naming="published")
    system = render_system_prompt(registry, naming="published")
    assert prompt == system + "\n" + instruction_line("make it night", has_mask=True)
    assert prompt.endswith(f'"{MASK_PREFIX}make it night". Write the workflow JSON.')
