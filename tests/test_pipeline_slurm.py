"""The pipeline's small test config through a real one-node Slurm cluster (scripts/slurm-cluster.sh).

Shows: every rule that is not a local rule runs as a Slurm job (one submission each, with its job id in the
log), GPU rules are submitted with their GPU request (the test node declares fake GPUs), the data products are
byte-identical to the local run's and the evaluation metrics equal within a tolerance, and a training job
cancelled with scancel midway resumes from its last checkpoint.
"""

from __future__ import annotations

import json
import re
import subprocess
import time

import pandas as pd
import pytest
import yaml
from pipeline_fixtures import REPO, digests
from slurm_helpers import (
    run_snakemake_on_slurm,
    running_slurm_cluster,
    scontrol_job,
    start_snakemake_on_slurm,
    submitted_job_ids,
)

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
LOCAL_RULES = {
    "all",
    "summarize_bricks",
    "summarize_eval",
    "plot_data_stats",
    "plot_training_curve",
    "gather_edit_manifest",
}
# Training runs with the threads Slurm grants a job (1 CPU per fake GPU) instead of the local run's 2; float
# sums then round differently, so trained weights differ in the last bits. Metrics that depend on them are
# compared with this tolerance; data products must be byte-identical.
METRIC_TOLERANCE = 0.05


@pytest.fixture(scope="module")
def slurm_cluster():
    with running_slurm_cluster() as cluster:
        yield cluster


def _gpu_config(tmp_path):
    """The test config, with one (fake) GPU per training and evaluation job: GPU rules then really ask for one."""
    config = yaml.safe_load((REPO / ".test/config/config.yaml").read_text())
    for section in ("segmentation", "placement", "captioning", "edit", "critic"):
        config["bricks"][section]["gpus"] = 1
    config["builder"]["gpus"] = 1
    config["evaluation"]["gpus"] = 1
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def slurm_run(slurm_cluster, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("slurm_pipeline")
    result = run_snakemake_on_slurm(workdir, ["--configfile", str(_gpu_config(workdir))], timeout=3000)
    assert result.returncode == 0, result.stdout[-8000:]
    return workdir, result.stdout


def test_every_rule_runs_as_a_slurm_job(slurm_run):
    workdir, log = slurm_run
    ids = submitted_job_ids(log)
    jobs = re.findall(r"^rule (\w+):", log, flags=re.M)
    remote = [j for j in jobs if j not in LOCAL_RULES]
    assert remote and len(ids) == len(remote), (len(ids), len(remote))
    assert len(set(ids)) == len(ids)
    # GPU rules were submitted with their GPU request (gres on the fake-GPU node).
    gpu_jobs = [scontrol_job(i) for i in ids]
    assert any("gpu" in (j.get("TresPerJob", "") + j.get("TresPerNode", "")) for j in gpu_jobs)


def test_data_products_match_the_local_run_byte_for_byte(slurm_run, pipeline_run):
    workdir, _ = slurm_run
    for sub in ("results/data", "results/builder/base"):
        assert digests(workdir / sub) == digests(pipeline_run / sub), sub


def test_evaluation_metrics_match_the_local_run(slurm_run, pipeline_run):
    workdir, _ = slurm_run
    a = pd.read_csv(workdir / "results/eval/builders.csv").set_index("builder")
    b = pd.read_csv(pipeline_run / "results/eval/builders.csv").set_index("builder")
    assert list(a.index) == list(b.index)
    assert list(a.columns) == list(b.columns)
    figures = ("n", "parse_rate", "valid_rate", "executable_rate", "brick_f1", "exact_match", "success")
    cols = [f"{split}_{f}" for split in ("gt", "open") for f in figures if f"{split}_{f}" in b.columns]
    assert "gt_success" in cols and "open_success" in cols
    for col in cols:
        pd.testing.assert_series_equal(a[col], b[col], check_exact=False, atol=METRIC_TOLERANCE, check_names=False)
    oracle_a, oracle_b = a.loc["oracle"], b.loc["oracle"]
    assert oracle_a["gt_brick_f1"] == oracle_b["gt_brick_f1"] == 1.0


def test_a_cancelled_training_job_resumes_from_its_checkpoint(slurm_cluster, tmp_path):
    """scancel train_segmentation midway; the rerun resubmits it and it resumes from its last checkpoint."""
    config = yaml.safe_load((REPO / ".test/config/config.yaml").read_text())
    config["bricks"]["segmentation"]["train"].update(steps=60, checkpoint_every=5, log_every=5)
    config["bricks"]["segmentation"]["gpus"] = 1  # a GPU job, as on a real cluster (the node's fake GPU)
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump(config))
    args = ["--configfile", str(cfg), "--retries", "0", "results/bricks/segmentation"]
    proc, log_path = start_snakemake_on_slurm(tmp_path, args)
    ckpt = tmp_path / "results/checkpoints/segmentation"
    deadline = time.time() + 900
    job = None
    while time.time() < deadline and proc.poll() is None:
        ids = submitted_job_ids(log_path.read_text())
        if list(ckpt.glob("checkpoint-*")) and ids:
            job = ids[-1]
            subprocess.run(["scancel", job], check=False)
            break
        time.sleep(1)
    proc.wait(timeout=600)
    assert job is not None, "the training job never checkpointed"
    saved = sorted(int(p.name.split("-")[1]) for p in ckpt.glob("checkpoint-*"))
    result = run_snakemake_on_slurm(tmp_path, args + ["--rerun-incomplete"], timeout=900)
    assert result.returncode == 0, result.stdout[-6000:]
    log = (tmp_path / "logs/train_segmentation.log").read_text()
    assert "resumed from" in log and f"at step {saved[-1]}" in log, log[-2000:]
    metrics = json.loads((tmp_path / "results/bricks/segmentation/metrics.json").read_text())
    assert metrics["steps"] == 60
