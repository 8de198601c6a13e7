"""Run a training stage in this process, or as one process per granted GPU.

The pipeline's training rules call ``run_stage`` with the GPU count Snakemake granted the job (its ``gpu``
resource, which a profile may override without rerunning anything), so multi-GPU training is a resource, not a
code change. With 0 or 1 GPU the stage runs in-process (no launcher start-up cost on a laptop). Several
processes are started by ``torch.distributed.run`` (torchrun): on GPUs each rank takes its own device (NCCL);
without CUDA the same code runs with the gloo backend, which is how the tests run two ranks on a CPU.

Inside a stage, ``training.common.process_index()`` / ``is_main_process()`` tell the ranks apart: every rank
trains, rank 0 alone writes the outputs.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from .pipeline import config_from

log = logging.getLogger(__name__)


def launch_command(module: str, config_path: str | Path, processes: int) -> list[str]:
    """torchrun on this node (``--standalone``: a free rendezvous port, so several jobs can share a node)."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        str(processes),
        "-m",
        module,
        "--config",
        str(config_path),
    ]


def run_stage(
    module: str,
    config_cls_name: str,
    values: dict,
    gpus: int = 0,
    main_name: str = "main",
    processes: int | None = None,
    inputs=(),
):
    """Validate ``values`` as ``module.config_cls_name`` and run ``module.main`` with it: in this process, or in
    ``processes`` processes (default: one per GPU in ``gpus``). ``inputs`` (the rule's input files and folders):
    checkpoints resume only a run of the same config on the same inputs."""
    mod = importlib.import_module(module)
    config_cls = getattr(mod, config_cls_name)
    cfg = config_from(config_cls, values)  # validate here, before any launcher starts
    if getattr(cfg, "checkpoint_dir", ""):  # once, before the ranks start: a changed config does not resume
        from .training.state import claim_checkpoints, input_fingerprint

        # the GPU count is the job's resource, not what it learns: a job may resume on another number of GPUs
        fingerprint = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "gpus"}
        claim_checkpoints(cfg.checkpoint_dir, {**fingerprint, "inputs": input_fingerprint(inputs)})
    processes = max(1, int(gpus)) if processes is None else int(processes)
    if processes < 1:
        raise ValueError(f"processes must be at least 1, got {processes}")
    if processes == 1:
        return getattr(mod, main_name)(cfg)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(values, f)
        path = f.name
    cmd = launch_command(module, path, processes)
    # OMP threads per rank: the job's cores shared out, not torchrun's default of 1 with a warning
    env = {
        **os.environ,
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // processes))),
    }
    log.info("launching %d processes: %s", processes, " ".join(cmd))
    try:
        subprocess.run(cmd, check=True, env=env)
    finally:
        Path(path).unlink(missing_ok=True)
    return None
