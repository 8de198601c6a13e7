"""Scenes and instruction tables: the shapes-world data every later stage reads.

Scenes are split by scene index into train / val / test, so no scene (and none of its instructions)
lands in two splits. Each scene and each instruction draws from its own seeded random stream, so the
output depends only on the config, not on iteration order. Tables are parquet (inspect them with pandas);
images are PNG files whose paths the tables hold.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from ..imageio import atomic_write_bytes, encode_png
from .instructions import CATEGORIES, make_instruction
from .shapes import Scene, render, sample_scene

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")
DOMAINS = ("gt", "open")
_SCENE_STREAM, _INSTRUCTION_STREAM = 1, 2


@dataclass
class SceneConfig:
    seed: int = field(default=0, metadata={"help": "Seed of every random draw in the data stage."})
    image_size: int = field(
        default=64, metadata={"help": "Side of the square scenes, in pixels.", "minimum": 32, "multipleOf": 16}
    )
    max_objects: int = field(
        default=4, metadata={"help": "At most this many objects per scene (at least 1).", "minimum": 1, "maximum": 4}
    )
    environment_rate: float = field(
        default=0.15, metadata={"help": "Share of scenes rendered with an environment.", "minimum": 0, "maximum": 1}
    )
    train: int = field(default=1600, metadata={"help": "Number of training scenes.", "minimum": 0})
    val: int = field(default=100, metadata={"help": "Number of validation scenes.", "minimum": 0})
    test: int = field(default=400, metadata={"help": "Number of test scenes.", "minimum": 0})

    def __post_init__(self):
        if self.image_size < 32 or self.image_size % 16:
            raise ValueError(f"image_size must be a multiple of 16 and at least 32, got {self.image_size}")
        if not 1 <= self.max_objects <= 4:
            raise ValueError(f"max_objects must be 1..4, got {self.max_objects}")
        if min(self.train, self.val, self.test) < 0:
            raise ValueError("scene counts must not be negative")


@dataclass
class InstructionConfig:
    seed: int = field(default=0, metadata={"help": "Seed of the instruction draws."})
    per_scene: int = field(default=2, metadata={"help": "Instructions written for each scene."})
    rl_per_scene: int = field(
        default=0,
        metadata={
            "help": "Further instructions per training scene, in the 'rl' split: prompts for stage 2 that SFT never "
            "saw (its own training instructions it has learned by heart, so they give GRPO no gradient)."
        },
    )
    categories: list[str] = field(
        default_factory=lambda: list(CATEGORIES), metadata={"help": "Edit categories to draw from (uniformly)."}
    )

    def __post_init__(self):
        unknown = set(self.categories) - set(CATEGORIES)
        if unknown:
            raise ValueError(f"unknown categories {sorted(unknown)}; known: {', '.join(CATEGORIES)}")
        if self.per_scene < 0 or self.rl_per_scene < 0:
            raise ValueError("per_scene and rl_per_scene must not be negative")


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng([int(k) for k in key])


def scene_splits(cfg: SceneConfig) -> list[tuple[int, str]]:
    out = []
    for split in SPLITS:
        start = len(out)
        out.extend((start + i, split) for i in range(getattr(cfg, split)))
    return out


def make_scenes(cfg: SceneConfig, table_path: str | Path, image_dir: str | Path) -> pa.Table:
    """Sample and render every scene; write the PNGs and the scenes table."""
    image_dir = Path(image_dir)
    image_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for index, split in tqdm(scene_splits(cfg), desc="scenes", mininterval=5):
        scene = sample_scene(
            _rng(cfg.seed, _SCENE_STREAM, index), cfg.image_size, cfg.max_objects, cfg.environment_rate
        )
        path = image_dir / f"scene_{index:06d}.png"
        atomic_write_bytes(path, encode_png(render(scene)))
        rows.append(
            {
                "scene_id": index,
                "scene_seed": cfg.seed,
                "split": split,
                "n_objects": len(scene.objects),
                "background": scene.background,
                "environment": scene.environment,
                "scene": scene.to_json(),
                "image_path": str(path),
            }
        )
    table = pa.Table.from_pylist(rows)
    write_table(table, table_path)
    return table


def write_table(table: pa.Table, path: str | Path) -> None:
    """Parquet without timestamps or writer metadata that would vary between runs, written atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(
        table.replace_schema_metadata(None), tmp, compression="zstd", write_statistics=False, store_schema=False
    )
    tmp.replace(path)


