"""Synthetic copies of GEdit-Bench and ImgEdit-Bench Basic in their published layouts, for tests and the tiny
config: a few generated pictures per task type, with instructions in the benchmarks' wording. Kept apart from the
readers in ``benchmarks.py`` (which re-exports the writers), so that file holds what reads a real copy."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .benchmark_items import GEDIT_COLUMNS, GEDIT_TASK_TYPES

# Fixture instructions, one per GEdit task type in GEDIT_TASK_TYPES order.
_EN = dict(
    zip(
        GEDIT_TASK_TYPES,
        (
            "Change the background to a sandy beach.",
            "Make the square green.",
            "Make the circle look like polished wood.",
            "Make the figure raise its arm.",
            "Smooth the skin of the person.",
            "Turn the picture into a watercolor painting.",
            "Add a small red ball on the left.",
            "Remove the circle.",
            "Replace the square with a triangle.",
            "Change the sign's text to OPEN.",
            "Make it look like sunset.",
        ),
    )
)
_CN = dict(
    zip(
        GEDIT_TASK_TYPES,
        (
            "把背景换成沙滩。",
            "把方块变成绿色。",
            "把圆形变成抛光的木头质感。",
            "让人物举起手臂。",
            "让人物的皮肤更光滑。",
            "把图片变成水彩画风格。",
            "在左边加一个小红球。",
            "移除圆形。",
            "把方块换成三角形。",
            "把招牌上的文字改成OPEN。",
            "让画面看起来像日落时分。",
        ),
    )
)
_IMGEDIT_PROMPTS = {
    "add": "Add a small yellow star in the top right corner.",
    "adjust": "Change the square's colour to blue.",
    "extract": "Extract the circle in the image.",
    "replace": "Replace the circle with a square.",
    "remove": "Remove the square from the image.",
    "background": "Change the background to a night sky.",
    "style": "Transfer the image into a pencil-sketch style.",
    "action": "Make the figure wave.",
    "compose": "Remove the circle and make the background grey.",
}
_IMGEDIT_FOLDERS = {
    "add": ["for_add"],
    "style": ["style"],
    "extract": ["clothes", "animal"],
    "action": ["human"],
    "compose": ["compose/human", "compose/objects"],
}
_IMGEDIT_OTHER = ["animal", "daily object", "transport", "architecture"]


def synthetic_image(rng: np.random.Generator, width: int = 64, height: int = 64) -> np.ndarray:
    """A small RGB picture: a plain background with a rectangle and an ellipse in random colours."""
    img = Image.new("RGB", (width, height), tuple(int(v) for v in rng.integers(0, 256, 3)))
    draw = ImageDraw.Draw(img)
    for shape in ("rectangle", "ellipse"):
        x0, y0 = int(rng.integers(0, width // 2)), int(rng.integers(0, height // 2))
        x1, y1 = x0 + int(rng.integers(width // 6, width // 2)), y0 + int(rng.integers(height // 6, height // 2))
        getattr(draw, shape)([x0, y0, x1, y1], fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    return np.asarray(img)


def _encode(array: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buf.getvalue()


@contextlib.contextmanager
def _quiet_datasets():
    import datasets

    was_disabled = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        yield datasets
    finally:
        if not was_disabled:
            datasets.enable_progress_bars()


def write_gedit_fixture(
    out_dir: str | os.PathLike, n_per_type: int = 1, layout: str = "parquet", seed: int = 0
) -> Path:
    """A synthetic GEdit-Bench copy: 11 types x ``n_per_type`` samples x (en, cn), published columns.

    ``layout="parquet"``: ``data/train-0000i-of-00002.parquet`` (image structs, small row groups);
    ``layout="arrow"``: ``DatasetDict({"train": ...}).save_to_disk``. Returns the path to give ``read_gedit``.
    ``input_image`` is 64x48, ``input_image_raw`` the same picture at 128x96; both languages share key and image.
    """
    if layout not in ("parquet", "arrow"):
        raise ValueError(f"layout must be 'parquet' or 'arrow', not {layout!r}")
    rng = np.random.default_rng(seed)
    rows: dict[str, list] = {c: [] for c in GEDIT_COLUMNS}
    for task in GEDIT_TASK_TYPES:
        for j in range(n_per_type):
            raw = synthetic_image(rng, 128, 96)
            small = np.asarray(Image.fromarray(raw).resize((64, 48), Image.Resampling.BICUBIC))
            key = hashlib.md5(f"{seed}/{task}/{j}".encode()).hexdigest()
            inter = bool(rng.integers(0, 2))
            for lang, text in (("en", _EN), ("cn", _CN)):
                for col, val in (
                    ("task_type", task),
                    ("key", key),
                    ("instruction", text[task]),
                    ("instruction_language", lang),
                    ("Intersection_exist", inter),
                    ("input_image", {"bytes": _encode(small), "path": None}),
                    ("input_image_raw", {"bytes": _encode(raw), "path": None}),
                ):
                    rows[col].append(val)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with _quiet_datasets() as datasets:
        feats = datasets.Features(
            {
                c: datasets.Image()
                if c.startswith("input_image")
                else datasets.Value("bool" if c == "Intersection_exist" else "string")
                for c in GEDIT_COLUMNS
            }
        )
        ds = datasets.Dataset.from_dict(rows, features=feats)
        if layout == "arrow":
            datasets.DatasetDict({"train": ds}).save_to_disk(str(out))
        else:
            (out / "data").mkdir(exist_ok=True)
            for i in range(2):
                ds.shard(2, i, contiguous=True).to_parquet(
                    str(out / "data" / f"train-{i:05d}-of-00002.parquet"), batch_size=8
                )
    return out


def write_imgedit_fixture(out_dir: str | os.PathLike, n_per_type: int = 1, seed: int = 0) -> tuple[Path, Path]:
    """A synthetic ImgEdit-Bench Basic copy: ``basic_edit.json`` and ``images/<category>/<name>.jpg``.

    Nine edit types x ``n_per_type``, raw type names as published ("compose", "adjust"), numeric string keys in
    shuffled order, folders such as "daily object" and "compose/human" as in the real set.
    Returns (json_path, image_root).
    """
    rng = np.random.default_rng(seed)
    out = Path(out_dir)
    root = out / "images"
    types = ["add", "adjust", "extract", "replace", "remove", "background", "style", "action", "compose"]
    ids = [str(v) for v in rng.permutation(np.arange(1, 1 + 20 * len(types) * n_per_type))[: len(types) * n_per_type]]
    entries, k, other = {}, 0, 0
    for t in types:
        for j in range(n_per_type):
            folders = _IMGEDIT_FOLDERS.get(t)
            if folders is None:
                folder, other = _IMGEDIT_OTHER[other % len(_IMGEDIT_OTHER)], other + 1
            else:
                folder = folders[j % len(folders)]
            name = f"{j + 1}.jpg" if t == "compose" else f"{int(rng.integers(0, 10**9)):09d}.jpg"
            rel = f"{folder}/{name}"
            (root / folder).mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(_encode(synthetic_image(rng, 64, 64), "JPEG"))
            entries[ids[k]] = {"id": rel, "prompt": _IMGEDIT_PROMPTS[t], "edit_type": t}
            k += 1
    json_path = out / "basic_edit.json"
    json_path.write_text(json.dumps(entries, indent=4, ensure_ascii=False), encoding="utf-8")
    return json_path, root
