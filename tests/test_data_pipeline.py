"""The data stage run through Snakemake with the small test config (.test/config/config.yaml), each run in its own
working directory (``--snakefile <repo>/Snakefile --directory <tmp>``): reproducibility to the byte, reruns of
exactly the affected jobs after a config change, bad configs rejected before any job, and a clean ``--lint``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from data_fixtures import REPO, TEST_CONFIG, file_digests
from pipeline_fixtures import dry_run_jobs

from lego_edit.pipeline import sort_keys_in_place

SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
FAMILIES = ("captioning", "critic", "edit", "placement", "segmentation")
ALL_JOBS = {
    ("make_scenes", ""),
    ("make_instructions", "domain=gt"),
    ("make_instructions", "domain=open"),
    *(("make_shards", f"family={f}") for f in FAMILIES),
}
# The data stage's products: these tests run the data rules only (tests/test_pipeline.py runs the whole DAG).
DATA_TARGETS = (
    "results/data/scenes.parquet",
    "results/data/instructions/gt.parquet",
    "results/data/instructions/open.parquet",
    *(f"results/data/shards/{f}" for f in FAMILIES),
)


def snakemake(workdir: Path, configfile: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    cmd = [
        SNAKEMAKE,
        "--snakefile",
        str(REPO / "Snakefile"),
        "--configfile",
        str(configfile),
        "--directory",
        str(workdir),
        "--cores",
        "2",
        *args,
    ]
    return subprocess.run(
        cmd,
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )


def _ok(proc: subprocess.CompletedProcess) -> str:
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    return out


def scheduled(workdir: Path, configfile: Path) -> set[tuple[str, str]]:
    """(rule, wildcards) of every job a dry run would run."""
    out = _ok(snakemake(workdir, configfile, "--dry-run", *DATA_TARGETS))
    if "Nothing to be done" in out:
        return set()
    jobs = dry_run_jobs(out)
    stats = re.search(r"Job stats:\n.*?\n-+\s+-+\n(.*?)\ntotal\s+(\d+)", out, re.S)
    assert stats and int(stats.group(2)) == len(jobs), out[-3000:]  # the table agrees with the job list
    return {(j["rule"], ", ".join(f"{k}={v}" for k, v in j["wildcards"].items())) for j in jobs}


def _config(tmp_path: Path, name: str, change=None, sort=False) -> Path:
    config = yaml.safe_load(TEST_CONFIG.read_text())
    if change:
        change(config)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(sort_keys_in_place(config) if sort else config, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def first_run(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("run1")
    _ok(snakemake(workdir, TEST_CONFIG, *DATA_TARGETS))
    return workdir


def test_test_config_is_the_default_config_cut_down():
    """Every key of config/config.yaml is in the test config too (so the test run covers every section; it may
    set more, e.g. checkpoint intervals its tiny runs need), with smaller counts."""
    default = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    small = yaml.safe_load(TEST_CONFIG.read_text())

    def paths(d, prefix=""):
        return {
            p
            for k, v in d.items()
            for p in ([f"{prefix}{k}"] + (sorted(paths(v, f"{prefix}{k}.")) if isinstance(v, dict) else []))
        }

    assert paths(default) - {
        "edit.folder",
        "edit.instruction",
        "edit.mapping",
        "edit.workflow",
        "edit.builder",
        "edit.chunks",
        "edit",
    } <= paths(small)
    assert [small["data"]["scenes"][s] for s in ("train", "val", "test")] == [60, 10, 20]
    assert TEST_CONFIG.read_text().startswith("# The small test config for CI")


@pytest.mark.slow
def test_same_config_gives_byte_identical_results(first_run, tmp_path):
    second = tmp_path / "run2"
    _ok(snakemake(second, TEST_CONFIG, *DATA_TARGETS))
    a, b = file_digests(first_run / "results"), file_digests(second / "results")
    assert a == b
    names = sorted(a)
    assert sum(n.endswith(".tar") for n in names) >= 5 * 3  # every family, every split
    assert sum(n.endswith(".parquet") for n in names) == 3 + 5  # scenes, 2 instruction tables, 5 manifests
    assert sum(n.startswith("data/scene_images/scene_") for n in names) == 90
    # GT targets: 2 per scene, and 1 more per training scene in the split rl (stage 2's own instructions)
    assert sum(n.startswith("data/targets/gt/gt_") for n in names) == 90 * 2 + 60
    assert "data/scene_images/.snakemake_timestamp" in names  # Snakemake's marker in directory outputs, empty
    assert {n.split("/")[2] for n in names if n.startswith("data/shards/")} == set(FAMILIES)


@pytest.mark.slow
def test_unchanged_or_reordered_config_schedules_nothing(first_run, tmp_path):
    assert scheduled(first_run, TEST_CONFIG) == set()
    # the same values with every mapping's keys in another order
    assert scheduled(first_run, _config(tmp_path, "sorted", sort=True)) == set()


@pytest.mark.slow
def test_config_change_reruns_only_the_affected_jobs(first_run, tmp_path):
    def placement(c):
        c["data"]["shards"]["families"]["placement"]["per_scene"] = 2

    def edit_bricks(c):
        c["data"]["shards"]["families"]["edit"]["bricks"] = ["FILL", "RCM"]

    def gt_instructions(c):
        c["data"]["instructions"]["gt"]["per_scene"] = 3

    def test_scenes(c):
        c["data"]["scenes"]["test"] = 21

    def seed(c):
        c["seed"] = 1

    assert scheduled(first_run, _config(tmp_path, "placement", placement)) == {("make_shards", "family=placement")}
    assert scheduled(first_run, _config(tmp_path, "bricks", edit_bricks)) == {("make_shards", "family=edit")}
    assert scheduled(first_run, _config(tmp_path, "gt", gt_instructions)) == {
        ("make_instructions", "domain=gt"),
        ("make_shards", "family=critic"),
    }
    assert scheduled(first_run, _config(tmp_path, "scenes", test_scenes)) == ALL_JOBS
    assert scheduled(first_run, _config(tmp_path, "seed", seed)) == ALL_JOBS


def _bad(config: dict) -> None:
    config["data"]["shards"]["families"]["edit"]["bricks"].append("FLUX-FILL")


@pytest.mark.parametrize(
    "change,key",
    [
        (_bad, "['data']['shards']['families']['edit']['bricks']"),
        (lambda c: c["data"]["scenes"].__setitem__("test", -3), "['data']['scenes']['test']"),
        (
            lambda c: c["data"]["shards"]["families"]["placement"].__setitem__("per_scene", 0),
            "['data']['shards']['families']['placement']['per_scene']",
        ),
        (lambda c: c["data"]["scenes"].__setitem__("colour_jitter", 3), "'colour_jitter' was unexpected"),
        (
            lambda c: c["data"]["shards"]["sources"].__setitem__("captioning", {"listing": "nope/listing.csv"}),
            "data.shards.sources.captioning.listing",
        ),
    ],
    ids=["unknown-brick", "negative-count", "zero-per-scene", "unknown-key", "missing-listing"],
)
def test_bad_config_is_rejected_before_any_job(tmp_path, change, key):
    workdir = tmp_path / "run"
    proc = snakemake(workdir, _config(tmp_path, "bad", change))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out[-3000:]
    assert key in out, out[-3000:]
    assert not (workdir / "results").exists() and not (workdir / "logs").exists()
    assert "Job stats" not in out and "rule make_" not in out


def test_lint_is_clean(tmp_path):
    out = _ok(snakemake(tmp_path, TEST_CONFIG, "--lint"))
    assert "Congratulations, your workflow is in a good condition!" in out


def test_sort_keys_in_place():
    config = {
        "seed": 0,
        "data": {"shards": {"b": 1, "a": [{"z": 1, "y": 2}]}, "instructions": {"categories": ["x", "a"]}},
    }
    same = sort_keys_in_place(config)
    assert same is config
    assert repr(config) == (
        "{'data': {'instructions': {'categories': ['x', 'a']}, 'shards': {'a': [{'z': 1, 'y': 2}], 'b': 1}}, 'seed': 0}"
    )  # lists, and mappings inside lists, keep their order
