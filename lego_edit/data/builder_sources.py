"""Real instruction data for the Builder: listings of (image, instruction [, target] [, mask]) read into one table.

A source is a listing file (CSV, parquet or JSONL) of paths relative to ``root``, or a copy of an edit dataset from
the Hugging Face hub: a ``save_to_disk`` folder (one split, or a DatasetDict with a folder per split) or parquet
files, whose image columns hold the encoded images (``{"bytes", "path"}``). Column names are mapped by config;
``preset: magicbrush`` names MagicBrush's published columns (img_id, turn_index, source_img, mask_img,
instruction, target_img).

Every row is decoded once here, scaled to ``max_side`` and written as PNG files, so the later stages (the teacher,
the Builder's training) read one layout whatever the source. A bad row (missing or unreadable file, empty
instruction, repeated id) is recorded with its reason in the rejected table and skipped; nothing stops the job.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image
from tqdm import tqdm

from ..imageio import ImageReadError, atomic_write_bytes, encode_png, load_image, load_mask
from .dataset import SPLITS, write_table

log = logging.getLogger(__name__)
FIELDS = ("id", "image", "instruction", "target", "mask", "split", "category")
PRESETS = {
    "magicbrush": {
        "id": ["img_id", "turn_index"],
        "image": "source_img",
        "instruction": "instruction",
        "target": "target_img",
        "mask": "mask_img",
    },
}


def magicbrush_features():
    """MagicBrush's published columns as ``datasets`` features (to write a copy in its layout, as tests do)."""
    from datasets import Features, Value
    from datasets import Image as HFImage

    return Features(
        {
            "img_id": Value("string"),
            "turn_index": Value("int32"),
            "source_img": HFImage(),
            "mask_img": HFImage(),
            "instruction": Value("string"),
            "target_img": HFImage(),
        }
    )


SPLIT_NAMES = {"train": "train", "val": "val", "validation": "val", "dev": "val", "test": "test"}
ROW_COLUMNS = [
    ("id", pa.string()),
    ("origin", pa.string()),
    ("split", pa.string()),
    ("category", pa.string()),
    ("instruction", pa.string()),
    ("image_path", pa.string()),
    ("target_path", pa.string()),
    ("mask_path", pa.string()),
]
REJECTED_COLUMNS = [("origin", pa.string()), ("row", pa.int64()), ("id", pa.string()), ("reason", pa.string())]


@dataclass
class BuilderSource:
    """One source of real editing instructions (a listing file or a Hugging Face dataset copy)."""

    path: str = field(
        default="",
        metadata={
            "help": "A listing (.csv, .parquet, .jsonl), a datasets save_to_disk folder, or a folder of parquet "
            "files (a hub copy)."
        },
    )
    root: str = field(default=".", metadata={"help": "Folder that a listing's image paths are relative to."})
    name: str = field(default="", metadata={"help": "Label of the source's rows and ids (default: its file name)."})
    preset: Literal["", "magicbrush"] = field(
        default="", metadata={"help": "Column names of a published dataset (magicbrush); columns overrides them."}
    )
    columns: dict = field(
        default_factory=dict,
        metadata={
            "help": "Field -> column: id (a column or a list joined by '_'), image, instruction, target, mask, "
            "split, category. Unnamed fields use their own name."
        },
    )
    split: str | None = field(
        default=None, metadata={"help": "Put every row in this split (train, val, test); null: the source's own."}
    )
    invert_mask: bool = field(
        default=False, metadata={"help": "The mask marks the kept area, not the edited one (inverted on reading)."}
    )
    max_rows: int = field(default=0, metadata={"help": "Read at most this many rows (0: all)."})

    def __post_init__(self):
        if not self.path:
            raise ValueError("data.builder_sources: every source needs a path")
        unknown = set(self.columns) - set(FIELDS)
        if unknown:
            raise ValueError(f"data.builder_sources[{self.path}].columns: unknown field(s) {sorted(unknown)}")
        if self.split is not None and self.split not in SPLITS:
            raise ValueError(f"data.builder_sources[{self.path}].split: {self.split!r} is not one of {SPLITS}")

    @property
    def label(self) -> str:
        return self.name or re.sub(r"[^A-Za-z0-9_-]+", "_", Path(self.path).stem or Path(self.path).name)

    def column(self, name: str):
        return self.columns.get(name, PRESETS.get(self.preset, {}).get(name, name))


def _hf_split_dirs(folder: Path) -> list[tuple[str | None, Path]]:
    """A save_to_disk folder: itself (one split) or its split folders (a DatasetDict)."""
    dict_file = folder / "dataset_dict.json"
    if dict_file.is_file():
        return [(s, folder / s) for s in json.loads(dict_file.read_text())["splits"]]
    return [(None, folder)]


def _arrow_batches(folder: Path) -> Iterator[pa.RecordBatch]:
    state = json.loads((folder / "state.json").read_text())
    for entry in state["_data_files"]:
        with pa.memory_map(str(folder / entry["filename"])) as source:
            yield from pa.ipc.open_stream(source)


