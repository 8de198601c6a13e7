"""Shared bits of the training entry points: the command line (config file -> config dataclass), output folders,
metrics files, and which rank of a multi-process stage this is."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from ..imageio import atomic_write_json
from ..pipeline import config_from


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
    """``python -m lego_edit.training.<stage> --config cfg.json``: the same entry point
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
    main(config_from(config_cls, values))
    _leave_process_group()


def _leave_process_group() -> None:
    """A launched rank waits for the others (rank 0 may still be writing the outputs), then leaves the process
    group: a rank that exits with the group alive can abort in its teardown ("terminate called without an active
    exception", SIGABRT), which torchrun reports as the stage failing."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
