"""The Slurm profile, run for real on a one-node cluster (scripts/slurm-cluster.sh).

The toy workflow (fixtures/slurm_toy) goes through Slurm: every job must be an sbatch job, the
GPU rule must get its (fake) GPU, the outputs must equal a local run, and a job killed midway
must resume from its checkpoint, both when Slurm cancels it (retried by `retries:`) and when
Snakemake itself dies (`rerun-incomplete:` on the next run).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yte
from pipeline_fixtures import GPU_RULES
from slurm_helpers import (
    REPO,
    TEST_PROFILE,
    TOY_SNAKEFILE,
    USER_PROFILE,
    crash_job,
    job_state,
    run_snakemake_locally,
    run_snakemake_on_slurm,
    running_slurm_cluster,
    scancel,
    scontrol_job,
    start_snakemake_on_slurm,
    submitted_job_ids,
    wait_for,
)

# The rules the profiles give cluster settings (set-resources): the GPU rules, train_critic and make_shards.
PROFILED_RULES = {"make_shards", "read_builder_sources", "teacher_workflows", "edit_folder_chunk", *GPU_RULES}
# Where the test profile may differ from the user profile (each is commented "TEST:" there).
TEST_ONLY_TOP_KEYS = {"jobs", "latency-wait", "slurm-status-command", "slurm-init-seconds-before-status-checks"}
TEST_ONLY_RESOURCES = {"slurm_partition", "mem_mb", "gpu_model", "cpus_per_gpu"}
# Flags the plugin manages itself; in slurm_extra they stop it with a WorkflowError (STYLE.md §2).
PLUGIN_MANAGED_FLAGS = (
    "-A", "--account", "-p", "--partition", "--mem", "--time", "-t", "--gres", "--gpus", "--qos",
    "--cpus-per-task", "--cpus-per-gpu", "--ntasks", "--nodes", "--constraint", "-C", "--job-name", "-J",
)  # fmt: skip

STEPS = 12  # resume_demo: 12 steps of 1 s, checkpointed after each
RESUME_ARGS = ["results/resume_demo.txt", "--config", f"steps={STEPS}", "step_seconds=1"]


@pytest.fixture(scope="module")
def slurm_cluster():
    """The one-node cluster: up for this module (skipped without root/apt-get, failed under CI=true)."""
    with running_slurm_cluster() as cluster:
        yield cluster


def load_profile(profile_dir: Path) -> dict:
    """The profile as Snakemake reads it: YTE-rendered, None values dropped."""
    with open(profile_dir / "config.yaml") as f:
        data = yte.process_yaml(f, require_use_yte=True)

    def drop_none(x):
        if isinstance(x, dict):
            return {k: drop_none(v) for k, v in x.items() if v is not None}
        return x

    return drop_none(data)


def test_profiles_differ_only_where_needed():
    user, test = load_profile(USER_PROFILE), load_profile(TEST_PROFILE)
    assert user["executor"] == test["executor"] == "slurm"
    assert set(user["set-resources"]) == set(test["set-resources"]) == PROFILED_RULES
    assert user["default-resources"]["slurm_account"] == "'$SLURM_ACCOUNT'"
    for key in sorted((set(user) | set(test)) - TEST_ONLY_TOP_KEYS - {"default-resources", "set-resources"}):
        assert user.get(key) == test.get(key), f"profiles differ in {key}"
    user_default = {k: v for k, v in user["default-resources"].items() if k != "slurm_account"}
    assert set(user_default) == set(test["default-resources"])
    for key, value in user_default.items():
        assert key in TEST_ONLY_RESOURCES or test["default-resources"][key] == value, key
    for rule, resources in user["set-resources"].items():
        assert set(resources) == set(test["set-resources"][rule]), rule
        for key, value in resources.items():
            assert key in TEST_ONLY_RESOURCES or test["set-resources"][rule][key] == value, (rule, key)
    for profile in (user, test):
        extra = str(profile["default-resources"].get("slurm_extra", ""))
        assert not any(tok.split("=")[0] in PLUGIN_MANAGED_FLAGS for tok in extra.split()), extra


def test_workflow_profile_does_not_override_slurm_profile():
    """profiles/default is loaded after --profile and replaces whole top-level keys (STYLE.md §2)."""
    workflow_profile = REPO / "profiles" / "default" / "config.yaml"
    if not workflow_profile.exists():
        pytest.skip("no profiles/default/config.yaml")
    with open(workflow_profile) as f:
        default = yte.process_yaml(f, require_use_yte=True) or {}
    clash = set(default) & (set(load_profile(USER_PROFILE)) | set(load_profile(TEST_PROFILE)))
    assert not clash, f"profiles/default sets {sorted(clash)}, which would silently replace the Slurm profile's"


# Keys the Slurm profile does not set but that still change Slurm jobs when profiles/default sets
# them (and the Slurm profile cannot override them: profiles/default is applied last).
# Tried with Snakemake 9.27.1: `cores: 2` there turns a rule's `threads: 8` into 2 under
# --profile slurm, i.e. --cpus-per-task=2 for every job.  `resources:` caps jobs across the whole
# cluster (gpu=1: one GPU job at a time), set-threads/max-threads change --cpus-per-task.
CAPS_SLURM_JOBS = {"cores", "resources", "set-threads", "max-threads"}


def test_workflow_profile_does_not_cap_slurm_jobs():
    workflow_profile = REPO / "profiles" / "default" / "config.yaml"
    if not workflow_profile.exists():
        pytest.skip("no profiles/default/config.yaml")
    with open(workflow_profile) as f:
        default = yte.process_yaml(f, require_use_yte=True) or {}
    capping = sorted(set(default) & CAPS_SLURM_JOBS)
    assert not capping, (
        f"profiles/default sets {capping}: under --profile slurm this caps every job's threads/cores "
        "(e.g. cores: 2 -> --cpus-per-task=2).  Give --cores on the command line for local runs instead."
    )


def read_results(workdir: Path) -> dict[str, str]:
    return {str(p.relative_to(workdir)): p.read_text() for p in sorted((workdir / "results").rglob("*")) if p.is_file()}


@pytest.mark.slurm
def test_toy_workflow_runs_through_slurm(slurm_cluster, tmp_path):
    result = run_snakemake_on_slurm(tmp_path / "slurm", snakefile=TOY_SNAKEFILE)
    assert result.returncode == 0, result.stdout[-5000:]

    submitted = submitted_job_ids(result.stdout)
    assert len(submitted) == 3 == len(set(submitted)), result.stdout[-5000:]
    ran_in = {p.stem: json.loads(p.read_text())["SLURM_JOB_ID"] for p in (tmp_path / "slurm" / "jobs").glob("*.json")}
    assert set(ran_in) == {"prepare", "train_segmentation", "summarize"}
    assert set(ran_in.values()) == set(submitted), "every rule must run inside a job the plugin submitted"

    for rule, job_id in ran_in.items():
        job = scontrol_job(job_id)
        assert job["JobState"] == "COMPLETED", (rule, job)
        assert job["Partition"] == slurm_cluster.partition
        if rule == "train_segmentation":
            # gpu=1 + the profile's gpu_model -> --gpus=fake:1, allocated on the fake gres.
            assert job.get("TresPerJob") == f"gres:gpu:{slurm_cluster.gpu_type}:1", job
            gpu_env = json.loads((tmp_path / "slurm" / "jobs" / "train_segmentation.json").read_text())
            assert gpu_env["SLURM_GPUS_ON_NODE"] == "1"
            assert gpu_env["CUDA_VISIBLE_DEVICES"] in {str(i) for i in range(slurm_cluster.gpus)}
        else:
            assert "gpu" not in job.get("TresPerJob", ""), (rule, job)

    local = run_snakemake_locally(tmp_path / "local", snakefile=TOY_SNAKEFILE)
    assert local.returncode == 0, local.stdout[-5000:]
    assert read_results(tmp_path / "slurm") == read_results(tmp_path / "local")
    assert set(read_results(tmp_path / "slurm")) == {"results/numbers.txt", "results/model.txt", "results/summary.txt"}


def attempts(workdir: Path) -> list[dict]:
    path = workdir / "checkpoints" / "resume_demo.attempts"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def checkpoint_step(workdir: Path) -> int:
    path = workdir / "checkpoints" / "resume_demo.json"
    try:
        return json.loads(path.read_text())["step"]
    except (FileNotFoundError, json.JSONDecodeError):
        return 0


def expected_resume_output() -> str:
    return "".join(f"{i * i}\n" for i in range(STEPS))


@pytest.mark.slurm
def test_cancelled_job_is_resubmitted_and_resumes(slurm_cluster, tmp_path):
    proc, log = start_snakemake_on_slurm(tmp_path, RESUME_ARGS, snakefile=TOY_SNAKEFILE)
    try:
        wait_for(lambda: checkpoint_step(tmp_path) >= 3, timeout=120, what="3 checkpointed steps")
        first_job = attempts(tmp_path)[0]["job"]
        scancel(first_job)  # as a preemption or a node failure would
        assert proc.wait(timeout=300) == 0, log.read_text()[-5000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    runs = attempts(tmp_path)
    assert len(runs) == 2, runs
    assert runs[0] == {"job": first_job, "start": 0}
    assert runs[1]["job"] != first_job and runs[1]["start"] >= 3, "the retry must resume, not restart"
    assert scontrol_job(first_job)["JobState"] == "CANCELLED"
    assert submitted_job_ids(log.read_text()) == [first_job, runs[1]["job"]]
    assert (tmp_path / "results" / "resume_demo.txt").read_text() == expected_resume_output()


@pytest.mark.slurm
def test_rerun_incomplete_resumes_after_a_crash(slurm_cluster, tmp_path):
    proc, log = start_snakemake_on_slurm(tmp_path, RESUME_ARGS, snakefile=TOY_SNAKEFILE)
    try:
        wait_for(lambda: checkpoint_step(tmp_path) >= 3, timeout=120, what="3 checkpointed steps")
    finally:
        proc.kill()  # Snakemake dies without cleaning up (lost login session, OOM killer) ...
        proc.wait(timeout=30)
    first_job = attempts(tmp_path)[0]["job"]
    assert crash_job(first_job)  # ... and so does the node running its job
    wait_for(lambda: job_state(first_job) not in {"RUNNING", "COMPLETING"}, timeout=60, what="the job to end")
    partial = (tmp_path / "results" / "resume_demo.txt").read_text()
    assert 3 <= len(partial.splitlines()) < STEPS, "a partial output must be left behind"

    assert run_snakemake_on_slurm(tmp_path, ["--unlock"], snakefile=TOY_SNAKEFILE).returncode == 0
    # Without --rerun-incomplete Snakemake refuses to go on ...
    refused = run_snakemake_locally(tmp_path, ["--dry-run", *RESUME_ARGS], snakefile=TOY_SNAKEFILE)
    assert refused.returncode != 0 and "IncompleteFilesException" in refused.stdout, refused.stdout[-3000:]
    # ... with the profile's rerun-incomplete it reruns the job, which resumes from the checkpoint.
    result = run_snakemake_on_slurm(tmp_path, RESUME_ARGS, snakefile=TOY_SNAKEFILE)
    assert result.returncode == 0, result.stdout[-5000:]
    runs = attempts(tmp_path)
    assert len(runs) == 2, runs
    assert runs[1]["job"] in submitted_job_ids(result.stdout)
    assert runs[1]["start"] >= 3, "the rerun must resume from the checkpoint, not restart"
    assert (tmp_path / "results" / "resume_demo.txt").read_text() == expected_resume_output()


def test_gpu_jobs_stay_on_one_node():
    """torchrun --standalone starts every process of a job on its own node: a GPU job spread over two nodes would
    start its processes on the first one only."""
    for profile in (load_profile(USER_PROFILE), load_profile(TEST_PROFILE)):
        gpu_rules = {rule for rule, res in profile["set-resources"].items() if "gpu_model" in res}
        assert gpu_rules and all(profile["set-resources"][rule]["nodes"] == 1 for rule in gpu_rules)
