"""The batch manifest: one row per image, rewritten atomically as the batch goes, read back to resume.

Columns:
  file             image path relative to the input folder (the key)
  instruction      the instruction the item was edited with (None for a fixed workflow without one)
  mask             mask path relative to the input folder, or None
  builder          what wrote the workflow: a Builder stage, ``openai:<model>@<url>``, or ``workflow:<sha>``
  status           ok | failed | skipped
  error            why it failed or was skipped (None when ok)
  outputs          edited images, relative to the output folder
  workflow_file    the item's ``.workflow.json`` (instruction, reasoning, workflow), or None
  steps            JSON list of {step, brick, seconds}: the executor's per-step timings
  total_seconds    the item's wall time (its share of the Builder batch included)
  builder_seconds  its share of the Builder's batched generation
  load_seconds     reading (decoding) the image and mask
  execute_seconds  the executor's run (validation, bricks, checks)
  brick_seconds    the bricks' own compute (sum of ``steps``)
  save_seconds     encoding and writing the results and the workflow file
  updated          when the row was written (UTC, ISO 8601)
"""

from __future__ import annotations

import io
import json
import logging
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ..imageio import atomic_write_bytes

log = logging.getLogger(__name__)
STATUSES = ("ok", "failed", "skipped")
SCHEMA = pa.schema(
    [
        ("file", pa.string()),
        ("instruction", pa.string()),
        ("mask", pa.string()),
        ("builder", pa.string()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("outputs", pa.list_(pa.string())),
        ("workflow_file", pa.string()),
        ("steps", pa.string()),
        ("total_seconds", pa.float64()),
        ("builder_seconds", pa.float64()),
        ("load_seconds", pa.float64()),
        ("execute_seconds", pa.float64()),
        ("brick_seconds", pa.float64()),
        ("save_seconds", pa.float64()),
        ("updated", pa.string()),
    ]
)
COLUMNS = tuple(SCHEMA.names)


class ManifestError(RuntimeError):
    """A manifest that cannot be read (it is never written partially, so this means another file is there)."""


def empty_record(file: str) -> dict:
    return {c: ([] if c == "outputs" else 0.0 if c.endswith("_seconds") else None) for c in COLUMNS} | {"file": file}


def _normalise(row: dict) -> dict:
    """A row read back from any earlier version of the schema: missing columns get their empty value."""
    rec = empty_record(row["file"])
    rec.update({k: v for k, v in row.items() if k in rec})
    rec["outputs"] = list(rec["outputs"] or [])
    return rec


def _journal(path: str | os.PathLike) -> Path:
    return Path(f"{path}.journal")


def _replay(journal: Path) -> list[dict]:
    """Rows appended since the last snapshot. A line cut short by a kill (only the last can be) is ignored."""
    out = []
    with open(journal, encoding="utf-8") as f:
        for line in f:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict) and "file" in row:
                out.append(_normalise(row))
    return out


def read_manifest(path: str | os.PathLike) -> list[dict]:
    """The rows of a manifest: its parquet snapshot, updated by its journal if a run is going on (or was killed)."""
    path, journal = Path(path), _journal(path)
    if not path.is_file() and not journal.is_file():
        raise FileNotFoundError(f"{path}: no such manifest")
    rows: dict[str, dict] = {}
    if path.is_file():
        try:
            table = pq.read_table(path)
        except (OSError, pa.ArrowException) as e:
            raise ManifestError(f"{path}: not a readable manifest ({e}); move it away to start over") from None
        if "file" not in table.column_names or "status" not in table.column_names:
            raise ManifestError(f"{path}: not a batch-edit manifest (columns: {table.column_names})")
        rows = {r["file"]: _normalise(r) for r in table.to_pylist()}
    if journal.is_file():
        rows.update((r["file"], r) for r in _replay(journal))
    return list(rows.values())


def table_of(records) -> pa.Table:
    return pa.Table.from_pylist([{c: r.get(c) for c in COLUMNS} for r in records], schema=SCHEMA)


