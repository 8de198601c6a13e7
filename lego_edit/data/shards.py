"""Webdataset shards for brick training, with a parquet manifest, a reader, and a converter for real data.

Layout of a shard set (one per brick family): ``<out>/<family>-<split>-000000.tar`` ... and
``<out>/manifest.parquet`` with one row per sample: key, shard, sha256 (of the sample's bytes), split,
kind (the task or brick). Tar members carry a fixed mtime and owner, so the same samples give
byte-identical shards.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import webdataset as wds
from PIL import Image
from tqdm import tqdm

from ..imageio import ImageReadError, encode_png, load_image, load_mask
from . import brick_samples as bs
from .dataset import SPLITS, _rng, load_instructions, load_scenes, write_table
from .shapes import Scene

log = logging.getLogger(__name__)
_FAMILY_STREAM = {name: 10 + i for i, name in enumerate(bs.FAMILIES)}
MASK_FIELDS = {"mask", "hint"}


@dataclass
class ShardConfig:
    seed: int = field(default=0, metadata={"help": "Seed of the sample draws."})
    per_scene: int = field(default=1, metadata={"help": "Samples drawn per scene (per brick for 'edit')."})
    samples_per_shard: int = field(default=1000, metadata={"help": "Samples per tar file."})
    splits: list[str] = field(default_factory=lambda: list(SPLITS), metadata={"help": "Splits to write."})
    bricks: list[str] = field(
        default_factory=lambda: list(bs.EDIT_BRICKS),
        metadata={"help": "Edit bricks to draw samples for (family 'edit' only)."},
    )

    def __post_init__(self):
        if self.per_scene < 1 or self.samples_per_shard < 1:
            raise ValueError("per_scene and samples_per_shard must be at least 1")
        if set(self.splits) - set(SPLITS):
            raise ValueError(f"unknown splits {sorted(set(self.splits) - set(SPLITS))}")
        if set(self.bricks) - set(bs.EDIT_BRICKS):
            raise ValueError(f"unknown edit bricks {sorted(set(self.bricks) - set(bs.EDIT_BRICKS))}")


def encode_sample(key: str, images: dict[str, np.ndarray], meta: dict) -> dict:
    sample = {"__key__": key}
    for name, array in images.items():
        sample[f"{name}.png"] = encode_png(array)
    sample["json"] = json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()
    return sample


def sample_digest(sample: dict) -> str:
    h = hashlib.sha256()
    for k in sorted(sample):
        if k != "__key__":
            h.update(k.encode() + b"\0" + sample[k] + b"\0")
    return h.hexdigest()


class ShardSetWriter:
    """Writes encoded samples of one split into numbered tar files and collects manifest rows."""

    def __init__(self, out_dir: Path, family: str, split: str, samples_per_shard: int):
        self.out_dir = out_dir
        self.prefix = f"{family}-{split}"
        self.split = split
        self.per_shard = samples_per_shard
        self.rows: list[dict] = []
        self._writer = None
        self._count = 0
        self._shard = -1

    def write(self, sample: dict, kind: str) -> None:
        if self._writer is None or self._count == self.per_shard:
            self._open_next()
        self._writer.write(sample)
        self._count += 1
        self.rows.append(
            {
                "key": sample["__key__"],
                "shard": self._name,
                "sha256": sample_digest(sample),
                "split": self.split,
                "kind": kind,
            }
        )

    def _open_next(self) -> None:
        self.close()
        self._shard += 1
        self._count = 0
        self._name = f"{self.prefix}-{self._shard:06d}.tar"
        self._stream = open(self.out_dir / self._name, "wb")
        self._writer = wds.TarWriter(self._stream, user="lego-edit", group="lego-edit", mtime=0)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _family_samples(
    family: str, cfg: ShardConfig, split: str, scenes_path, instruction_paths
) -> Iterator[tuple[str, dict, dict]]:
    stream = _FAMILY_STREAM[family]
    if family == "critic":
        rows = [r for p in instruction_paths for r in load_instructions(p, split)]
        for r in rows:
            rng = _rng(cfg.seed, stream, r["scene_id"], int(r["id"].rsplit("_", 1)[1]), len(r["domain"]))
            source = np.asarray(Image.open(r["image_path"]).convert("RGB"))
            target = np.asarray(Image.open(r["target_path"]))
            scene = Scene.from_json(load_scene_json(scenes_path, r["scene_id"]))
            for k, (images, meta) in enumerate(bs.critic_samples(scene, rng, cfg.per_scene, r, source, target)):
                yield f"{r['id']}_{k}", images, meta
        return
    gen = {
        "segmentation": bs.segmentation_samples,
        "placement": bs.placement_samples,
        "captioning": bs.captioning_samples,
        "edit": None,
    }[family]
    for row in load_scenes(scenes_path, split):
        scene = Scene.from_json(row["scene"])
        rng = _rng(cfg.seed, stream, row["scene_id"])
        samples = (
            bs.edit_samples(scene, rng, cfg.per_scene, cfg.bricks)
            if family == "edit"
            else gen(scene, rng, cfg.per_scene)
        )
        for k, (images, meta) in enumerate(samples):
            yield f"{family}_{row['scene_id']:06d}_{k:02d}", images, meta


_SCENE_CACHE: dict[str, dict[int, str]] = {}


def load_scene_json(scenes_path, scene_id: int) -> str:
    key = str(scenes_path)
    if key not in _SCENE_CACHE:
        _SCENE_CACHE[key] = {r["scene_id"]: r["scene"] for r in load_scenes(scenes_path)}
    return _SCENE_CACHE[key][scene_id]


def _kind(family: str, meta: dict) -> str:
    return meta.get("task") or meta.get("brick") or meta.get("kind") or family


MANIFEST_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("shard", pa.string()),
        ("sha256", pa.string()),
        ("split", pa.string()),
        ("kind", pa.string()),
    ]
)


def write_listing_shards(
    samples: Iterable[tuple[str, str, dict, dict]], family: str, out_dir, samples_per_shard: int
) -> pa.Table:
    """Shards of a real listing's (split, key, images, meta) samples, each encoded and written as it is read: one
    writer per split stays open, so a listing of any size streams through in constant memory. The files and the
    manifest (splits in the order they first appear) are those ``write_shard_set`` writes for the same samples."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    writers: dict[str, ShardSetWriter] = {}
    try:
        for split, key, images, meta in tqdm(samples, desc=f"{family} listing", mininterval=10, unit=" samples"):
            if split not in writers:
                writers[split] = ShardSetWriter(out_dir, family, split, samples_per_shard)
            writers[split].write(encode_sample(key, images, {**meta, "split": split}), _kind(family, meta))
    finally:
        for writer in writers.values():
            writer.close()
    table = pa.Table.from_pylist([r for w in writers.values() for r in w.rows], schema=MANIFEST_SCHEMA)
    write_table(table, out_dir / "manifest.parquet")
    return table


