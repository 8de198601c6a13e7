"""The prompts and answer formats of the VLM-backed bricks (ADD-PRED, CMI-PRED) and the critic, shared by
their training data and their inference code so the two can never drift apart."""

from __future__ import annotations

import re

PLACEMENT_PROMPT = "Where should this be added: {prompt}? Answer [x1, y1, x2, y2]."
CAPTION_PROMPT = "Describe this image."
CRITIC_PROMPT = ("Instruction: {instruction}\nIs the second image the first image edited as the instruction says? "
                 "Answer yes or no.")
CRITIC_CHOICES = ("yes", "no")
_BOX = re.compile(r"\[\s*(-?\d+)\s*,\s*(-?\d+)\s*,\s*(-?\d+)\s*,\s*(-?\d+)\s*\]")


def box_answer(box) -> str:
    return "[" + ", ".join(str(int(v)) for v in box) + "]"


def parse_box(text: str, width: int, height: int) -> list[int] | None:
    """The first '[x1, y1, x2, y2]' in ``text``, clipped to the image; None if there is none or it is empty."""
    m = _BOX.search(text)
    if not m:
        return None
    x1, y1, x2, y2 = (int(v) for v in m.groups())
    x1, x2 = sorted((max(0, min(width - 1, x1)), max(0, min(width - 1, x2))))
    y1, y2 = sorted((max(0, min(height - 1, y1)), max(0, min(height - 1, y2))))
    return [x1, y1, x2, y2]
