"""One benchmark sample (``BenchmarkItem``, its image decoded only when asked) and the benchmarks' published
vocabulary: GEdit-Bench's task types, languages and columns, ImgEdit-Bench's edit types, and GEdit-Bench's sizing of
the editor's input. Shared by the readers (``benchmarks.py``, which re-exports these names), the fixture writers
and the judges."""

from __future__ import annotations

import io
import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from ..imageio import ImageReadError, load_image, to_rgb_array
from ..workflow.values import rgb

GEDIT_TASK_TYPES = (
    "background_change",
    "color_alter",
    "material_alter",
    "motion_change",
    "ps_human",
    "style_change",
    "subject-add",
    "subject-remove",
    "subject-replace",
    "text_change",
    "tone_transfer",
)
GEDIT_LANGUAGES = ("en", "cn")
# Pixels of the editor's input in the published GEdit-Bench evaluation (input_image_raw resized to it).
GEDIT_EDIT_AREA = 512 * 512
GEDIT_COLUMNS = (
    "task_type",
    "key",
    "instruction",
    "instruction_language",
    "input_image",
    "input_image_raw",
    "Intersection_exist",
)


# The order of ImgEdit's published per-category table; "compose" is reported as "hybrid".
IMGEDIT_TYPES = ("add", "adjust", "extract", "replace", "remove", "background", "style", "hybrid", "action")
# basic_edit.json said "alter" in its first release (May 2025) and "adjust" since (June 2025).
IMGEDIT_ALIASES = {"compose": "hybrid", "alter": "adjust"}


ImageSource = Callable[[], Any] | str | os.PathLike | bytes


class BenchmarkLayoutError(ValueError):
    """A benchmark copy that is not in the published layout; the message names the path and what is wrong."""


@dataclass
class BenchmarkItem:
    """One benchmark sample. ``image`` is a path, encoded bytes, or a zero-argument callable returning either
    (or an {bytes, path} struct, a PIL image or an array); nothing is decoded before ``load_image``."""

    benchmark: str
    key: str
    instruction: str
    task_type: str
    language: str
    image: ImageSource = field(repr=False)
    extra: dict = field(default_factory=dict)
    # The image the judge compares the edit with, where the benchmark's evaluation uses another one than the
    # editor's input (GEdit-Bench: the editor gets input_image_raw, the judge sees input_image); None: ``image``.
    judge_image: ImageSource | None = field(default=None, repr=False)
    # The editor's input resized as the benchmark's own preparation does (GEdit-Bench: about 512x512 pixels).
    edit_area: int | None = None

    def load_image(self) -> np.ndarray:
        """The editor's input as HxWx3 uint8 RGB; ImageReadError naming the item if it cannot be read."""
        image = self._load(self.image)
        return image if self.edit_area is None else resize_to_area(image, self.edit_area)

    def load_judge_image(self) -> np.ndarray:
        """The image the judge compares the edit with (the editor's input where the benchmark has no other)."""
        return self.load_image() if self.judge_image is None else self._load(self.judge_image)

    def _load(self, source: ImageSource) -> np.ndarray:
        try:
            value = source() if callable(source) else source
            return _decode(value)
        except ImageReadError as e:
            raise ImageReadError(f"{self.benchmark} item {self.key!r}: {e}") from None
        except (OSError, ValueError, KeyError, IndexError) as e:
            raise ImageReadError(
                f"{self.benchmark} item {self.key!r}: cannot read its image ({type(e).__name__}: {e})"
            ) from None


def area_dimensions(area: int, aspect: float, multiple: int = 32) -> tuple[int, int]:
    """(width, height) of about ``area`` pixels at ``aspect`` (width / height), both multiples of ``multiple``:
    how GEdit-Bench sizes the editor's input (its generate_image_example.py, 512 * 512 pixels)."""
    width = round(math.sqrt(area * aspect) / multiple) * multiple
    height = round(math.sqrt(area * aspect) / aspect / multiple) * multiple
    # One step of the width towards the area, as the published sizing does after rounding.
    if width * height < area:
        width += multiple
    elif width * height > area:
        width -= multiple
    return max(multiple, width), max(multiple, height)


def resize_to_area(image: np.ndarray, area: int) -> np.ndarray:
    """``image`` resized (bicubic, as PIL's default for RGB) to ``area_dimensions`` of its aspect."""
    h, w = image.shape[:2]
    size = area_dimensions(area, w / h)
    if size == (w, h):
        return image
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BICUBIC))


def _decode(value: Any) -> np.ndarray:
    if isinstance(value, dict):  # a datasets Image struct: bytes win, else a path
        if value.get("bytes"):
            return _decode(value["bytes"])
        if value.get("path"):
            return _decode(value["path"])
        raise ImageReadError("image struct has neither bytes nor path")
    if isinstance(value, (bytes, bytearray, memoryview)):
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            try:
                img = Image.open(io.BytesIO(bytes(value)))
                img.load()
            except Exception as e:  # PIL raises many types for corrupt data
                raise ImageReadError(f"embedded image bytes are not readable ({type(e).__name__}: {e})") from None
        return to_rgb_array(img)
    if isinstance(value, (str, os.PathLike)):
        return load_image(value)
    if isinstance(value, Image.Image):
        return to_rgb_array(value)
    if isinstance(value, np.ndarray) and value.ndim == 3 and value.shape[2] in (3, 4):
        return np.ascontiguousarray(rgb(value.astype(np.uint8)))
    raise ImageReadError(f"unsupported image value of type {type(value).__name__}")
