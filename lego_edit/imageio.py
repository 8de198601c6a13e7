"""Reading user images and masks robustly, and writing files atomically.

Photos in the wild come EXIF-rotated, 16-bit, palette, grayscale, RGBA, truncated or empty. Every
reader here returns RGB uint8 (or a 0/255 mask) or raises ImageReadError naming the file and the reason.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .workflow.errors import LimitExceededError
from .workflow.limits import DEFAULT_LIMITS, Limits
from .workflow.values import as_mask, rgb

# What a photo folder holds. An animated GIF (or a multi-page TIFF) is read as its first frame.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff")


class ImageReadError(ValueError):
    """An image or mask file that cannot be used, with the reason."""


def _open(path: Path, limits: Limits, data: bytes | None = None) -> Image.Image:
    """The image at ``path``, or encoded in ``data`` (an image embedded in a dataset; ``path`` then names it)."""
    if data is None and not path.is_file():
        raise ImageReadError(f"{path}: no such file")
    if (path.stat().st_size if data is None else len(data)) == 0:
        raise ImageReadError(f"{path}: empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(path if data is None else io.BytesIO(data))
            try:
                limits.check_size(img.height, img.width, what=f"{path.name}")
            except LimitExceededError as e:
                raise ImageReadError(f"{path}: {e}") from None
            img.load()
    except ImageReadError:
        raise
    except (
        UnidentifiedImageError,
        OSError,
        SyntaxError,
        ValueError,
        Image.DecompressionBombWarning,
        Image.DecompressionBombError,
    ) as e:
        raise ImageReadError(f"{path}: not a readable image ({type(e).__name__}: {e})") from None
    return img


def to_rgb_array(img: Image.Image) -> np.ndarray:
    """Any PIL image -> RGB uint8, EXIF orientation applied, transparency composited on white."""
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img).astype(np.uint32)
        arr = (arr >> 8) if arr.max(initial=0) > 255 else arr
        img = Image.fromarray(arr.astype(np.uint8), "L")
    if img.mode == "F":
        img = Image.fromarray(np.clip(np.asarray(img), 0, 255).astype(np.uint8), "L")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa"):
        return rgb(np.asarray(img.convert("RGBA")))
    return np.asarray(img.convert("RGB")).copy()


def load_image(
    path: str | os.PathLike, limits: Limits = DEFAULT_LIMITS, min_side: int = 8, data: bytes | None = None
) -> np.ndarray:
    """An image file (or its encoded ``data``, named by ``path``) -> HxWx3 uint8 RGB."""
    path = Path(path)
    img = _open(path, limits, data)
    arr = to_rgb_array(img)
    if min(arr.shape[:2]) < min_side:
        raise ImageReadError(
            f"{path}: image is {arr.shape[1]}x{arr.shape[0]}, smaller than the {min_side}-pixel minimum side"
        )
    return arr


def load_mask(
    path: str | os.PathLike,
    size: tuple[int, int] | None = None,
    limits: Limits = DEFAULT_LIMITS,
    data: bytes | None = None,
) -> np.ndarray:
    """A mask file -> HxW uint8 0/255. Uses the alpha channel when it carries the mask, else luminance.

    ``size`` is (width, height) of the image the mask belongs to; a mask of another size is resized
    with nearest-neighbour sampling.
    """
    path = Path(path)
    img = ImageOps.exif_transpose(_open(path, limits, data))
    if img.mode in ("RGBA", "LA") and np.asarray(img.getchannel("A")).min() < 255:
        arr = np.asarray(img.getchannel("A"))
    else:
        arr = np.asarray(to_rgb_array(img).mean(axis=2))
    mask = as_mask(arr > 127)
    if size is not None and (mask.shape[1], mask.shape[0]) != tuple(size):
        mask = np.asarray(Image.fromarray(mask).resize(tuple(size), Image.NEAREST))
    return mask


def encode_png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write to a temp file in the same folder, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: object, indent: int | None = 2) -> None:
    atomic_write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False, default=str) + "\n")


def save_image(path: str | os.PathLike, array: np.ndarray) -> None:
    atomic_write_bytes(path, encode_png(array))