def load_scenes(table_path: str | Path, split: str | None = None) -> list[dict]:
    rows = pq.read_table(table_path).to_pylist()
    return [r for r in rows if split is None or r["split"] == split]


# The instruction tables' columns (the Builder's stages read these; real rows leave the scene columns null).
INSTRUCTION_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("scene_id", pa.int64()),
        ("scene_seed", pa.int64()),
        ("split", pa.string()),
        ("domain", pa.string()),
        ("category", pa.string()),
        ("parts", pa.list_(pa.string())),
        ("instruction", pa.string()),
        ("reasoning", pa.string()),
        ("workflow", pa.string()),
        ("image_path", pa.string()),
        ("target_path", pa.string()),
        ("target_scene", pa.string()),
    ]
)


def make_instructions(
    cfg: InstructionConfig, domain: str, scenes_path: str | Path, table_path: str | Path, target_dir: str | Path
) -> pa.Table:
    """``per_scene`` instructions per scene in ``domain`` ('gt' with workflows, 'open' without), and
    ``rl_per_scene`` more per training scene in the split 'rl'. Each instruction's draws are keyed by its scene and
    index, so adding 'rl' instructions leaves the others as they were."""
    if domain not in DOMAINS:
        raise ValueError(f"domain must be one of {DOMAINS}, got {domain!r}")
    target_dir = Path(target_dir)
    target_dir.mkdir(parents=True, exist_ok=True)
    stream = DOMAINS.index(domain)
    rows = []
    for scene_row in tqdm(load_scenes(scenes_path), desc=f"{domain} instructions", mininterval=5):
        scene = Scene.from_json(scene_row["scene"])
        extra = cfg.rl_per_scene if scene_row["split"] == "train" else 0
        for k in range(cfg.per_scene + extra):
            rng = _rng(cfg.seed, _INSTRUCTION_STREAM, stream, scene_row["scene_id"], k)
            inst = None
            order = rng.permutation(len(cfg.categories))
            for c in order:  # a category the scene cannot take (pose without a triangle) falls through
                inst = make_instruction(scene, cfg.categories[int(c)], rng, domain)
                if inst is not None:
                    break
            if inst is None:
                continue
            iid = f"{domain}_{scene_row['scene_id']:06d}_{k}"
            path = target_dir / f"{iid}.png"
            atomic_write_bytes(path, encode_png(inst.target))
            rows.append(
                {
                    "id": iid,
                    "scene_id": scene_row["scene_id"],
                    "scene_seed": scene_row["scene_seed"],
                    "split": scene_row["split"] if k < cfg.per_scene else "rl",
                    "domain": domain,
                    "category": inst.category,
                    "parts": inst.parts,
                    "instruction": inst.text,
                    "reasoning": inst.reasoning or None,
                    "workflow": json.dumps(inst.workflow, separators=(",", ":")) if inst.workflow else None,
                    "image_path": scene_row["image_path"],
                    "target_path": str(path),
                    "target_scene": inst.target_scene.to_json() if inst.target_scene else None,
                }
            )
    table = pa.Table.from_pylist(rows, schema=INSTRUCTION_SCHEMA)
    write_table(table, table_path)
    return table


def load_instructions(table_path: str | Path, split: str | None = None) -> list[dict]:
    rows = pq.read_table(table_path).to_pylist()
    return [r for r in rows if split is None or r["split"] == split]


def select_rows(rows: list[dict], limit: int, seed: int) -> list[dict]:
    """A seeded random subset of ``limit`` rows in their table order (all rows if ``limit`` is 0 or covers them)."""
    if not limit or len(rows) <= limit:
        return rows
    idx = np.random.default_rng(seed).permutation(len(rows))[:limit]
    return [rows[i] for i in sorted(idx)]
