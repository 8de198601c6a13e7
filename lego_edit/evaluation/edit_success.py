"""Edit success against the exact GT target: what the evaluation counts, per item, for every Builder row.

An edit *succeeds* when its output removes at least half of the squared error that doing nothing leaves:
``MSE(output, target) <= SUCCESS_SHARE * MSE(unedited, target)``. A workflow that did not parse, validate or run
counts as the unedited image (never dropped). Each category is compared on its own terms:

  * same-size edits: RGB pixels.
  * extract: the target is an RGBA cut-out. Images are compared as premultiplied RGBA (colour times alpha, plus
    alpha), so an output must really leave the rest transparent; an opaque image has alpha 255 everywhere. (A
    composite on white would let the unedited image pass on a white background.)
  * outpaint (or any output of another size than the target): the image is placed on the target's canvas where
    it matches the target best (at a corner, an edge's middle or the centre), the rest of the canvas white, as
    a cut-out is shown. The unedited input therefore keeps its old area exactly and scores only the new area.

PSNR and the edited-region IoU are measured in the same frame, so the three figures agree on what an item is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .metrics import psnr_from_mse

SUCCESS_SHARE = 0.5  # the output must remove at least half of the unedited image's squared error
REGION_TOLERANCE = 8  # a channel differing by more than this marks a pixel as changed (as critic_images does)
DEFINITION = (
    "edit success: the output removes at least half of the unedited input's squared error to the exact "
    "GT target (MSE(output, target) <= 0.5 MSE(input, target)); a failed workflow counts as the unedited "
    "input; extract is compared as premultiplied RGBA; an output of another size (outpaint) is placed on "
    "the target's canvas where it matches best, the rest white"
)


@dataclass
class EditScore:
    success: bool
    psnr: float  # output vs target, in the comparison frame
    psnr_input: float  # the unedited input vs target, same frame
    error_ratio: float  # MSE(output) / MSE(input); < 0.5 is a success
    region_iou: float | None  # changed pixels (vs the input) of output and target; None if the target changed none

    def as_row(self) -> dict:
        return {
            "success": self.success,
            "psnr": self.psnr,
            "psnr_input": self.psnr_input,
            "error_ratio": self.error_ratio,
            "region_iou": self.region_iou,
        }


def load_target(path: str | Path) -> np.ndarray:
    """A GT target as stored: RGB, or RGBA for a cut-out (``imageio.load_image`` would composite it away)."""
    from PIL import Image

    with Image.open(path) as img:
        return np.asarray(img.convert("RGBA") if "A" in img.getbands() else img.convert("RGB"))


def _premultiplied(img: np.ndarray, rgba: bool) -> np.ndarray:
    """float HxWxC: RGB, or premultiplied RGBA (an RGB image is opaque) when comparing cut-outs."""
    a = img.astype(np.float64)
    if not rgba:
        if img.shape[2] == 4:  # an RGBA output where the target is RGB: composite on white
            alpha = a[:, :, 3:4] / 255
            return a[:, :, :3] * alpha + 255 * (1 - alpha)
        return a
    if img.shape[2] == 3:
        return np.dstack([a, np.full(a.shape[:2], 255.0)])
    alpha = a[:, :, 3:4] / 255
    return np.dstack([a[:, :, :3] * alpha, a[:, :, 3]])


def _offsets(inner: int, outer: int) -> list[int]:
    gap = outer - inner
    return sorted({0, gap // 2, gap}) if gap else [0]


def in_frame(img: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``img`` (float, the target's channels) on the target's canvas: placed where it matches the target best among
    corner, edge-middle and centre positions; uncovered pixels white (and opaque), parts outside cut off."""
    H, W, C = target.shape
    h, w = img.shape[:2]
    if (h, w) == (H, W):
        return img
    best, best_err = None, math.inf
    for dy in _offsets(h, H) if h <= H else [-o for o in _offsets(H, h)]:
        for dx in _offsets(w, W) if w <= W else [-o for o in _offsets(W, w)]:
            canvas = np.full((H, W, C), 255.0)
            y0, x0 = max(0, dy), max(0, dx)
            y1, x1 = min(H, dy + h), min(W, dx + w)
            canvas[y0:y1, x0:x1] = img[y0 - dy : y1 - dy, x0 - dx : x1 - dx]
            err = float(((canvas[y0:y1, x0:x1] - target[y0:y1, x0:x1]) ** 2).mean())
            if err < best_err:
                best, best_err = canvas, err
    return best


def _mse(a: np.ndarray, b: np.ndarray) -> float:
    return float(((a - b) ** 2).mean())


def score_edit(source: np.ndarray, output: np.ndarray | None, target: np.ndarray) -> EditScore:
    """Score one item; ``output`` None (the workflow failed) counts as the unedited ``source``."""
    rgba = target.ndim == 3 and target.shape[2] == 4
    tgt = _premultiplied(target, rgba)
    ref = in_frame(_premultiplied(source, rgba), tgt)
    out = ref if output is None else in_frame(_premultiplied(output, rgba), tgt)
    mse_out, mse_ref = _mse(out, tgt), _mse(ref, tgt)
    want = np.abs(tgt - ref).max(axis=2) > REGION_TOLERANCE
    got = np.abs(out - ref).max(axis=2) > REGION_TOLERANCE
    iou = float((want & got).sum() / (want | got).sum()) if want.any() else None
    ratio = mse_out / mse_ref if mse_ref > 0 else (0.0 if mse_out == 0 else math.inf)
    return EditScore(
        success=mse_out <= SUCCESS_SHARE * mse_ref,
        psnr=psnr_from_mse(mse_out),
        psnr_input=psnr_from_mse(mse_ref),
        error_ratio=ratio,
        region_iou=iou,
    )
