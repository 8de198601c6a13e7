"""Run a training stage in this process, or under ``accelerate launch`` with one process per GPU.

The pipeline's training rules call ``run_stage``; the number of GPUs comes from the config, so multi-GPU
training is a config number, not a code change. With 0 or 1 GPU the stage runs in-process (no launcher
start-up cost on a laptop).
"""

from __future__ import annotations

import importlib
import json
import logging
import subprocess
import sys
import tempfile
from pathlib import Path

from .training.common import build_config

log = logging.getLogger(__name__)


def run_stage(module: str, config_cls_name: str, values: dict, gpus: int = 0, main_name: str = "main"):
    mod = importlib.import_module(module)
    config_cls = getattr(mod, config_cls_name)
    cfg = build_config(config_cls, values)  # validate here, before any launcher starts
    if gpus <= 1:
        return getattr(mod, main_name)(cfg)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(values, f)
        path = f.name
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(gpus), "--multi_gpu",
           "-m", module, "--config", path]
    log.info("launching: %s", " ".join(cmd))
    try:
        subprocess.run(cmd, check=True)
    finally:
        Path(path).unlink(missing_ok=True)
    return None