def write_shard_set(
    samples_by_split: dict[str, Iterable[tuple[str, dict, dict]]], family: str, out_dir, samples_per_shard: int
) -> pa.Table:
    """Encode and write every split's samples, then the manifest (written last: it marks completion)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    for split, samples in samples_by_split.items():
        writer = ShardSetWriter(out_dir, family, split, samples_per_shard)
        try:
            for key, images, meta in tqdm(samples, desc=f"{family}/{split}", mininterval=10, unit=" samples"):
                writer.write(encode_sample(key, images, {**meta, "split": split}), _kind(family, meta))
        finally:
            writer.close()
        rows.extend(writer.rows)
    table = pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA)
    write_table(table, out_dir / "manifest.parquet")
    return table


def build_shards(
    family: str, cfg: ShardConfig, out_dir, scenes_path=None, instruction_paths=(), source: dict | None = None
) -> pa.Table:
    """Write the shard set of a brick family from the shapes world, or from a real listing (``source``)."""
    if family not in bs.FAMILIES:
        raise ValueError(f"unknown brick family {family!r}; known: {', '.join(bs.FAMILIES)}")
    if source:
        samples = read_listing(family, source["listing"], source.get("root", "."))
        return write_listing_shards(samples, family, out_dir, cfg.samples_per_shard)
    return write_shard_set(
        {s: _family_samples(family, cfg, s, scenes_path, instruction_paths) for s in cfg.splits},
        family,
        out_dir,
        cfg.samples_per_shard,
    )


# --- real data: a listing (CSV / parquet / JSONL) of files on disk ---------------------------------------

LISTING_FIELDS = {  # family -> (image fields, mask fields, required text fields, optional fields)
    "segmentation": (("image",), ("mask", "hint"), ("task", "text"), ("hint",)),
    "placement": (("image",), (), ("prompt", "box"), ()),
    "captioning": (("image",), (), ("caption",), ()),
    "edit": (("source", "target", "preimage"), ("mask",), ("brick", "prompt"), ("preimage", "style", "score")),
    "critic": (("source", "candidate"), (), ("instruction", "label"), ()),
}


def _read_rows(listing: str | Path) -> Iterator[dict]:
    """The listing's rows, read as a stream (a parquet file batch by batch, a text file line by line)."""
    path = Path(listing)
    if not path.is_file():
        raise FileNotFoundError(f"listing {path} does not exist")
    if path.suffix not in (".parquet", ".jsonl", ".json", ".csv"):
        raise ValueError(f"listing {path}: use .csv, .parquet or .jsonl")
    return _stream_rows(path)


def _stream_rows(path: Path) -> Iterator[dict]:
    if path.suffix == ".parquet":
        for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
            yield from batch.to_pylist()
    elif path.suffix == ".csv":
        import csv

        with open(path, newline="") as f:
            yield from csv.DictReader(f)
    else:
        with open(path) as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        yield json.loads(line)
                    except json.JSONDecodeError as e:
                        raise ValueError(f"listing {path} line {n}: not JSON ({e.msg})") from None


