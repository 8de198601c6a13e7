"""What a batch edit works on: the images of a folder, their instructions and masks, and where results go.

Items are keyed by the image's path relative to the input folder (POSIX separators), sorted, so that a
chunked run (every k-th item) splits a folder the same way on every machine and every rerun.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..imageio import IMAGE_SUFFIXES

MAPPING_FILE_COLUMNS = ("file", "path", "image")  # the first one present names the image
MAPPING_SUFFIXES = (".csv", ".jsonl")
_NUMBERED = re.compile(r"^(.*)_(\d+)$")
_WINDOWS_ABSOLUTE = re.compile(r"^(?:[A-Za-z]:|[\\/])")  # C:\x, C:x, \\server\x


class MappingError(ValueError):
    """A mapping file (image -> instruction) that cannot be used; the message names the file and the row."""


@dataclass(frozen=True)
class EditItem:
    file: str  # image path relative to the input folder, POSIX
    instruction: str | None  # None: no instruction (a fixed workflow needs none)
    mask: str | None = None  # mask path relative to the input folder
    skip: str | None = None  # why the item is not edited (an image the mapping does not name)
    row: str | None = None  # "mapping.csv line 4", for messages


def list_images(folder: str | os.PathLike, exclude: tuple = ()) -> list[str]:
    """Every image under ``folder`` (recursive; ``IMAGE_SUFFIXES`` in any case), as sorted relative POSIX paths.

    Hidden files and folders (name starting with '.') are skipped, and so is every folder in ``exclude``
    (e.g. the output folder when it lies inside the input folder). Symlinked folders are not followed.
    """
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder")
    excluded = {Path(p).resolve() for p in exclude}
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and (here / d).resolve() not in excluded]
        for name in filenames:
            if not name.startswith(".") and name.lower().endswith(IMAGE_SUFFIXES):
                found.append((here / name).relative_to(root).as_posix())
    return sorted(found)


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _relative(value: str, what: str, where: str) -> str:
    """A path from a mapping row, normalised and checked to stay inside the input folder."""
    p = PurePosixPath(value.strip())
    if p.is_absolute() or _WINDOWS_ABSOLUTE.match(value.strip()):
        raise MappingError(f"{where}: {what} {value!r} is an absolute path; give it relative to the input folder")
    if ".." in p.parts:
        raise MappingError(f"{where}: {what} {value!r} points outside the input folder")
    rel = p.as_posix()
    if rel in ("", "."):
        raise MappingError(f"{where}: empty {what}")
    return rel


def _mapping_rows(path: Path):
    """(where, row dict) for each data row of a CSV (with a header) or JSONL mapping file."""
    suffix = path.suffix.lower()
    if suffix not in MAPPING_SUFFIXES:
        raise MappingError(f"{path}: a mapping file must be .csv or .jsonl, not {path.suffix or 'without suffix'}")
    try:
        text = path.read_text(encoding="utf-8-sig")  # utf-8-sig: spreadsheets write a byte-order mark
    except FileNotFoundError:
        raise MappingError(f"{path}: no such mapping file") from None
    except UnicodeDecodeError as e:
        raise MappingError(f"{path}: not UTF-8 text ({e})") from None
    if suffix == ".jsonl":
        for n, line in enumerate(text.split("\n"), 1):  # not splitlines: JSON strings may hold U+2028
            if not line.strip():
                continue
            where = f"{path.name} line {n}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise MappingError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(row, dict):
                raise MappingError(f"{where}: expected a JSON object, got {type(row).__name__}")
            yield where, row
        return
    reader = csv.DictReader(io.StringIO(text, newline=""))  # quoted cells may span lines
    header = reader.fieldnames or []
    if not any(c in header for c in MAPPING_FILE_COLUMNS):
        raise MappingError(f"{path.name}: the header {header} has no 'file' column; expected file,instruction[,mask]")
    for row in reader:
        where = f"{path.name} line {reader.line_num}"
        if None in row:
            raise MappingError(
                f"{where}: {len(header) + len(row[None])} fields, but the header has {len(header)} "
                "(quote values that contain commas)"
            )
        if any(v is None for v in row.values()):
            raise MappingError(
                f"{where}: {sum(v is not None for v in row.values())} fields, but the header has {len(header)}"
            )
        yield where, row


def read_mapping(
    path: str | os.PathLike, default_instruction: str | None = None, instruction_required: bool = True
) -> list[EditItem]:
    """The items a mapping file names, in file order.

    Columns (CSV header or JSONL keys): ``file`` (or ``path``/``image``), relative to the input folder;
    ``instruction``; optional ``mask`` (relative to the input folder). An empty instruction falls back to
    ``default_instruction``; with none, it is an error unless ``instruction_required`` is False (a fixed
    workflow). Raises MappingError naming the row for any bad row.
    """
    path = Path(path)
    items: list[EditItem] = []
    seen: dict[str, str] = {}
    for where, row in _mapping_rows(path):
        key = next((c for c in MAPPING_FILE_COLUMNS if c in row), None)
        if key is None:
            raise MappingError(f"{where}: no 'file' field (fields: {sorted(row)})")
        values = {}
        for name in (key, "instruction", "mask"):
            v = row.get(name)
            if v is not None and not isinstance(v, str):
                raise MappingError(f"{where}: '{name}' must be a string, got {json.dumps(v)[:40]}")
            if v and not _encodable(v):
                raise MappingError(f"{where}: '{name}' is not valid Unicode (it holds a lone surrogate escape)")
            values[name] = (v or "").strip()
        if not values[key]:
            raise MappingError(f"{where}: empty '{key}'")
        file = _relative(values[key], "file", where)
        instruction = values["instruction"] or default_instruction
        if not instruction and instruction_required:
            raise MappingError(f"{where}: no instruction for {file!r} (and no --instruction to fall back on)")
        mask = _relative(values["mask"], "mask", where) if values["mask"] else None
        if file in seen:
            raise MappingError(f"{where}: {file!r} is already listed ({seen[file]}); one instruction per image")
        seen[file] = where
        items.append(EditItem(file, instruction or None, mask, row=where))
    if not items:
        raise MappingError(f"{path.name}: no rows")
    return items


def collect_items(
    folder: str | os.PathLike,
    output: str | os.PathLike | None = None,
    *,
    instruction: str | None = None,
    mapping: str | os.PathLike | None = None,
    fixed_workflow: bool = False,
) -> list[EditItem]:
    """Every item of a batch, sorted by file.

    Without a mapping: every image of the folder, with ``instruction``. With one: the rows of the mapping,
    plus every other image of the folder as a skipped item (so the manifest accounts for the whole folder).
    """
    images = list_images(folder, exclude=(output,) if output is not None else ())
    if mapping is None:
        return [EditItem(f, instruction) for f in images]
    mapped = read_mapping(mapping, instruction, instruction_required=not fixed_workflow)
    named = {it.file for it in mapped}
    reason = f"not named in the mapping file {Path(mapping).name}"
    items = mapped + [EditItem(f, None, skip=reason) for f in images if f not in named]
    return sorted(items, key=lambda it: it.file)


def select_chunk(items: list[EditItem], chunk: int, chunks: int) -> list[EditItem]:
    """Every ``chunks``-th item from the ``chunk``-th, by sorted relative path (deterministic)."""
    if chunks < 1 or not 0 <= chunk < chunks:
        raise ValueError(f"chunk must be in 0..{chunks - 1} (chunks={chunks}), got {chunk}")
    return sorted(items, key=lambda it: it.file)[chunk::chunks]


def output_stems(files: list[str]) -> dict[str, str]:
    """Where each image's results go, relative to the output folder, without suffix.

    Normally the input path's stem (``a/b.jpg`` -> ``a/b``, giving ``a/b.png``, or ``a/b_1.png``, ``a/b_2.png``
    for several results). Where that could clash within a folder (``b.jpg`` next to ``b.png``, or ``b.png``
    next to ``b_1.png``), those images keep their full name (``a/b.jpg`` -> ``a/b.jpg.png``), so no two items
    ever write the same file. Depends on the whole list, never on a chunk of it.
    """
    stems: dict[str, list[str]] = {}
    for f in files:
        p = PurePosixPath(f)
        stems.setdefault(str(p.parent), []).append(p.stem.casefold())
    clashing: set[tuple[str, str]] = set()
    for parent, names in stems.items():
        counts: dict[str, int] = {}
        for n in names:
            counts[n] = counts.get(n, 0) + 1
        for n in names:
            m = _NUMBERED.match(n)
            if counts[n] > 1:
                clashing.add((parent, n))
            elif m and m.group(1) in counts:  # b_1 next to b: b's second result would be b_1
                clashing.update({(parent, n), (parent, m.group(1))})
    out = {}
    for f in files:
        p = PurePosixPath(f)
        out[f] = str(p if (str(p.parent), p.stem.casefold()) in clashing else p.with_suffix(""))
    return out