def write_manifest(path: str | os.PathLike, records) -> None:
    """Write rows sorted by file, atomically (temp file + rename): a reader never sees half a manifest."""
    buf = io.BytesIO()
    pq.write_table(table_of(sorted(records, key=lambda r: r["file"])), buf, compression="zstd")
    atomic_write_bytes(path, buf.getvalue())


class Manifest:
    """The rows of one batch (or chunk), keyed by file.

    ``flush`` makes every row set so far durable against a kill, at a cost that does not grow with the manifest:
    it appends the new rows to ``<manifest>.journal`` (JSON lines), and rewrites the parquet snapshot (then drops
    the journal) only once the journal holds ``min_journal`` rows and a quarter as many rows as the manifest, so
    each row is rewritten a bounded number of times however large the folder. ``close`` leaves a complete snapshot
    and no journal. While a run goes on, read the manifest with ``read_manifest`` (it applies the journal).
    """

    def __init__(self, path: str | os.PathLike, compact_ratio: float = 0.25, min_journal: int = 1000):
        self.path, self.journal = Path(path), _journal(path)
        self.compact_ratio, self.min_journal = compact_ratio, min_journal
        self.records: dict[str, dict] = {}
        self.pending: list[dict] = []
        self.journal_rows = 0
        self.needs_snapshot = False
        self._journal_file = None  # kept open between flushes: one write per flush, no reopening
        if self.path.is_file() or self.journal.is_file():
            self.records = {r["file"]: r for r in read_manifest(self.path)}
        if self.journal.is_file():
            self.journal_rows = len(_replay(self.journal))
            with open(self.journal, "rb+") as f:  # a line cut by a kill must not swallow the next one appended
                if f.seek(0, os.SEEK_END) and (f.seek(-1, os.SEEK_END), f.read(1))[1] != b"\n":
                    f.write(b"\n")

    def get(self, file: str) -> dict | None:
        return self.records.get(file)

    def set(self, record: dict) -> None:
        if record["status"] not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {record['status']!r}")
        self.records[record["file"]] = record
        self.pending.append(record)

    def remove(self, file: str) -> None:
        if self.records.pop(file, None) is not None:
            self.needs_snapshot = True  # a journal can only add rows

    def flush(self) -> None:
        rows = self.journal_rows + len(self.pending)
        if (
            self.needs_snapshot
            or not self.path.exists()
            or rows >= max(self.min_journal, self.compact_ratio * len(self.records))
        ):
            self.close()
        elif self.pending:
            text = "".join(json.dumps({c: r.get(c) for c in COLUMNS}) + "\n" for r in self.pending)
            if self._journal_file is None:
                self._journal_file = open(self.journal, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
            self._journal_file.write(text)
            self._journal_file.flush()  # one write: a kill leaves whole lines, or at worst one cut last line
            self.journal_rows += len(self.pending)
            self.pending = []

    def close(self) -> None:
        """Write the snapshot (atomically), then drop the journal it now contains."""
        if self._journal_file is not None:
            self._journal_file.close()
            self._journal_file = None
        if not (self.pending or self.journal_rows or self.needs_snapshot or not self.path.exists()):
            return
        write_manifest(self.path, self.records.values())
        self.journal.unlink(missing_ok=True)
        self.pending, self.journal_rows, self.needs_snapshot = [], 0, False

    def counts(self, files=None) -> dict[str, int]:
        rows = self.records.values() if files is None else (self.records[f] for f in files if f in self.records)
        out = dict.fromkeys(STATUSES, 0)
        for r in rows:
            out[r["status"]] += 1
        return out


def merge_manifests(paths, output: str | os.PathLike) -> dict[str, int]:
    """Merge chunk manifests into one (sorted by file); returns the status counts.

    Chunks are disjoint; should two name the same file, the row written last (``updated``) wins.
    """
    merged: dict[str, dict] = {}
    for p in paths:
        for r in read_manifest(p):
            old = merged.get(r["file"])
            if old is not None:
                log.warning("%s appears in more than one chunk manifest; keeping the newer row", r["file"])
                if (old["updated"] or "") > (r["updated"] or ""):
                    continue
            merged[r["file"]] = r
    write_manifest(output, merged.values())
    counts = dict.fromkeys(STATUSES, 0)
    for r in merged.values():
        counts[r["status"]] += 1
    return counts
