"""What the FLUX Fill model is given for one edit: the prompt (an ICEdit diptych instruction, or a description of
what fills the mask) and the canvas (``Layout``: the image at the working size, beside the source or a reference
object for a diptych, with the model's mask). Pure functions of the edit's inputs, from which ``FluxFillEditor``
(``flux_fill.py``, which re-exports these names) builds each edit's prompt and layout."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

# --- prompts ---------------------------------------------------------------------------------------------------
DIPTYCH_PREFIX = "A diptych with two side-by-side images of the same scene. "
DIPTYCH_RIGHT = "On the right, the scene is exactly the same as on the left but "
_VERBS = {
    "make",
    "change",
    "turn",
    "replace",
    "recolor",
    "recolour",
    "paint",
    "add",
    "remove",
    "convert",
    "give",
    "set",
    "rotate",
    "let",
    "put",
    "erase",
    "swap",
    "transform",
    "render",
    "point",
}
_BACKGROUND_LEAD = re.compile(
    r"^(?:please\s+)?(?:change|replace|make|turn|set|switch)\s+the\s+background\s+"
    r"(?:to|into|with|as)\s+",
    re.I,
)


def _clean(text: str | None) -> str:
    return " ".join((text or "").split()).rstrip(".")


def instruction(brick: str, prompt: str = "", style: str | None = None) -> str:
    """The edit as an instruction clause for the diptych prompt ('make it night', 'the object is now blue')."""
    p, style = _clean(prompt), _clean(style)
    if brick == "STYLE":
        return f"rendered in {style}" if style else (p if p else "restyled")
    if p and p.split()[0].lower() in _VERBS:
        return p
    if brick == "RCM":
        return f"the object is now {p}" if p else "the object has another colour"
    if brick == "INPAINT":
        return f"with the {p} removed" if p else "with the object removed"
    if brick == "CBG":
        return f"with {p} as the background" if p else "with another background"
    return f"with {p}" if p else "edited"


def description(brick: str, prompt: str = "", style: str | None = None) -> str:
    """What fills the mask, as a masked-fill prompt ('a red circle', 'a blue striped background')."""
    p, style = _clean(prompt), _clean(style)
    if brick in ("FILL", "INPAINT"):
        return p  # an object description or a caption; INPAINT's is empty, as in the published release
    if brick == "CBG":
        return _BACKGROUND_LEAD.sub("", p)
    if brick == "STYLE":
        return ", ".join(x for x in (p, style) if x)
    return instruction(brick, prompt, style)


def flux_prompt(brick: str, prompt: str = "", style: str | None = None, mode: str = "diptych") -> str:
    """The FLUX prompt of an edit brick call; ``inpainting.edit_text`` gives the same call for the unet backend."""
    if mode != "diptych":
        return description(brick, prompt, style)
    context = f"{_clean(prompt)}. " if brick == "STYLE" and _clean(prompt) else ""  # STYLE's prompt is a caption
    return DIPTYCH_PREFIX + context + DIPTYCH_RIGHT + instruction(brick, prompt, style)


# --- images ----------------------------------------------------------------------------------------------------
def _resize_rgb(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 HxWx3 -> (h, w) = size."""
    a = np.ascontiguousarray(a[:, :, :3])
    if a.shape[:2] == size:
        return a
    return np.asarray(Image.fromarray(a).resize((size[1], size[0]), Image.Resampling.BICUBIC))


def _resize_mask(m: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Mask -> (h, w) {0, 1}; a working pixel is in the mask if any part of it is (the box filter's coverage)."""
    m = (m > 0).astype(np.uint8) * 255
    if m.shape != size:
        m = np.asarray(Image.fromarray(m).resize((size[1], size[0]), Image.Resampling.BOX))
    return (m > 0).astype(np.uint8)


def _dilate(m: np.ndarray, radius: int) -> np.ndarray:
    if radius < 1 or not m.any():
        return m
    t = torch.from_numpy(m).float()[None, None]
    return F.max_pool2d(t, 2 * radius + 1, stride=1, padding=radius)[0, 0].numpy().astype(np.uint8)


def _reference_half(rgba: np.ndarray, mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A reference object (RGBA) on white, fitted into the mask's box, as the left half of a FILL diptych."""
    h, w = size
    out = np.full((h, w, 3), 255, np.uint8)
    alpha = rgba[:, :, 3] > 0
    rows, cols = np.flatnonzero(alpha.any(1)), np.flatnonzero(alpha.any(0))
    mrows, mcols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if rows.size == 0 or mrows.size == 0:
        return out
    obj = rgba[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    y0, y1, x0, x1 = mrows[0], mrows[-1] + 1, mcols[0], mcols[-1] + 1
    scale = min((y1 - y0) / obj.shape[0], (x1 - x0) / obj.shape[1])
    oh, ow = max(1, round(obj.shape[0] * scale)), max(1, round(obj.shape[1] * scale))
    obj = np.asarray(Image.fromarray(np.ascontiguousarray(obj)).resize((ow, oh), Image.Resampling.BICUBIC))
    oy, ox = y0 + (y1 - y0 - oh) // 2, x0 + (x1 - x0 - ow) // 2
    a = obj[:, :, 3:4].astype(np.float32) / 255
    region = out[oy : oy + oh, ox : ox + ow].astype(np.float32)
    out[oy : oy + oh, ox : ox + ow] = np.rint(a * obj[:, :, :3] + (1 - a) * region).astype(np.uint8)
    return out


@dataclass
class Layout:
    """One edit as the Fill model sees it: the conditioning canvas (masked by ``mask``), the model's mask (0/1),
    an optional start image (strength < 1), the training target, and where the edited image lies in the canvas."""

    mode: str  # "diptych", "reference" (FILL with an RGBA object) or "fill"
    canvas: np.ndarray  # uint8 (h, W, 3)
    mask: np.ndarray  # uint8 (h, W), 1 = generate
    init: np.ndarray | None  # uint8 (h, W, 3) or None
    target: np.ndarray | None  # uint8 (h, W, 3) or None
    x0: int  # the edited image is canvas[:, x0:]
