"""A real one-node Slurm cluster for tests, and helpers to run Snakemake through it.

The cluster is started by scripts/slurm-cluster.sh (root, Debian's slurm-wlm + munge, 2 fake GPUs
of type "fake") and driven with the test profile .test/slurm/config.yaml.

Reuse from another test module (e.g. the real pipeline on its small test config):

    from slurm_helpers import REPO, run_snakemake_on_slurm, running_slurm_cluster

    @pytest.fixture(scope="module")
    def slurm_cluster():
        with running_slurm_cluster() as cluster:
            yield cluster

    @pytest.mark.slurm
    def test_pipeline_on_slurm(slurm_cluster, tmp_path):
        result = run_snakemake_on_slurm(tmp_path, ["--configfile", str(REPO / ".test/config/config.yaml")])
        assert result.returncode == 0, result.stdout[-5000:]

Module-scoped, it brings the cluster up once per module (`up` takes ~1-3 s when the packages are
installed, ~11 s with the apt install) and down after the module, unless it was already up
before (then any user may run the tests).  It needs root or passwordless sudo to start the
cluster; without them, or without apt-get, the tests are skipped, except under CI=true, where
they fail: CI must never silently skip the cluster tests.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CLUSTER_SCRIPT = REPO / "scripts" / "slurm-cluster.sh"
USER_PROFILE = REPO / "slurm"
TEST_PROFILE = REPO / ".test" / "slurm"
TOY_SNAKEFILE = Path(__file__).resolve().parent / "fixtures" / "slurm_toy" / "Snakefile"

#: scripts/slurm-cluster.sh exits with this when the packages are missing and cannot be installed.
EXIT_CANNOT_INSTALL = 3
#: The plugin's log line for each submission (snakemake-executor-plugin-slurm 2.8.0).
_SUBMITTED = re.compile(r"has been submitted with SLURM jobid (\d+)")


@dataclass(frozen=True)
class SlurmCluster:
    """What the tests may rely on about the running cluster."""

    partition: str = os.environ.get("LEGO_SLURM_PARTITION", "debug")
    gpus: int = int(os.environ.get("LEGO_SLURM_GPUS", "2"))
    gpu_type: str = os.environ.get("LEGO_SLURM_GPU_TYPE", "fake")


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def skip_or_fail(reason: str) -> None:
    """Skip locally; fail under CI=true, where a skipped cluster test would hide a broken setup."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: the Slurm tests must run, not skip)", pytrace=False)
    pytest.skip(reason)


def _privilege_prefix() -> list[str] | None:
    """How to run scripts/slurm-cluster.sh as root: directly, through passwordless sudo
    (GitHub-hosted runners), or not at all (None)."""
    if os.geteuid() == 0:
        return []
    if shutil.which("sudo"):
        probe = subprocess.run(["sudo", "-n", "true"], capture_output=True, timeout=30, check=False)
        if probe.returncode == 0:
            return [
                "sudo",
                "-n",
                "--preserve-env=LEGO_SLURM_DIR,LEGO_SLURM_PARTITION,LEGO_SLURM_GPUS,LEGO_SLURM_GPU_TYPE",
            ]
    return None


def cluster_script(action: str, timeout: float = 120, prefix: Sequence[str] = ()) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*prefix, "bash", str(CLUSTER_SCRIPT), action],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@contextmanager
def running_slurm_cluster() -> Iterator[SlurmCluster]:
    """Bring the cluster up (or skip/fail with the reason), yield, then bring it down.

    A cluster that is already up (e.g. started by `sudo scripts/slurm-cluster.sh up` in a CI step)
    is used as it is, by any user, and left running.
    """
    if cluster_script("status", timeout=30).returncode == 0:
        yield SlurmCluster()
        return
    prefix = _privilege_prefix()
    if prefix is None:
        skip_or_fail(
            "the one-node Slurm cluster needs root or passwordless sudo "
            "(or start it first: sudo scripts/slurm-cluster.sh up)"
        )
    if not shutil.which("slurmctld", path="/usr/sbin:/usr/bin:/sbin:/bin") and not shutil.which("apt-get"):
        skip_or_fail("Slurm is not installed and apt-get is not available to install it")
    up = cluster_script("up", timeout=1200, prefix=prefix)
    if up.returncode == EXIT_CANNOT_INSTALL:
        skip_or_fail(f"cannot install slurm-wlm/munge: {up.stderr.strip()[-500:]}")
    if up.returncode != 0:
        cluster_script("down", prefix=prefix)
        pytest.fail(f"scripts/slurm-cluster.sh up failed (rc={up.returncode}):\n{up.stderr[-3000:]}", pytrace=False)
    try:
        yield SlurmCluster()
    finally:
        cluster_script("down", prefix=prefix)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    # Jobs run with `sbatch --export=ALL`: make sure this interpreter's bin dir (the venv) is on PATH.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def snakemake_command(
    workdir: Path,
    extra_args: Sequence[str] = (),
    *,
    snakefile: Path = REPO / "Snakefile",
    profile: Path | None = TEST_PROFILE,
) -> list[str]:
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(snakefile), "--directory", str(workdir)]
    if profile is not None:
        cmd += ["--profile", str(profile)]
    return cmd + list(extra_args)


