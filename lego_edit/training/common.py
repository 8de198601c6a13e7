"""Shared bits of the training entry points: nested config dataclasses from dicts, output folders,
metrics files, and which rank of a multi-process stage this is."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import typing
from pathlib import Path

from ..imageio import atomic_write_json


def build_config(cls, values: dict | None):
    """A (nested) config dataclass from a dict; unknown keys raise ValueError naming them."""
    values = dict(values or {})
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"{cls.__name__} has no option(s) {', '.join(unknown)}; it has {', '.join(sorted(names))}")
    for key, value in list(values.items()):
        hint = hints.get(key)
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            values[key] = build_config(hint, value)
        elif typing.get_origin(hint) in (list, tuple) and value is not None and not isinstance(value, str):
            values[key] = list(value)
    return cls(**values)


def process_index() -> int:
    """This process's rank in a multi-process stage started by ``launch.run_stage`` (0 when it runs alone)."""
    return int(os.environ.get("RANK", "0"))


def num_processes() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    return process_index() == 0


def rank_finished(name: str, steps: int) -> bool:
    """Log that this rank finished ``steps`` training steps of ``name``; True on rank 0, which alone then
    evaluates and writes the outputs (the other ranks stop here)."""
    logging.getLogger(__name__).info(
        "rank %d of %d: %s trained %d steps%s",
        process_index(),
        num_processes(),
        name,
        steps,
        "" if is_main_process() else "; rank 0 writes the outputs",
    )
    return is_main_process()


def write_metrics(out_dir: str | Path, metrics: dict) -> None:
    atomic_write_json(Path(out_dir) / "metrics.json", metrics)


def cli(config_cls, main) -> None:
    """``python -m lego_edit.training.<stage> --config cfg.json [--set key=value ...]``: the same entry point
    the pipeline uses, runnable without Snakemake (and by ``torchrun``, one process per GPU: see
    ``launch.run_stage``)."""
    import argparse

    p = argparse.ArgumentParser(description=(main.__module__ or "") + ": " + (config_cls.__doc__ or "").strip())
    p.add_argument("--config", required=True, help="JSON or YAML file with the stage's config")
    args = p.parse_args()
    text = Path(args.config).read_text()
    if args.config.endswith((".yaml", ".yml")):
        import yaml

        values = yaml.safe_load(text)
    else:
        values = json.loads(text)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if "LOCAL_RANK" in os.environ:
        import torch

        if torch.cuda.is_available():  # a launched rank: "cuda" is its own GPU, not every rank on cuda:0
            torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    main(build_config(config_cls, values))
    _leave_process_group()


def _leave_process_group() -> None:
    """A launched rank waits for the others (rank 0 may still be writing the outputs), then leaves the process
    group: a rank that exits with the group alive can abort in its teardown ("terminate called without an active
    exception", SIGABRT), which torchrun reports as the stage failing."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
