"""Function bricks: plain image operations, deterministic and pixel-exact.

Each is called as ``fn(ctx, **inputs)`` and returns ``{output_name: value}``; ``ctx.limits`` bounds
the sizes a brick may allocate. Where the published release had slips (uint8 wrap-around in
INVERSE/COMPOSE, IndexError on an empty mask in BBOX) these versions saturate and handle the edge case.
"""

from __future__ import annotations

import cv2
import numpy as np

from ..workflow.errors import ExecutionError
from ..workflow.limits import DEFAULT_LIMITS, Limits
from ..workflow.values import as_mask


def _limits(ctx) -> Limits:
    return getattr(ctx, "limits", None) or DEFAULT_LIMITS


def _same_size(a: np.ndarray, b: np.ndarray, names: str) -> None:
    if a.shape[:2] != b.shape[:2]:
        raise ExecutionError(f"{names} differ in size: {a.shape[1]}x{a.shape[0]} vs {b.shape[1]}x{b.shape[0]}")


def mask_bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x, y, w, h) of the set pixels of a mask, or None if it is empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)


def object_region(mask: np.ndarray, margin: float = 0.125, min_margin: int = 2) -> np.ndarray | None:
    """The box around a mask's pixels, grown by ``margin`` of its larger side (at least ``min_margin`` px) and
    clipped to the image, as a uint8 mask; None for an empty mask. POSE edits inside it: an object turned in
    place stays within its own box (a shapes-world triangle fills the same box pointing any way)."""
    box = mask_bbox(np.asarray(mask) > 0)
    if box is None:
        return None
    x, y, w, h = box
    grow = max(min_margin, int(round(margin * max(w, h))))
    out = np.zeros(np.asarray(mask).shape[:2], dtype=np.uint8)
    out[max(0, y - grow) : y + h + grow, max(0, x - grow) : x + w + grow] = 255
    return out


TURNS = ("up", "left", "down", "right")  # each a quarter-turn counter-clockwise from the one before


def pointing(mask: np.ndarray, tolerance: float = 0.05) -> str | None:
    """The way an object points: away from its mass centre (a triangle's apex lies opposite the side its
    centroid leans to within its box). None for an empty mask or one that leans neither way."""
    m = np.asarray(mask) > 0
    box = mask_bbox(m)
    if box is None:
        return None
    x, y, w, h = box
    ys, xs = np.nonzero(m)
    dx = (xs.mean() + 0.5 - (x + w / 2)) / w
    dy = (ys.mean() + 0.5 - (y + h / 2)) / h
    if max(abs(dx), abs(dy)) < tolerance:
        return None
    if abs(dy) >= abs(dx):
        return "up" if dy > 0 else "down"
    return "left" if dx > 0 else "right"


def turn_object(image: np.ndarray, mask: np.ndarray, direction: str) -> np.ndarray | None:
    """The image with the masked object turned in quarter-turns about its box to point ``direction`` (stretched
    back to the box, as a shape drawn in that box pointing that way is) over the background FASTINPAINT fills in
    where the object was: the geometric start that POSE's diffusion model refines. None when the object points
    no particular way or ``direction`` is not up, down, left or right."""
    current = pointing(mask)
    if current is None or direction not in TURNS:
        return None
    m = as_mask(mask) > 0
    rgb = np.ascontiguousarray(image[:, :, :3])
    k = (TURNS.index(direction) - TURNS.index(current)) % 4
    if k == 0:
        return rgb.copy()
    x, y, w, h = mask_bbox(m)
    obj = np.rot90(rgb[y : y + h, x : x + w], k)
    keep = np.rot90(m[y : y + h, x : x + w], k).astype(np.uint8)
    if k % 2:
        obj = cv2.resize(np.ascontiguousarray(obj), (w, h), interpolation=cv2.INTER_NEAREST)
        keep = cv2.resize(np.ascontiguousarray(keep), (w, h), interpolation=cv2.INTER_NEAREST)
    out = fastinpaint(None, rgb, np.where(m, 255, 0).astype(np.uint8))["image"].copy()
    region = out[y : y + h, x : x + w]
    region[keep > 0] = obj[keep > 0]
    return out