def run_snakemake_on_slurm(
    workdir: Path,
    extra_args: Sequence[str] = (),
    *,
    snakefile: Path = REPO / "Snakefile",
    profile: Path = TEST_PROFILE,
    timeout: float = 900,
) -> subprocess.CompletedProcess[str]:
    """Run `snakemake --profile .test/slurm` on `snakefile` in `workdir`; stdout and stderr together.

    Runs with the working directory as cwd, so only the Snakefile's own profiles/default is
    loaded as workflow profile (as for a user), not one lying in the caller's cwd.  Give paths in
    `extra_args` absolute or relative to `workdir`.  The log is also written to
    `workdir/snakemake-slurm.log`.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        snakemake_command(workdir, extra_args, snakefile=snakefile, profile=profile),
        cwd=workdir,
        env=_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        check=False,
    )
    with open(workdir / "snakemake-slurm.log", "a") as log:
        log.write(result.stdout)
    return result


def start_snakemake_on_slurm(
    workdir: Path,
    extra_args: Sequence[str] = (),
    *,
    snakefile: Path = REPO / "Snakefile",
    profile: Path = TEST_PROFILE,
) -> tuple[subprocess.Popen[bytes], Path]:
    """Like run_snakemake_on_slurm, but in the background (for kill tests): (process, log path)."""
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "snakemake-slurm.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            snakemake_command(workdir, extra_args, snakefile=snakefile, profile=profile),
            cwd=workdir,
            env=_env(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return proc, log_path


def run_snakemake_locally(
    workdir: Path,
    extra_args: Sequence[str] = (),
    *,
    snakefile: Path = REPO / "Snakefile",
    cores: int = 2,
    timeout: float = 900,
) -> subprocess.CompletedProcess[str]:
    """The same workflow with the local executor (`--cores 2`), for comparing outputs."""
    workdir.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        snakemake_command(workdir, ["--cores", str(cores), *extra_args], snakefile=snakefile, profile=None),
        cwd=workdir,
        env=_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        check=False,
    )


def submitted_job_ids(log_text: str) -> list[str]:
    """Slurm job ids the plugin reported submitting, in order."""
    return _SUBMITTED.findall(log_text)


def scontrol_job(job_id: str) -> dict[str, str]:
    """`scontrol show job -o ID` as a dict (finished jobs stay visible for MinJobAge = 600 s)."""
    out = subprocess.run(
        ["scontrol", "show", "job", "-o", str(job_id)], capture_output=True, text=True, timeout=30, check=True
    ).stdout
    return dict(tok.split("=", 1) for tok in out.split() if "=" in tok)


def job_state(job_id: str) -> str:
    out = subprocess.run(
        ["squeue", "-h", "--states=all", "-j", str(job_id), "-o", "%T"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    ).stdout.strip()
    return out or "UNKNOWN"


def scancel(job_id: str) -> None:
    """Cancel a job the way a user, a preemption or the wall time does: the job gets SIGTERM first,
    and Snakemake inside it removes the job's (incomplete) outputs."""
    subprocess.run(["scancel", str(job_id)], timeout=30, check=True)


def crash_job(job_id: str) -> list[int]:
    """Kill every process of a running job as a node crash would: nothing inside the job gets to
    clean up, so its partial outputs and Snakemake's incomplete markers stay behind.

    The pids come from `scontrol listpids` (the job's own processes, nothing else).  All are
    stopped first and only then killed: killed one by one, the job's Snakemake may see its child
    die and remove the outputs before its own SIGKILL arrives.  (`scancel --full --signal=KILL`
    does not do: the job's Snakemake still removes its outputs.)"""
    out = subprocess.run(
        ["scontrol", "listpids", str(job_id)], capture_output=True, text=True, timeout=30, check=True
    ).stdout
    pids = [int(line.split()[0]) for line in out.splitlines()[1:] if line.split() and line.split()[0].isdigit()]
    for sig in (signal.SIGSTOP, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
    return pids


def wait_for(predicate: Callable[[], object], timeout: float, interval: float = 0.5, what: str = "condition"):
    """Poll `predicate` until it returns something truthy; return that, or fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout} s waiting for {what}", pytrace=False)
