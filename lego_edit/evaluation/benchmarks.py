"""Readers for the public editing benchmarks, from local copies in their published layouts.

GEdit-Bench (stepfun-ai/GEdit-Bench): a Hugging Face dataset, read from a ``save_to_disk`` folder, loose ``.arrow``
files, or the parquet export. ImgEdit-Bench Basic (PKU-YuanGroup/ImgEdit): ``basic_edit.json`` plus an image root.
Images are decoded only when ``BenchmarkItem.load_image`` is called, so 1,212 rows cost only their metadata.
The fixture writers produce small synthetic copies in exactly these layouts for tests and the tiny config.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import math
import os
import re
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

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
_GEDIT_META = ("task_type", "key", "instruction", "instruction_language", "Intersection_exist")
# The order of ImgEdit's published per-category table; "compose" is reported as "hybrid".
IMGEDIT_TYPES = ("add", "adjust", "extract", "replace", "remove", "background", "style", "hybrid", "action")
# basic_edit.json said "alter" in its first release (May 2025) and "adjust" since (June 2025).
IMGEDIT_ALIASES = {"compose": "hybrid", "alter": "adjust"}
_SAFE_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

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


# ---------------------------------------------------------------- lazy table cells
@dataclass(frozen=True)
class _TableCell:
    """One image cell of an arrow/parquet table, re-opened on demand (picklable, so items cross processes)."""

    kind: str  # "disk" (save_to_disk folder), "arrow" (one .arrow file) or "parquet"
    source: str
    part: str | int | None  # the split for "disk", the row group for "parquet"
    row: int
    column: str

    def __call__(self) -> Any:
        value = _open_column(self.kind, self.source, self.part, self.column)[self.row].as_py()
        if isinstance(value, dict) and not value.get("bytes") and value.get("path"):
            # A struct holding only a path: relative to the data files, as datasets resolves it.
            base = Path(self.source) if self.kind == "disk" else Path(self.source).parent
            value = {"bytes": None, "path": str(base / value["path"])}
        return value


# Small cache: sequential reads touch one parquet row group (or one memory-mapped table) at a time.
@functools.lru_cache(maxsize=2)
def _open_column(kind: str, source: str, part: str | int | None, column: str):
    if kind == "parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(source).read_row_group(part, columns=[column]).column(0)
    return _open_table(kind, source, part).column(column)


@functools.lru_cache(maxsize=4)
def _open_table(kind: str, source: str, part: str | None):
    """The pyarrow table (memory-mapped, so cheap) behind a save_to_disk split or an .arrow file."""
    import datasets

    ds = datasets.load_from_disk(source) if kind == "disk" else datasets.Dataset.from_file(source)
    if isinstance(ds, datasets.DatasetDict):
        ds = ds[part]
    if ds._indices is not None:  # a selection that was never flattened: row i is not physical row i
        ds = ds.flatten_indices()
    return ds.data.table


def _gedit_tables(root: Path) -> Iterator[tuple[str, str, str | int | None, Any]]:
    """Yield (kind, source, part, pyarrow schema-bearing reader) for each table of a GEdit copy."""
    if root.is_file():
        if root.suffix != ".parquet":
            raise BenchmarkLayoutError(
                f"{root}: a GEdit-Bench file must be .parquet (the HF parquet export); or give the save_to_disk folder"
            )
        yield from _parquet_parts(root)
        return
    if not root.is_dir():
        raise BenchmarkLayoutError(f"{root}: no such file or folder")
    if (root / "dataset_dict.json").is_file() or (root / "state.json").is_file():
        import datasets

        ds = datasets.load_from_disk(str(root))
        split = None
        if isinstance(ds, datasets.DatasetDict):
            if "train" not in ds:
                raise BenchmarkLayoutError(f"{root}: DatasetDict has splits {sorted(ds)}; GEdit-Bench has 'train'")
            split = "train"
        yield "disk", str(root), split, None
        return
    parquet = sorted(root.rglob("*.parquet"))
    arrow = sorted(root.rglob("*.arrow"))
    if parquet:
        for f in parquet:
            yield from _parquet_parts(f)
    elif arrow:
        for f in arrow:
            yield "arrow", str(f), None, None
    else:
        raise BenchmarkLayoutError(
            f"{root}: not a GEdit-Bench copy: no dataset_dict.json/state.json "
            "(datasets.save_to_disk), no .parquet and no .arrow files"
        )


def _parquet_parts(path: Path):
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises ArrowInvalid/OSError for non-parquet bytes
        raise BenchmarkLayoutError(f"{path}: not a readable parquet file ({type(e).__name__}: {e})") from None
    for rg in range(pf.metadata.num_row_groups):
        yield "parquet", str(path), rg, pf


def _meta_rows(kind: str, source: str, part: str | int | None, pf: Any) -> tuple[list[str], list[dict]]:
    if kind == "parquet":
        names = pf.schema_arrow.names
        cols = [c for c in _GEDIT_META if c in names]
        return names, pf.read_row_group(part, columns=cols).to_pylist()
    table = _open_table(kind, source, part)
    return table.column_names, table.select([c for c in _GEDIT_META if c in table.column_names]).to_pylist()


def _check_key(key: object, where: str) -> str:
    if not isinstance(key, str) or not _SAFE_KEY.match(key):
        raise BenchmarkLayoutError(
            f"{where}: key {key!r} is not a safe file-name stem (letters, digits, '.', '_', '-')"
        )
    return key


def read_gedit(
    path: str | os.PathLike,
    languages: tuple[str, ...] | str | None = ("en",),
    image_column: str = "input_image",
    published_inputs: bool = False,
) -> list[BenchmarkItem]:
    """GEdit-Bench rows as items. ``languages`` filters ``instruction_language`` (None: both).

    ``published_inputs``: as the published evaluation prepares a sample, the editor gets ``input_image_raw``
    resized to about 512x512 pixels and the judge compares the edit with ``input_image`` (``image_column`` is then
    not used). ``key`` is ``<key>_<language>`` because both language versions of a sample may share the dataset's
    key; ``extra`` keeps the dataset's key (``source_key``) and ``intersection_exist``.
    """
    if published_inputs:
        image_column = "input_image_raw"
    root = Path(path).absolute()  # items are re-opened later, maybe from another working directory
    if isinstance(languages, str):
        languages = (languages,)
    languages = tuple(GEDIT_LANGUAGES if languages is None else languages)
    bad = [lang for lang in languages if lang not in GEDIT_LANGUAGES]
    if bad:
        raise ValueError(f"unknown GEdit-Bench language(s) {bad}; choose from {GEDIT_LANGUAGES}")
    if image_column not in ("input_image", "input_image_raw"):
        raise ValueError(f"image_column must be 'input_image' or 'input_image_raw', not {image_column!r}")
    items: list[BenchmarkItem] = []
    seen: dict[str, str] = {}
    for kind, source, part, pf in _gedit_tables(root):
        names, rows = _meta_rows(kind, source, part, pf)
        missing = [c for c in GEDIT_COLUMNS if c not in names]
        if missing:
            raise BenchmarkLayoutError(f"{source}: missing GEdit-Bench column(s) {missing}; has {names}")
        for row, r in enumerate(rows):
            lang, task = r["instruction_language"], r["task_type"]
            where = f"{source} " + (f"row group {part} " if kind == "parquet" else "") + f"row {row}"
            if lang not in GEDIT_LANGUAGES:
                raise BenchmarkLayoutError(f"{where}: instruction_language {lang!r} is not one of {GEDIT_LANGUAGES}")
            if task not in GEDIT_TASK_TYPES:
                raise BenchmarkLayoutError(f"{where}: task_type {task!r} is not one of the 11 GEdit-Bench types")
            if lang not in languages:
                continue
            raw = _check_key(r["key"], where)
            key = f"{raw}_{lang}"
            if key in seen:
                raise BenchmarkLayoutError(
                    f"{where}: duplicate key {raw!r} for language {lang!r} (also in {seen[key]})"
                )
            seen[key] = where
            inter = r["Intersection_exist"]
            items.append(
                BenchmarkItem(
                    benchmark="gedit",
                    key=key,
                    instruction=str(r["instruction"]),
                    task_type=task,
                    language=lang,
                    image=_TableCell(kind, source, part, row, image_column),
                    judge_image=_TableCell(kind, source, part, row, "input_image") if published_inputs else None,
                    edit_area=GEDIT_EDIT_AREA if published_inputs else None,
                    extra={
                        "source_key": raw,
                        "intersection_exist": None if inter is None else bool(inter),
                        "image_column": image_column,
                    },
                )
            )
    if not items:
        raise BenchmarkLayoutError(f"{root}: no GEdit-Bench rows with instruction_language in {languages}")
    return items


def read_imgedit(json_path: str | os.PathLike, image_root: str | os.PathLike) -> list[BenchmarkItem]:
    """ImgEdit-Bench Basic items from ``basic_edit.json`` ({id: {id, prompt, edit_type}}) and the image root.

    ``task_type`` is the reported category (compose → hybrid, alter → adjust); ``extra['edit_type']`` the raw
    value. A missing image file does not stop reading: that item's ``load_image`` raises ImageReadError.
    """
    json_path, image_root = Path(json_path).absolute(), Path(image_root).absolute()
    if not json_path.is_file():
        raise BenchmarkLayoutError(f"{json_path}: no such file (ImgEdit-Bench basic_edit.json)")
    if not image_root.is_dir():
        raise BenchmarkLayoutError(f"{image_root}: ImgEdit-Bench image root is not a folder")
    try:
        data = json.loads(json_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BenchmarkLayoutError(f"{json_path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise BenchmarkLayoutError(f"{json_path}: expected a JSON object keyed by id, got {type(data).__name__}")
    items = []
    for key, entry in data.items():
        where = f"{json_path} entry {key!r}"
        _check_key(key, where)
        if not isinstance(entry, dict):
            raise BenchmarkLayoutError(f"{where}: expected an object with id, prompt, edit_type")
        missing = [f for f in ("id", "prompt", "edit_type") if not isinstance(entry.get(f), str)]
        if missing:
            raise BenchmarkLayoutError(f"{where}: missing or non-string field(s) {missing}")
        edit_type = entry["edit_type"]
        task = IMGEDIT_ALIASES.get(edit_type, edit_type)
        if task not in IMGEDIT_TYPES:
            raise BenchmarkLayoutError(
                f"{where}: edit_type {edit_type!r} is not one of {IMGEDIT_TYPES} (or aliases {sorted(IMGEDIT_ALIASES)})"
            )
        rel = Path(entry["id"])
        if rel.is_absolute() or ".." in rel.parts:  # the JSON is data: keep reads inside the image root
            raise BenchmarkLayoutError(f"{where}: image id {entry['id']!r} must be a path inside the image root")
        items.append(
            BenchmarkItem(
                benchmark="imgedit",
                key=key,
                instruction=entry["prompt"],
                task_type=task,
                language="en",
                image=str(image_root / rel),
                extra={"edit_type": edit_type, "image_id": entry["id"]},
            )
        )
    if not items:
        raise BenchmarkLayoutError(f"{json_path}: no entries")
    return items


def output_name(item: BenchmarkItem) -> str:
    """Where the edited image goes, relative to the output folder, in the benchmark's own convention."""
    if item.benchmark == "gedit":  # Step1X-Edit's layout: fullset/<task_type>/<language>/<key>.png
        return f"fullset/{item.task_type}/{item.language}/{item.extra.get('source_key', item.key)}.png"
    return f"{item.key}.png"  # ImgEdit (and any other set): <key>.png in one folder


# ---------------------------------------------------------------- fixtures
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