def _split_of_file(path: Path) -> str | None:
    """The split a hub parquet file's name gives (train-00000-of-00010.parquet, data/dev-...)."""
    m = re.match(r"([A-Za-z]+)[-_]", path.name)
    return m.group(1) if m else None


def raw_rows(source: BuilderSource) -> Iterator[tuple[str | None, dict]]:
    """(the split the layout gives or None, row dict) for every row of a source, streamed."""
    path = Path(source.path)
    if path.is_dir() and ((path / "state.json").is_file() or (path / "dataset_dict.json").is_file()):
        for split, folder in _hf_split_dirs(path):
            for batch in _arrow_batches(folder):
                for row in batch.to_pylist():
                    yield split, row
    elif path.is_dir():
        files = sorted(path.rglob("*.parquet"))
        if not files:
            raise FileNotFoundError(f"{path}: neither a save_to_disk folder (state.json) nor parquet files")
        for f in files:
            for batch in pq.ParquetFile(f).iter_batches(batch_size=256):
                for row in batch.to_pylist():
                    yield _split_of_file(f), row
    elif path.suffix == ".parquet":
        for batch in pq.ParquetFile(path).iter_batches(batch_size=256):
            yield from ((None, r) for r in batch.to_pylist())
    elif path.suffix in (".jsonl", ".json"):
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        yield None, json.loads(line)
                    except json.JSONDecodeError as e:
                        yield None, {"__error__": f"line {n} is not JSON ({e.msg})"}
    elif path.suffix == ".csv":
        import csv

        with open(path, newline="", encoding="utf-8") as f:
            yield from ((None, r) for r in csv.DictReader(f))
    else:
        raise ValueError(f"{path}: a builder source is a .csv, .parquet or .jsonl listing or a dataset folder")


class BadRow(ValueError):
    """A row that cannot be used, with the reason recorded in the rejected table."""


def _absent(value) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _image_value(value, root: Path, what: str, mask: bool = False, size=None):
    """A path (relative to root), raw bytes, or a datasets image struct {bytes, path} -> array."""
    try:
        if isinstance(value, dict):
            data, name = value.get("bytes"), value.get("path") or what
            if data is None:
                if not name or name == what:
                    raise ImageReadError("the image struct holds neither bytes nor a path")
                return _image_value(name, root, what, mask, size)
            return load_mask(name, size=size, data=data) if mask else load_image(name, data=data)
        if isinstance(value, bytes | bytearray):
            return load_mask(what, size=size, data=bytes(value)) if mask else load_image(what, data=bytes(value))
        file = root / str(value)
        return load_mask(file, size=size) if mask else load_image(file)
    except ImageReadError as e:
        raise BadRow(f"{what}: {e}") from None


def _fit(image: np.ndarray, max_side: int) -> np.ndarray:
    from ..editing.batch import fit_long_side

    return fit_long_side(image, max_side)


