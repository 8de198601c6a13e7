"""Helpers shared by the data-stage tests (test_shapes, test_instructions, test_shards, test_data_pipeline).

Plain functions, not pytest fixtures, so each test module decides its own scope.
"""

from __future__ import annotations

import hashlib
import tarfile
from collections import defaultdict
from pathlib import Path

import numpy as np

from lego_edit.data.shapes import Obj, Scene, sample_scene

REPO = Path(__file__).resolve().parents[1]
TEST_CONFIG = REPO / ".test" / "config" / "config.yaml"


def random_scenes(n: int, seed: int = 0, size: int = 64, max_objects: int = 4, environment_rate: float = 0.3):
    """``n`` scenes drawn as the data stage draws them, one seeded stream per scene."""
    return [sample_scene(np.random.default_rng([seed, i]), size, max_objects, environment_rate) for i in range(n)]


def base_scene() -> Scene:
    """Three solid/striped objects at known boxes on a plain beige background (hand-checked pixel values)."""
    return Scene(
        64,
        64,
        "beige",
        "plain",
        "day",
        "none",
        (
            Obj("circle", "red", "solid", (6, 6, 16, 16)),
            Obj("triangle", "blue", "striped", (40, 6, 18, 18)),
            Obj("square", "green", "solid", (6, 40, 18, 18)),
        ),
    )


def tar_samples(path: Path) -> dict[str, dict[str, bytes]]:
    """{key: {extension: bytes}} of a webdataset tar, read with tarfile (no webdataset code involved).
    The key is the member name up to its first dot, as webdataset splits it."""
    out: dict[str, dict[str, bytes]] = defaultdict(dict)
    with tarfile.open(path) as tar:
        for member in tar.getmembers():
            key, ext = member.name.split(".", 1)
            out[key][ext] = tar.extractfile(member).read()
    return dict(out)


def file_digests(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root``, by path relative to it."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }
