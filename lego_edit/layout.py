"""Where a run's products live: the one definition of the ``results/`` layout, shared by the Snakemake rules
(``rules/common.smk`` builds ``RUN = RunLayout("results")``) and the library (a run folder given on the command
line, ``lego-edit edit --run``, ``lego-edit run-workflow --models``).

Paths are strings, relative to the run's root as given, so that a rule's input, output and log read the same as
before; a method's default argument is the rule's wildcard (``RUN.shards()`` is ``results/data/shards/{family}``).
``BrickModels`` names the trained models the model-backed bricks load, each by its own path: the rules pass the
job's named inputs, a command-line user a run folder.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The edit bricks whose model is the shared edit base plus their own LoRA (bricks.edit.bricks picks which of
# them get a LoRA; the others run on the base).
EDIT_BRICK_NAMES = ("FILL", "RCM", "INPAINT", "CBG", "STYLE", "ENV", "POSE")
VLM_BRICK_MODELS = ("placement", "captioning")  # the ADD-PRED and CMI-PRED adapters over the base VLM
BUILDER_STAGES = ("base", "sft", "grpo_gt", "grpo_critic")
# The one brick -> trained model map: the BrickModels fields each model-backed brick loads (an edit brick: the shared
# base, then its own LoRA where it has one). Batch editing's model inputs and the brick binder both read it.
BRICK_MODELS: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(("RES", "SOS", "MASK-SEG"), ("segmentation",)),
    "ADD-PRED": ("base_vlm", "placement"),
    "CMI-PRED": ("base_vlm", "captioning"),
    **dict.fromkeys(EDIT_BRICK_NAMES, ("edit_base", "edit_lora")),
}
MEMBER_PREFIX = "member-"  # an ensemble's model folder holds one member-<k>/ folder per member


def member_folders(model_dir: str | Path) -> list[Path]:
    """An ensemble's ``member-<k>`` folders in member order (member-10 after member-2); none for one model."""
    members = [d for d in Path(model_dir).glob(f"{MEMBER_PREFIX}*") if d.is_dir()]
    return sorted(members, key=lambda d: int(d.name.removeprefix(MEMBER_PREFIX)))


@dataclass(frozen=True)
class RunLayout:
    """The folders and files of one pipeline run under ``root``."""

    root: str = "results"

    def __post_init__(self):
        object.__setattr__(self, "root", str(self.root))  # a Path is accepted; the paths stay strings

    def path(self, *parts: str) -> str:
        return "/".join((self.root.rstrip("/"), *parts))

    # --- data (rules/data.smk, rules/teacher.smk) ---
    @property
    def scenes(self) -> str:
        return self.path("data", "scenes.parquet")

    @property
    def scene_images(self) -> str:
        return self.path("data", "scene_images")

    def instructions(self, domain: str = "{domain}") -> str:
        return self.path("data", "instructions", f"{domain}.parquet")

    def targets(self, domain: str = "{domain}") -> str:
        return self.path("data", "targets", domain)

    def shards(self, family: str = "{family}") -> str:
        return self.path("data", "shards", family)

    def builder_sources(self, name: str) -> str:
        """The real-image sources' products: rows.parquet, placement.parquet, rejected.parquet, images."""
        return self.path("data", "builder_sources", name)

    def builder_data(self, name: str) -> str:
        """The Builder's mixed tables (gt.parquet, open.parquet), the teacher's verdicts and their summary."""
        return self.path("data", "builder", name)

    def teacher_chunk(self, item: str = "{scatteritem}") -> str:
        return self.path("data", "teacher", f"chunk_{item}.parquet")

    # --- trained models (rules/bricks.smk, rules/builder.smk) ---
    def brick(self, name: str) -> str:
        """A brick model's folder: segmentation, placement, captioning, edit_base, critic."""
        return self.path("bricks", name)

    @property
    def segmentation(self) -> str:
        return self.brick("segmentation")

    @property
    def edit_base(self) -> str:
        return self.brick("edit_base")

    @property
    def critic(self) -> str:
        return self.brick("critic")

    def edit_lora(self, brick: str = "{brick}") -> str:
        return self.path("bricks", "edit_lora", brick)

    def bricks_summary(self, suffix: str) -> str:
        return self.path("bricks", f"summary.{suffix}")

    def builder(self, stage: str = "{builder}") -> str:
        return self.path("builder", stage)

    def checkpoints(self, name: str) -> str:
        """A training stage's resumable checkpoints (not an output: a finished stage may delete them)."""
        return self.path("checkpoints", name)

    # --- evaluation, batch editing, report ---
    def eval_chunk(self, builder: str = "{builder}", evalset: str = "{evalset}", item: str = "{scatteritem}") -> str:
        return self.path("eval", builder, evalset, f"chunk_{item}.parquet")

    def eval_images(self, builder: str = "{builder}", evalset: str = "{evalset}", item: str = "{scatteritem}") -> str:
        return self.path("eval", builder, evalset, f"images_{item}")

    def eval_product(self, name: str) -> str:
        """The gathered evaluation: tables.md, items.parquet, stages.csv, ..., grids."""
        return self.path("eval", name)

    @property
    def edit_tree(self) -> str:
        """Batch editing's mirrored output tree."""
        return self.path("edit")

    def edit_chunk(self, item: str = "{scatteritem}") -> str:
        return self.path("edit", "chunks", f"{item}.parquet")

    @property
    def edit_manifest(self) -> str:
        return self.path("edit", "manifest.parquet")

    def report(self, name: str) -> str:
        return self.path("report", name)

    def curve(self, model: str = "{model}") -> str:
        return self.path("report", "curves", f"{model}.png")

    def brick_models(self) -> BrickModels:
        """Every brick model this run may hold (``BrickModels`` skips the ones that are not there)."""
        return BrickModels(
            segmentation=self.segmentation,
            base_vlm=self.builder("base"),
            placement=self.brick("placement"),
            captioning=self.brick("captioning"),
            edit_base=self.edit_base,
            edit_lora=tuple(self.edit_lora(b) for b in EDIT_BRICK_NAMES),
        )

    def model_folders(self) -> dict[str, str]:
        """Every trained model by its report name (builder_sft, edit_lora_FILL, ...)."""
        models = {n: self.brick(n) for n in ("segmentation", "placement", "captioning", "edit_base", "critic")}
        models.update({f"builder_{s}": self.builder(s) for s in BUILDER_STAGES[1:]})
        models.update({f"edit_lora_{b}": self.edit_lora(b) for b in EDIT_BRICK_NAMES})
        return models