def _safe_id(value: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", value).strip("_") or "row"


def row_id(source: BuilderSource, row: dict, index: int) -> str:
    """The row's id: its id column(s), else its position, prefixed with the source's label."""
    id_cols = source.column("id")
    id_cols = id_cols if isinstance(id_cols, list) else [id_cols]
    parts = [row.get(c) for c in id_cols]
    raw_id = "_".join(str(p) for p in parts) if all(not _absent(p) for p in parts) else f"{index:08d}"
    return f"{source.label}_{_safe_id(raw_id)}"


def read_row(
    source: BuilderSource, layout_split, row: dict, index: int, out_dir: Path, max_side: int, seen: set
) -> dict:
    """One row decoded and written as PNG files; raises BadRow with the reason (an id in ``seen`` before any file
    is written, so a repeated id never replaces the first row's images)."""
    if "__error__" in row:
        raise BadRow(row["__error__"])
    root = Path(source.root)
    col = source.column
    rid = row_id(source, row, index)
    if rid in seen:
        raise BadRow(f"id {rid!r} repeats an earlier row's")
    instruction = row.get(col("instruction"))
    if _absent(instruction):
        raise BadRow(f"empty instruction (column {col('instruction')!r})")
    instruction = " ".join(str(instruction).split())
    if _absent(row.get(col("image"))):
        raise BadRow(f"no image (column {col('image')!r})")
    split = source.split or row.get(col("split")) or layout_split or "train"
    split = SPLIT_NAMES.get(str(split).lower())
    if split is None:
        raise BadRow(f"split {row.get(col('split')) or layout_split!r} is not one of {sorted(SPLIT_NAMES)}")
    image = _fit(_image_value(row[col("image")], root, "image"), max_side)
    size = (image.shape[1], image.shape[0])
    target = mask = None
    if not _absent(row.get(col("target"))):
        target = _image_value(row[col("target")], root, "target")
        if target.shape[:2] != image.shape[:2]:
            target = np.asarray(Image.fromarray(target).resize(size, Image.Resampling.BOX))
    if not _absent(row.get(col("mask"))):
        mask = _image_value(row[col("mask")], root, "mask", mask=True, size=size)
        if source.invert_mask:
            mask = 255 - mask
    out = {
        "id": rid,
        "origin": source.label,
        "split": split,
        "category": None if _absent(row.get(col("category"))) else str(row[col("category")]),
        "instruction": instruction,
    }
    for name, array in (("image", image), ("target", target), ("mask", mask)):
        path = None
        if array is not None:
            path = out_dir / f"{rid}_{name}.png"
            atomic_write_bytes(path, encode_png(array))
        out[f"{name}_path"] = None if path is None else str(path)
    return out


def read_builder_sources(
    sources: list[BuilderSource], rows_path, rejected_path, image_dir, max_side: int = 1024
) -> tuple[int, int]:
    """Every source's rows into the rows table (PNG files in ``image_dir``); bad rows into the rejected table.
    Returns (rows kept, rows rejected)."""
    image_dir = Path(image_dir)
    image_dir.mkdir(parents=True, exist_ok=True)
    rows, rejected, seen = [], [], set()
    for source in sources:
        count = 0
        for index, (layout_split, raw) in enumerate(tqdm(raw_rows(source), desc=source.label, mininterval=5)):
            if source.max_rows and count >= source.max_rows:
                break
            count += 1
            try:
                row = read_row(source, layout_split, raw, index, image_dir, max_side, seen)
            except BadRow as e:
                rejected.append({"origin": source.label, "row": index + 1, "id": None, "reason": str(e)})
                continue
            seen.add(row["id"])
            rows.append(row)
        log.info("%s: %d rows read", source.label, count)
    write_table(pa.Table.from_pylist(rows, schema=pa.schema(ROW_COLUMNS)), rows_path)
    write_table(pa.Table.from_pylist(rejected, schema=pa.schema(REJECTED_COLUMNS)), rejected_path)
    log.info("builder sources: %d rows, %d rejected", len(rows), len(rejected))
    return len(rows), len(rejected)


def sources_from_config(values: list[dict] | None) -> list[BuilderSource]:
    return [BuilderSource(**v) for v in values or []]


# --- ADD-PRED's placement data from the "add" rows ---------------------------------------------------------

ADD_VERBS = re.compile(r"^\s*(?:please\s+|can you\s+|could you\s+)?(?:add|put|place|insert|draw|include)\b", re.I)
DIFF_THRESHOLD = 24  # a pixel counts as changed when a channel moved by more than this (JPEG noise stays below)


def is_add(row: dict) -> bool:
    """An 'add' row: its category says so, or (with no category) its instruction starts with an adding verb."""
    if row.get("category"):
        return row["category"].strip().lower() in ("add", "addition", "add object")
    return bool(ADD_VERBS.match(row["instruction"]))


def changed_box(source: np.ndarray, target: np.ndarray, min_share: float = 0.001, max_share: float = 0.5):
    """[x1, y1, x2, y2] (inclusive) around the pixels the edit changed, or None when the change is too small
    (no object appeared) or too large (the whole image moved) to be one added object."""
    changed = np.abs(source.astype(np.int16) - target.astype(np.int16)).max(axis=2) > DIFF_THRESHOLD
    share = changed.mean()
    if not min_share <= share <= max_share:
        return None
    ys, xs = np.nonzero(changed)
    return [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())]


def placement_listing(rows_path, listing_path, min_share: float = 0.001, max_share: float = 0.5) -> dict:
    """A placement listing (image, prompt, box, split, key; data.shards.sources' layout) from the add rows: the
    box of the row's mask, else of the target's difference from the source. Returns counts by outcome."""
    counts = {"add_rows": 0, "from_mask": 0, "from_difference": 0, "no_box": 0}
    out = []
    for row in pq.read_table(rows_path).to_pylist():
        if not is_add(row):
            continue
        counts["add_rows"] += 1
        box = None
        if row["mask_path"]:
            mask = load_mask(row["mask_path"]) > 0
            if min_share <= mask.mean() <= max_share:
                ys, xs = np.nonzero(mask)
                box = [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())]
                counts["from_mask"] += 1
        if box is None and row["target_path"]:
            box = changed_box(load_image(row["image_path"]), load_image(row["target_path"]), min_share, max_share)
            counts["from_difference"] += box is not None
        if box is None:
            counts["no_box"] += 1
            continue
        out.append(
            {
                "key": row["id"],
                "split": row["split"],
                "image": str(Path(row["image_path"]).resolve()),
                "prompt": row["instruction"],
                "box": json.dumps(box),
            }
        )
    if not out:
        raise ValueError(
            f"{rows_path}: no add row with a mask or a changed target among the builder sources ({counts}), so "
            "ADD-PRED has no real placement data; set data.teacher.placement to false to keep the shapes world's"
        )
    schema = pa.schema([(k, pa.string()) for k in ("key", "split", "image", "prompt", "box")])
    write_table(pa.Table.from_pylist(out, schema=schema), listing_path)
    log.info("placement listing from the add rows: %s", counts)
    return counts