EMPTY_OK = {"segmentation": ("text",), "edit": ("prompt",)}  # SOS and MASK-SEG take no text, INPAINT no prompt
_CONVERT = {
    "box": (lambda v: [int(x) for x in (v.strip("[]").split(",") if isinstance(v, str) else v)], "4 integers"),
    "label": (int, "an integer"),
    "score": (float, "a number"),
}


def _absent(value) -> bool:
    return value is None or value == ""


def _load(where: str, field_name: str, read, *args, **kwargs) -> np.ndarray:
    try:
        return read(*args, **kwargs)
    except ImageReadError as e:
        raise ImageReadError(f"{where}, field {field_name!r}: {e}") from None


def read_listing(family: str, listing, root) -> Iterator[tuple[str, str, dict, dict]]:
    """(split, key, images, meta) for each row of a listing; a bad row raises naming the row and field."""
    image_fields, mask_fields, required, optional = LISTING_FIELDS[family]
    empty_ok = EMPTY_OK.get(family, ())
    root = Path(root)
    seen: dict[str, int] = {}
    for i, row in enumerate(_read_rows(listing)):
        where = f"{listing} row {i + 1}"
        missing = [
            f
            for f in (*image_fields, *mask_fields, *required)
            if f not in optional and f not in empty_ok and _absent(row.get(f))
        ]
        if missing:
            raise ValueError(f"{where}: missing {', '.join(missing)}")
        split = row.get("split") or "train"
        if split not in SPLITS:
            raise ValueError(f"{where}, field 'split': {split!r} is not one of {', '.join(SPLITS)}")
        key = str(row.get("key") or f"{family}_{i:08d}")
        if "." in key:
            raise ValueError(
                f"{where}, field 'key': {key!r} contains '.', which webdataset reads as the start of the file extension"
            )
        if key in seen:
            raise ValueError(f"{where}, field 'key': {key!r} is already the key of row {seen[key]}")
        seen[key] = i + 1
        images = {}
        for f in image_fields:
            if not _absent(row.get(f)):
                images[f] = _load(where, f, load_image, root / row[f])
        size = next(iter(images.values())).shape[1::-1] if images else None
        for f in mask_fields:
            if not _absent(row.get(f)):
                images[f] = _load(where, f, load_mask, root / row[f], size=size)
        meta = {f: row[f] for f in (*required, *optional) if not _absent(row.get(f)) and f not in images}
        meta.update({f: "" for f in empty_ok if f not in meta})
        for f, (convert, what) in _CONVERT.items():
            if f in meta:
                try:
                    meta[f] = convert(meta[f])
                except (TypeError, ValueError):
                    raise ValueError(f"{where}, field {f!r}: cannot read {meta[f]!r} as {what}") from None
                if f == "box" and len(meta[f]) != 4:
                    raise ValueError(f"{where}, field 'box': {meta[f]!r} is not 4 integers")
        yield split, key, images, meta


# --- reading ------------------------------------------------------------------------------------------


def _decode(sample: dict) -> dict:
    out = {"__key__": sample["__key__"]}
    for k, v in sample.items():
        if k.endswith(".png"):
            out[k[:-4]] = np.asarray(Image.open(io.BytesIO(v)))
        elif k == "json":
            out.update(json.loads(v))
    return out


def read_manifest(shard_dir) -> pa.Table:
    path = Path(shard_dir) / "manifest.parquet"
    if not path.is_file():
        raise FileNotFoundError(f"{shard_dir} has no manifest.parquet (was the shard set written completely?)")
    return pq.read_table(path)


def selected_keys(shard_dir, split: str | None, kinds: Iterable[str] | None) -> tuple[set[str], list[str]]:
    """The manifest's keys of one split (None: all) and kinds (None: all), and the shards holding them, by name."""
    manifest = read_manifest(shard_dir).to_pylist()
    kinds = set(kinds) if kinds else None
    wanted = {
        r["key"] for r in manifest if (split is None or r["split"] == split) and (not kinds or r["kind"] in kinds)
    }
    return wanted, sorted({r["shard"] for r in manifest if r["key"] in wanted})


def iter_samples(shard_dir, split: str | None = None, kinds: Iterable[str] | None = None) -> Iterator[dict]:
    """Decoded samples (images as numpy arrays, JSON fields merged in) of one split, in shard order."""
    wanted, shards = selected_keys(shard_dir, split, kinds)
    if not shards:
        return
    urls = [str(Path(shard_dir) / s) for s in shards]
    # nodesplitter=None: every rank of a multi-process job reads the whole split (each draws its own batches from
    # it with a rank-seeded generator); webdataset's default refuses to run under torch.distributed instead
    for sample in wds.WebDataset(urls, shardshuffle=False, empty_check=False, nodesplitter=None):
        if sample["__key__"] in wanted:
            yield _decode(sample)


def load_samples(shard_dir, split: str | None = None, kinds: Iterable[str] | None = None) -> list[dict]:
    return list(iter_samples(shard_dir, split, kinds))