@dataclass(frozen=True)
class BrickModels:
    """The trained models the model-backed bricks load, each by its own folder (None: not available).

    ``edit_lora`` lists one folder per edit brick, named after the brick; a brick without one runs on the base.
    """

    segmentation: str | None = None
    base_vlm: str | None = None  # the base VLM the placement and captioning adapters sit on
    placement: str | None = None
    captioning: str | None = None
    edit_base: str | None = None
    edit_lora: tuple[str, ...] = field(default=())

    @classmethod
    def of_run(cls, run_dir: str | Path) -> BrickModels:
        return RunLayout(run_dir).brick_models()

    @classmethod
    def of(cls, models: BrickModels | Mapping[str, Any] | str | Path) -> BrickModels:
        """``models`` itself, the folders a mapping names (``from_named``), or the models of a run folder."""
        if isinstance(models, BrickModels):
            return models
        return cls.from_named(models) if isinstance(models, Mapping) else cls.of_run(models)

    @classmethod
    def from_named(cls, named: Mapping[str, Any]) -> BrickModels:
        """From a job's named inputs (``dict(snakemake.input.items())``) or a config's ``models`` mapping: the
        keys this class has are taken, the others ignored."""
        lora = named.get("edit_lora") or ()
        return cls(
            segmentation=_one(named.get("segmentation")),
            base_vlm=_one(named.get("base_vlm")),
            placement=_one(named.get("placement")),
            captioning=_one(named.get("captioning")),
            edit_base=_one(named.get("edit_base")),
            edit_lora=(str(lora),) if isinstance(lora, (str, Path)) else tuple(str(p) for p in lora),
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "segmentation": self.segmentation,
            "base_vlm": self.base_vlm,
            "placement": self.placement,
            "captioning": self.captioning,
            "edit_base": self.edit_base,
            "edit_lora": list(self.edit_lora),
        }

    def folders_of(self, brick: str) -> tuple[str, ...]:
        """The folders ``brick`` loads (``BRICK_MODELS``), those that are set; an edit brick's LoRA only if it has
        one here."""
        out = []
        for name in BRICK_MODELS.get(brick, ()):
            if name == "edit_lora":
                out += [p for p in self.edit_lora if Path(p).name == brick]
            elif getattr(self, name) is not None:
                out.append(getattr(self, name))
        return tuple(out)

    def lora_folders(self) -> dict[str, Path]:
        """{edit brick: its LoRA folder}, by folder name."""
        return {Path(p).name: Path(p) for p in self.edit_lora}

    def describe(self) -> str:
        folders = [p for p in (self.segmentation, self.placement, self.captioning, self.edit_base) if p]
        return ", ".join(folders + list(self.edit_lora)) or "no model folders"


def _one(value) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, (list, tuple)):  # a Snakemake input named once but given as a list of one
        if len(value) != 1:
            raise ValueError(f"one model folder expected, got {len(value)}: {list(value)}")
        return str(value[0])
    return str(value)
