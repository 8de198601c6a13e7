"""Image metrics: PSNR inside/outside a mask, mask and box IoU, caption token F1 (edit success against a GT
target, with its PSNR and changed-region IoU, is in ``edit_success``).

All operate on uint8 arrays; RGBA cut-outs are first composited on white (as the published release shows
them), so an extraction can be compared with its target.
"""

from __future__ import annotations

import math
import re
from collections import Counter

import numpy as np

from ..workflow.values import rgb

MAX_PSNR = 60.0  # identical pixels give this instead of infinity, so means stay finite


def _rgb_float(a: np.ndarray) -> np.ndarray:
    return rgb(a).astype(np.float64)


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float | None:
    """PSNR (dB) between two images, over the mask's pixels if given; None if the mask is empty or the sizes
    differ."""
    if a.shape[:2] != b.shape[:2]:
        return None
    diff = (_rgb_float(a) - _rgb_float(b)) ** 2
    if mask is not None:
        m = mask > 0
        if not m.any():
            return None
        diff = diff[m]
    return psnr_from_mse(float(diff.mean()))


def psnr_from_mse(mse: float) -> float:
    """PSNR (dB) of 8-bit images with mean squared error ``mse``, capped at MAX_PSNR."""
    return MAX_PSNR if mse == 0 else min(MAX_PSNR, 10 * math.log10(255.0**2 / mse))


def ordering_agreement(quality, scores, min_gap: float) -> tuple[int, int]:
    """Over the pairs of one instruction's outputs whose ``quality`` (PSNR to the GT target) differs by more than
    ``min_gap``: (pairs that ``scores`` orders the same way, pairs). A tie in the score counts as a disagreement."""
    agree = pairs = 0
    for i in range(len(quality)):
        for j in range(i + 1, len(quality)):
            if abs(quality[i] - quality[j]) > min_gap:
                pairs += 1
                agree += bool((quality[i] - quality[j]) * (scores[i] - scores[j]) > 0)
    return agree, pairs


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    p, t = a > 0, b > 0
    union = (p | t).sum()
    return 1.0 if union == 0 else float((p & t).sum() / union)


def box_iou(a, b) -> float:
    """IoU of two inclusive pixel boxes [x1, y1, x2, y2]."""
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]) + 1)
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]) + 1)
    inter = ix * iy
    area = lambda r: max(0, r[2] - r[0] + 1) * max(0, r[3] - r[1] + 1)  # noqa: E731
    union = area(a) + area(b) - inter
    return 0.0 if union <= 0 else inter / union


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD-style token F1 between two captions (lower-cased words and numbers)."""
    p = re.findall(r"[a-z0-9]+", prediction.lower())
    r = re.findall(r"[a-z0-9]+", reference.lower())
    if not p or not r:
        return float(p == r)
    common = sum((Counter(p) & Counter(r)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(r)
    return 2 * precision * recall / (precision + recall)
