"""Where the edit bricks INPAINT and POSE start their sampler, and what a POSE prompt asks for.

INPAINT starts from FASTINPAINT's classical fill at a strength set by its difficulty score; POSE starts from the
object turned as its prompt says (the subject and the direction read from the prompt). Pure functions of the call's
inputs, used by the model binding (``models.py``), the unet backend and edit-brick training; apart from
``models.py`` so that file holds the model store and the brick implementations only.
"""

from __future__ import annotations

import re

import numpy as np


def inpaint_strength(score: float) -> float:
    """FASTINPAINT's difficulty score (0 easy .. 1 hard) as INPAINT's denoising strength: an easy hole keeps
    most of the classical fill, a hard one is regenerated. The published brick maps it to 0.7-1.0 over a LaMa
    fill; here the classical fill of a flat background is already close, and measured on the shapes world the
    small UNet loses detail at high strength (held-out PSNR 29.0 dB at 0.2, 25.7 dB at 0.6), so the floor is
    lower."""
    return 0.2 + 0.8 * float(np.clip(score, 0.0, 1.0))


_POSE_TAIL = re.compile(
    r"\s+(?:(?:so|such)\s+(?:that\s+)?(?:it|they)\s+|to\s+|and\s+|(?:should|must|will|would)\s+)?"
    r"(?:point|points|pointing|face|faces|facing|turn|turns|turned|rotate|rotated)\b.*$",
    re.IGNORECASE,
)
_POSE_HEAD = re.compile(
    r"^(?:please\s+)?(?:(?:make|rotate|turn|have|get|let|can)\s+)?(?:(?:the|a|an)\s+)?", re.IGNORECASE
)  # RES is trained on bare expressions ("red triangle")


_DIRECTION = re.compile(r"\b(up|down|left|right)(?:wards?)?\b", re.IGNORECASE)


def pose_direction(prompt: str) -> str | None:
    """The way a POSE prompt asks the object to point (its last up/down/left/right word), or None."""
    found = _DIRECTION.findall(prompt)
    return found[-1].lower() if found else None


def pose_subject(prompt: str) -> str | None:
    """The object a POSE prompt names: 'make the red triangle point left' -> 'red triangle'; None when the
    prompt names none (then POSE edits the whole image)."""
    text = _POSE_TAIL.sub("", _POSE_HEAD.sub("", prompt.strip().rstrip(".?!"))).strip()
    return None if not text or text.lower() in ("it", "them", "this", "that", "everything") else text


# POSE starts from the geometrically turned object and the model redraws what turning got wrong. Measured on the
# shapes world (held-out PSNR in the object's box; copy 12.9, the turn alone 33.6): 0.05 -> 26.5, 0.1 -> 23.8,
# 0.3 -> 20.1 dB. The small UNet's velocity is least accurate near sigma 0, so it starts late; a larger base (flux)
# can take more.
POSE_STRENGTH = 0.05


# Bricks whose sampler starts from a preimage: INPAINT's classical fill, POSE's turned object. (FILL's preimage,
# the image before outpainting, only means something to flux_fill; the unet canvas already carries it.)
PREIMAGE_BRICKS = ("INPAINT", "POSE")


def start_strength(brick: str, preimage, score: float | None = None) -> float | None:
    """Where an edit brick's sampler starts (None: from pure noise): INPAINT from FASTINPAINT's fill at the
    strength its score asks, POSE from the turned object at POSE_STRENGTH."""
    if brick == "INPAINT" and score is not None:
        return inpaint_strength(score)
    if brick == "POSE" and preimage is not None:
        return POSE_STRENGTH
    return None
