"""One end-to-end run of the pipeline on the small test config, shared by the pipeline tests (local and Slurm).

The run happens once per test session in a temporary directory (the checkout's results/ is never touched).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from data_fixtures import REPO, TEST_CONFIG, file_digests

SNAKEMAKE = [sys.executable, "-m", "snakemake"]
# The rules that train or run models: each asks for its section's `gpus` as the `gpu` resource.
GPU_RULES = (
    "train_segmentation",
    "train_vlm_brick",
    "train_edit_base",
    "train_edit_lora",
    "train_critic",
    "train_builder_sft",
    "train_builder_grpo_gt",
    "train_builder_grpo_critic",
    "edit_eval_chunk",
)


def snakemake(workdir: Path, *args: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    """``snakemake --snakefile <repo>/Snakefile --directory workdir ...``, output captured."""
    cmd = [*SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir), *args]
    return subprocess.run(
        cmd,
        cwd=workdir,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        check=False,
    )


def digests(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` but Snakemake's directory timestamps (they record when a job ran)."""
    return {k: v for k, v in file_digests(root).items() if Path(k).name != ".snakemake_timestamp"}


def dry_run_jobs(output: str) -> list[dict]:
    """The jobs a ``snakemake -n`` printed: [{"rule", "wildcards": {..}, "resources": {..}, "input": [..]}] in
    order."""
    jobs, current = [], None
    for line in output.splitlines():
        m = re.fullmatch(r"(?:local)?rule (\w+):", line)
        if m:
            current = {"rule": m.group(1), "wildcards": {}, "resources": {}, "input": []}
            jobs.append(current)
        elif current is not None and line.startswith("    ") and ": " in line:
            key, value = line.strip().split(": ", 1)
            if key in ("wildcards", "resources"):
                current[key] = dict(item.split("=", 1) for item in value.split(", ") if "=" in item)
            elif key == "input":
                current["input"] = value.split(", ")
        else:
            current = None
    return jobs


def whole_run(workdir: Path, configfile: Path) -> Path:
    """The whole DAG of ``configfile`` in ``workdir``, run locally with 2 cores (its log kept there); returns
    ``workdir``."""
    result = snakemake(workdir, "--cores", "2", "--configfile", str(configfile))
    (workdir / "snakemake.log").write_text(result.stdout)
    assert result.returncode == 0, result.stdout[-8000:]
    return workdir


@pytest.fixture(scope="session")
def pipeline_run(tmp_path_factory) -> Path:
    """The whole DAG of the test config; returns the working directory."""
    return whole_run(tmp_path_factory.mktemp("pipeline"), TEST_CONFIG)