def inverse(ctx, mask1=None, mask2=None, image1=None, image2=None) -> dict:
    if mask2 is not None:
        m2 = as_mask(mask2) > 0
        if mask1 is None:
            return {"mask": np.where(m2, 0, 255).astype(np.uint8)}
        m1 = as_mask(mask1) > 0
        _same_size(m1, m2, "mask1 and mask2")
        return {"mask": np.where(m1 & ~m2, 255, 0).astype(np.uint8)}
    _same_size(image1, image2, "image1 and image2")
    diff = np.clip(image1[:, :, :3].astype(np.int16) - image2[:, :, :3].astype(np.int16), 0, 255).astype(np.uint8)
    if image1.shape[2] == 4:
        diff = np.dstack([diff, image1[:, :, 3]])
    return {"image": diff}


def compose(ctx, mask1=None, mask2=None, image1=None, image2=None) -> dict:
    if mask1 is not None:
        m1, m2 = as_mask(mask1), as_mask(mask2)
        _same_size(m1, m2, "mask1 and mask2")
        return {"mask": np.maximum(m1, m2)}
    _same_size(image1, image2, "image1 and image2")
    if image2.shape[2] == 3:  # an opaque image covers the first one entirely
        top = image2
        if image1.shape[2] == 4:
            top = np.dstack([image2, np.full(image2.shape[:2], 255, np.uint8)])
        return {"image": top.copy()}
    alpha = image2[:, :, 3:4].astype(np.uint16)
    base = image1[:, :, :3].astype(np.uint16)
    blended = ((base * (255 - alpha) + image2[:, :, :3].astype(np.uint16) * alpha + 127) // 255).astype(np.uint8)
    if image1.shape[2] == 4:
        blended = np.dstack([blended, np.maximum(image1[:, :, 3], image2[:, :, 3])])
    return {"image": blended}


def _largest_component_bbox(binary: np.ndarray) -> tuple[int, int, int, int] | None:
    contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return None
    x, y, w, h = cv2.boundingRect(max(contours, key=cv2.contourArea))
    return int(x), int(y), int(w), int(h)


def scaled_box(box: tuple[int, int, int, int], ratio: float) -> tuple[int, int, int, int]:
    """The published RESIZE geometry: scale (w, h), keep the bottom edge and the horizontal centre."""
    x, y, w, h = box
    new_w, new_h = max(1, int(w * ratio)), max(1, int(h * ratio))
    return x + (w - new_w) // 2, y + h - new_h, new_w, new_h


def _place(canvas: np.ndarray, patch: np.ndarray, x: int, y: int) -> None:
    """Paste ``patch`` with its top-left at (x, y), clipped to the canvas on every side."""
    H, W = canvas.shape[:2]
    h, w = patch.shape[:2]
    x0, y0 = max(0, x), max(0, y)
    x1, y1 = min(W, x + w), min(H, y + h)
    if x1 > x0 and y1 > y0:
        canvas[y0:y1, x0:x1] = patch[y0 - y : y1 - y, x0 - x : x1 - x]


def _scale_object(ctx, array: np.ndarray, binary: np.ndarray, ratio: float, interpolation: int):
    box = _largest_component_bbox(binary)
    if box is None:
        return array.copy()
    x, y, w, h = box
    nx, ny, nw, nh = scaled_box(box, ratio)
    _limits(ctx).check_size(nh, nw, "the resized object")
    patch = cv2.resize(np.ascontiguousarray(array[y : y + h, x : x + w]), (nw, nh), interpolation=interpolation)
    if patch.ndim < array.ndim:
        patch = patch[:, :, None]
    out = np.zeros_like(array)
    _place(out, patch, nx, ny)
    return out


def resize(ctx, mask=None, image=None, ratio=1.0) -> dict:
    ratio = float(ratio)
    if mask is not None:
        m = as_mask(mask)
        return {"mask": _scale_object(ctx, m, m, ratio, cv2.INTER_NEAREST)}
    if image.shape[2] == 4:  # a cut-out: scale its largest object
        binary = np.where(image[:, :, 3] > 0, 255, 0).astype(np.uint8)
        interp = cv2.INTER_AREA if ratio < 1 else cv2.INTER_LINEAR
        return {"image": _scale_object(ctx, image, binary, ratio, interp)}
    H, W = image.shape[:2]
    zh, zw = max(1, int(round(H * ratio))), max(1, int(round(W * ratio)))
    _limits(ctx).check_size(zh, zw, "the zoomed image")
    zoomed = cv2.resize(image, (zw, zh), interpolation=cv2.INTER_AREA if ratio < 1 else cv2.INTER_LINEAR)
    out = np.zeros_like(image)
    _place(out, zoomed, (W - zw) // 2, (H - zh) // 2)
    return {"image": out}


def bbox(ctx, mask) -> dict:
    m = as_mask(mask)
    out = np.zeros_like(m)
    box = mask_bbox(m > 0)
    if box is not None:
        x, y, w, h = box
        out[y : y + h, x : x + w] = 255
    return {"mask": out}


def fill_difficulty(image: np.ndarray, mask: np.ndarray) -> float:
    """How hard a hole is to fill, in [0, 1]: large holes and busy surroundings are hard.

    max(area / 40% of the image, colour std of a 3-pixel ring around the hole / 64), clipped to 1.
    An empty mask scores 0. (The published brick outputs a denoise strength in 0.7-1.0 from similar cues.)
    """
    m = mask > 0
    if not m.any():
        return 0.0
    area = float(m.mean())
    ring = cv2.dilate(m.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool) & ~m
    texture = float(image[ring][:, :3].std(axis=0).mean()) if ring.any() else 0.0
    return float(np.clip(max(area / 0.4, texture / 64.0), 0.0, 1.0))


def classical_fill(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The image (RGB) with the mask, grown by ~1% of the image side, filled from its surroundings (Telea)."""
    m = (np.asarray(mask) > 0).astype(np.uint8)
    rgb = np.ascontiguousarray(image[:, :, :3])
    radius = max(1, round(max(rgb.shape[:2]) / 100))
    hole = cv2.dilate(m, np.ones((3, 3), np.uint8), iterations=radius)
    return cv2.inpaint(rgb, hole, 3, cv2.INPAINT_TELEA)


def fastinpaint(ctx, image, mask) -> dict:
    m = as_mask(mask)
    _same_size(image, m, "image and mask")
    return {"image": classical_fill(image, m), "score": fill_difficulty(image[:, :, :3], m)}


def side_extensions(
    width: int, height: int, left: float, right: float, top: float, bottom: float
) -> tuple[int, int, int, int]:
    """Pixels CMI-PRED's ratios add on each side (left, right, top, bottom), as the published brick does:
    a ratio of 1 keeps a side and r adds (r - 1) times the image width or height; four equal ratios
    r != 1 mean "r times in total", so each side then gets 0.5 r + 0.5."""
    if left == right == top == bottom and left != 1:
        left = right = top = bottom = 0.5 * left + 0.5
    return int(width * (left - 1)), int(width * (right - 1)), int(height * (top - 1)), int(height * (bottom - 1))


def expand_canvas(
    ctx, image: np.ndarray, left: float, right: float, top: float, bottom: float
) -> tuple[np.ndarray, np.ndarray]:
    """(canvas, mask): the image on a larger black canvas and the mask (255) of the new area."""
    H, W = image.shape[:2]
    le, re, te, be = side_extensions(W, H, left, right, top, bottom)
    if min(le, re, te, be) < 0:
        raise ExecutionError("expansion ratios below 1 would crop the image")
    _limits(ctx).check_size(H + te + be, W + le + re, "the expanded canvas")
    canvas = np.zeros((H + te + be, W + le + re, image.shape[2]), dtype=np.uint8)
    canvas[te : te + H, le : le + W] = image
    mask = np.full(canvas.shape[:2], 255, dtype=np.uint8)
    mask[te : te + H, le : le + W] = 0
    return canvas, mask


def brightness(ctx, image, ratio) -> dict:
    factor = 2.0 * float(np.clip(ratio, 0.0, 1.0))
    rgb = np.clip(np.rint(image[:, :, :3].astype(np.float32) * factor), 0, 255).astype(np.uint8)
    if image.shape[2] == 4:
        rgb = np.dstack([rgb, image[:, :, 3]])
    return {"image": rgb}
