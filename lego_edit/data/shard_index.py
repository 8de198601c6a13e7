"""Random access to a shard set's samples without holding the split in memory.

``ShardSamples`` reads the tar headers of a split's shards once (an index: each sample's members and their byte
ranges), then ``samples[i]`` reads and decodes that one sample from its shard. A trainer that draws its batches by
index (the bricks' loop: the batch of step s is a pure function of the seed and s) keeps its exact resume and its
exact batches, while memory holds one batch, not a paper-scale split (80k 256 px segmentation samples, 140k 768 px
edit pairs). ``keep_decoded=True`` memoises decoded samples instead: the embedded default's small splits are decoded
once, as before, by the same code path.

The index is the order ``iter_samples`` yields: shards sorted by name, samples in tar order.
"""

from __future__ import annotations

import json
import struct
import tarfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from .shards import _decode, selected_keys

# PNG colour type -> channels of the array PIL decodes it to (None: a 2-D array)
_PNG_CHANNELS = {0: None, 2: 3, 3: None, 4: 2, 6: 4}


def png_shape(head: bytes) -> tuple[int, ...]:
    """The numpy shape ``np.asarray(Image.open(png))`` has, from the PNG's first 26 bytes (its IHDR chunk)."""
    if len(head) < 26 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        raise ValueError("not a PNG header")
    width, height = struct.unpack(">II", head[16:24])
    channels = _PNG_CHANNELS.get(head[25])
    return (height, width) if channels is None else (height, width, channels)


def sample_meta(samples, i: int) -> dict:
    """Sample ``i``'s fields without its images and ``__shapes__`` (image field -> array shape), from a
    ``ShardSamples`` or ``ConcatSamples`` (no image decoded) or from a list of decoded samples."""
    if hasattr(samples, "meta"):
        return samples.meta(i)
    s = samples[i]
    arrays = {k: v.shape for k, v in s.items() if isinstance(v, np.ndarray)}
    return {**{k: v for k, v in s.items() if k not in arrays}, "__shapes__": arrays}


def first_of_each(samples, field: str, kinds: Iterable[str], n: int, images: Iterable[str] = ()) -> list[dict]:
    """The first ``n`` samples of each kind (``field``'s value) that hold every image in ``images``, decoded, in the
    split's order. From a ``ShardSamples`` only these are decoded: an evaluation scores a few samples per brick, and
    the split need not be held."""
    counts = dict.fromkeys(kinds, 0)
    picked = []
    for i in range(len(samples)):
        meta = sample_meta(samples, i)
        kind = meta.get(field)
        if kind in counts and counts[kind] < n and all(name in meta["__shapes__"] for name in images):
            counts[kind] += 1
            picked.append(samples[i])
            if all(c == n for c in counts.values()):
                break  # the rest of the split is not read
    return picked


class ShardSamples(Sequence):
    """The decoded samples of one split (and optionally some kinds) of a shard set, by index."""

    def __init__(
        self, shard_dir, split: str | None = None, kinds: Iterable[str] | None = None, keep_decoded: bool = False
    ):
        self.shard_dir = Path(shard_dir)
        wanted, self.shards = selected_keys(shard_dir, split, kinds)
        # per sample: (shard number, key, [(member suffix, offset, size), ...]) in tar order
        self._index: list[tuple[int, str, list[tuple[str, int, int]]]] = []
        for number, name in enumerate(self.shards):
            self._index_shard(number, self.shard_dir / name, wanted)
        self._files: dict[int, object] = {}
        self._decoded: dict[int, dict] | None = {} if keep_decoded else None
        self._meta: dict[int, dict] = {}

    def _index_shard(self, number: int, path: Path, wanted: set[str]) -> None:
        # tarfile reads each header and seeks over the member's data: the images are not read here
        with tarfile.open(path, "r:") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                base = member.name.rsplit("/", 1)[-1]
                prefix = member.name[: len(member.name) - len(base)]
                stem, _, suffix = base.partition(".")
                key = prefix + stem
                if key not in wanted:
                    continue
                if not self._index or self._index[-1][1] != key or self._index[-1][0] != number:
                    self._index.append((number, key, []))
                self._index[-1][2].append((suffix, member.offset_data, member.size))

    def __len__(self) -> int:
        return len(self._index)

    def _read(self, number: int, offset: int, size: int) -> bytes:
        f = self._files.get(number)
        if f is None:
            f = self._files[number] = open(self.shard_dir / self.shards[number], "rb")  # noqa: SIM115 - kept open
        f.seek(offset)
        return f.read(size)

    def raw(self, i: int) -> dict:
        """Sample ``i`` as webdataset yields it: {"__key__": key, "<suffix>": bytes}."""
        number, key, members = self._index[i]
        return {"__key__": key, **{suffix: self._read(number, off, size) for suffix, off, size in members}}

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        i = range(len(self))[i]  # negative indices, and IndexError past the end
        if self._decoded is not None and i in self._decoded:
            return self._decoded[i]
        sample = _decode(self.raw(i))
        if self._decoded is not None:
            self._decoded[i] = sample
        return sample

    def meta(self, i: int) -> dict:
        """Sample ``i``'s JSON fields and key, plus ``__shapes__`` (each image field's array shape, from its PNG
        header), without decoding an image: a trainer's pass over every sample's brick, prompt or task reads only
        these."""
        if i not in self._meta:
            number, key, members = self._index[i]
            fields = {"__key__": key}
            shapes = {}
            for suffix, off, size in members:
                if suffix == "json":
                    fields.update(json.loads(self._read(number, off, size)))
                elif suffix.endswith(".png"):
                    shapes[suffix[:-4]] = png_shape(self._read(number, off, min(size, 26)))
            self._meta[i] = {**fields, "__shapes__": shapes}
        return self._meta[i]

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()

    def __del__(self):
        self.close()


class ConcatSamples(Sequence):
    """Several sample sequences (``ShardSamples`` or lists of decoded samples) read as one, by index; ``meta`` reads
    a sample's fields as ``sample_meta`` does (from a ``ShardSamples``, without decoding an image)."""

    def __init__(self, parts: Iterable[Sequence]):
        self.parts = list(parts)
        self.starts = np.cumsum([0] + [len(p) for p in self.parts])

    def __len__(self) -> int:
        return int(self.starts[-1])

    def _where(self, i: int) -> tuple[Sequence, int]:
        i = range(len(self))[i]  # negative indices, and IndexError past the end
        k = int(np.searchsorted(self.starts, i, side="right")) - 1
        return self.parts[k], i - int(self.starts[k])

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        part, j = self._where(i)
        return part[j]

    def meta(self, i: int) -> dict:
        part, j = self._where(i)
        return sample_meta(part, j)
