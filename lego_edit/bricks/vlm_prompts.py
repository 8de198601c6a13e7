"""The prompts and answer formats of the VLM-backed bricks (ADD-PRED, CMI-PRED) and the critic, shared by
their training data and their inference code so the two can never drift apart."""

from __future__ import annotations

import re

import numpy as np

PLACEMENT_PROMPT = "Where should this be added: {prompt}? Answer [x1, y1, x2, y2]."
CAPTION_PROMPT = "Describe this image."
CRITIC_PROMPT = (
    "Instruction: {instruction}\nThe images: the source, then the region the edit changed, before and "
    "after, zoomed in (black if nothing changed). Is this the edit the instruction asks for? "
    "Answer yes or no."
)
CHANGE_TOLERANCE = 8  # a channel differing by more than this marks a pixel as changed
CRITIC_CHOICES = ("yes", "no")


def critic_answer(label: bool, shows: str | None = None) -> str:
    """The critic's training answer: yes/no first (its probability is the score), then what the edit does.

    The explanation after the verdict costs nothing at scoring time (only the first token is read) and teaches
    the model to see what changed, which a bare yes/no label teaches slowly."""
    verdict = CRITIC_CHOICES[0] if label else CRITIC_CHOICES[1]
    return f"{verdict}. The edit: {shows}" if shows else verdict


_BOX = re.compile(r"\[\s*(-?\d+)\s*,\s*(-?\d+)\s*,\s*(-?\d+)\s*,\s*(-?\d+)\s*\]")


def box_answer(box) -> str:
    return "[" + ", ".join(str(int(v)) for v in box) + "]"


def parse_box(text: str, width: int, height: int) -> list[int] | None:
    """The first '[x1, y1, x2, y2]' in ``text`` (corners in either order), clipped to the image; None if there is
    none or it lies wholly outside the image (nothing is left after clipping)."""
    m = _BOX.search(text)
    if not m:
        return None
    x1, y1, x2, y2 = (int(v) for v in m.groups())
    x1, x2 = sorted((x1, x2))
    y1, y2 = sorted((y1, y2))
    if x2 < 0 or y2 < 0 or x1 > width - 1 or y1 > height - 1:
        return None
    return [max(0, x1), max(0, y1), min(width - 1, x2), min(height - 1, y2)]


def critic_images(source: np.ndarray, edited: np.ndarray) -> list[np.ndarray]:
    """What the critic looks at: the source, then the changed region before and after, zoomed in.

    The region is the box around every pixel the edit changed, grown by a quarter and made square; both crops
    are scaled up to the source's size, so a small object the edit touched fills the critic's view instead of
    a token or two. Nothing changed: both crops are black. An edited image of another size (an outpaint) is
    resized to the source first."""
    from PIL import Image

    from ..workflow.values import rgb

    src = rgb(source)[:, :, :3]
    out = rgb(edited)[:, :, :3]
    H, W = src.shape[:2]
    if out.shape[:2] != (H, W):
        out = np.asarray(Image.fromarray(out).resize((W, H), Image.Resampling.BILINEAR))
    changed = np.abs(src.astype(np.int16) - out.astype(np.int16)).max(axis=2) > CHANGE_TOLERANCE
    if not changed.any():
        black = np.zeros_like(src)
        return [src, black, black]
    ys, xs = np.nonzero(changed)
    cx, cy = (xs.min() + xs.max() + 1) / 2, (ys.min() + ys.max() + 1) / 2
    half = max(xs.max() - xs.min() + 1, ys.max() - ys.min() + 1) * 0.625 + 2
    box = (
        max(0, int(cx - half)),
        max(0, int(cy - half)),
        min(W, int(np.ceil(cx + half))),
        min(H, int(np.ceil(cy + half))),
    )

    def zoom(a):
        return np.asarray(Image.fromarray(a).crop(box).resize((W, H), Image.Resampling.NEAREST))

    return [src, zoom(src), zoom(out)]
