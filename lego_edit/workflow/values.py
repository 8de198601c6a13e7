"""The four value types of the workflow language and their runtime representation.

Image: ``uint8`` array HxWx3 (RGB), or HxWx4 (RGBA) for a cut-out object such as RES's ``image`` output.
Mask:  ``uint8`` array HxW holding 0 or 255 (bool arrays are accepted and converted).
Str:   ``str``.
Float: ``float`` (ints are accepted and converted; bools are not numbers here).
"""

from __future__ import annotations

import math
from enum import StrEnum

import numpy as np


class Kind(StrEnum):
    IMAGE = "Image"
    MASK = "Mask"
    STR = "Str"
    FLOAT = "Float"

    def __str__(self) -> str:
        return self.value


def is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def as_mask(value: np.ndarray) -> np.ndarray:
    """Normalise a mask-like array (bool, 0/1, 0/255, HxWx1) to uint8 0/255."""
    arr = np.asarray(value)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim != 2:
        raise TypeError(f"a Mask must be a 2-D array, got shape {arr.shape}")
    if arr.dtype == bool:
        return arr.view(np.uint8) * np.uint8(255)
    if arr.dtype != np.uint8:
        arr = np.asarray(arr)
        if not np.issubdtype(arr.dtype, np.number):
            raise TypeError(f"a Mask must be numeric, got dtype {arr.dtype}")
        hi = float(arr.max()) if arr.size else 0.0
        arr = (arr > (0.5 if hi <= 1.0 else 127)).astype(np.uint8) * 255
        return arr
    hi = int(arr.max()) if arr.size else 0
    # 0/1 or 0/255; comparing then scaling a bool view is ~6x faster than np.where on large masks.
    return (arr > (0 if hi <= 1 else 127)).view(np.uint8) * np.uint8(255)


def rgb(image: np.ndarray, background: int = 255) -> np.ndarray:
    """An Image as RGB: RGBA cut-outs are composited onto a plain background (white by default)."""
    if image.ndim == 3 and image.shape[2] == 4:
        alpha = image[:, :, 3:4].astype(np.uint16)
        out = (image[:, :, :3].astype(np.uint16) * alpha + background * (255 - alpha) + 127) // 255
        return out.astype(np.uint8)
    return image


def check_value(kind: Kind, value: object, what: str = "value") -> object:
    """Check (and normalise) a runtime value of the given kind; raise TypeError/ValueError naming ``what``."""
    if kind is Kind.IMAGE:
        if not isinstance(value, np.ndarray) or value.dtype != np.uint8:
            raise TypeError(f"{what} must be a uint8 image array, got {type(value).__name__}")
        if value.ndim != 3 or value.shape[2] not in (3, 4) or value.shape[0] < 1 or value.shape[1] < 1:
            raise TypeError(f"{what} must be HxWx3 (RGB) or HxWx4 (RGBA), got shape {value.shape}")
        return value
    if kind is Kind.MASK:
        if not isinstance(value, np.ndarray):
            raise TypeError(f"{what} must be a mask array, got {type(value).__name__}")
        return as_mask(value)
    if kind is Kind.STR:
        if not isinstance(value, str):
            raise TypeError(f"{what} must be a string, got {type(value).__name__}")
        return value
    if kind is Kind.FLOAT:
        if not is_number(value) or not math.isfinite(float(value)):
            raise TypeError(f"{what} must be a finite number, got {value!r}")
        return float(value)
    raise TypeError(f"unknown kind {kind!r}")


def kind_of(value: object) -> Kind | None:
    """The kind a runtime value has, or None if it is none of the four."""
    if isinstance(value, np.ndarray):
        if value.ndim == 3 and value.shape[2] in (3, 4):
            return Kind.IMAGE
        if value.ndim == 2:
            return Kind.MASK
        return None
    if isinstance(value, str):
        return Kind.STR
    if is_number(value):
        return Kind.FLOAT
    return None
