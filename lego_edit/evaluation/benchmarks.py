"""Readers for the public editing benchmarks, from local copies in their published layouts.

GEdit-Bench (stepfun-ai/GEdit-Bench): a Hugging Face dataset, read from a ``save_to_disk`` folder, loose ``.arrow``
files, or the parquet export. ImgEdit-Bench Basic (PKU-YuanGroup/ImgEdit): ``basic_edit.json`` plus an image root.
Images are decoded only when ``BenchmarkItem.load_image`` is called, so 1,212 rows cost only their metadata.
The fixture writers produce small synthetic copies in exactly these layouts for tests and the tiny config.
The item and the benchmarks' constants are in ``benchmark_items.py``, the fixture writers in
``benchmark_fixtures.py``; this module re-exports their names.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .benchmark_fixtures import (  # noqa: F401 - also re-exported: this module was their import path
    synthetic_image,
    write_gedit_fixture,
    write_imgedit_fixture,
)
from .benchmark_items import (  # noqa: F401 - also re-exported: this module was their import path
    GEDIT_COLUMNS,
    GEDIT_EDIT_AREA,
    GEDIT_LANGUAGES,
    GEDIT_TASK_TYPES,
    IMGEDIT_ALIASES,
    IMGEDIT_TYPES,
    BenchmarkItem,
    BenchmarkLayoutError,
    ImageSource,
    area_dimensions,
    resize_to_area,
)

_GEDIT_META = ("task_type", "key", "instruction", "instruction_language", "Intersection_exist")
_SAFE_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


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
