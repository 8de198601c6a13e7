"""The builder-sources chain against a real OpenAI-compatible server (``transformers serve`` on loopback): a
MagicBrush-layout copy of 50 shapes-world rows plus broken rows goes through read -> teacher -> parse -> validate ->
execute (the pipeline run's trained bricks) -> filter; a killed job repays no answered request; the DAG trains the
Builder on the resulting tables."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from data_fixtures import REPO, TEST_CONFIG
from openai_server import recording_proxy
from pipeline_fixtures import snakemake
from teacher_fixtures import PLAN, write_broken_listing, write_magicbrush_copy

from lego_edit.bricks.registry import default_registry
from lego_edit.builder.generation import answer_from
from lego_edit.data.builder_sources import BuilderSource, read_builder_sources
from lego_edit.data.teacher import TeacherConfig, teacher_chunk

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """(rows table, rejected table) of the MagicBrush copy and the broken listing."""
    root = tmp_path_factory.mktemp("sources")
    write_magicbrush_copy(root / "magicbrush")
    listing = write_broken_listing(root / "listing")
    rows, rejected = root / "rows.parquet", root / "rejected.parquet"
    read_builder_sources(
        [
            BuilderSource(path=str(root / "magicbrush"), preset="magicbrush", name="mb"),
            BuilderSource(path=str(listing), root=str(listing.parent), name="jl"),
        ],
        rows,
        rejected,
        root / "images",
    )
    return rows, rejected


def _teacher(server, base_url: str, journal: Path, concurrency: int = 8) -> TeacherConfig:
    return TeacherConfig(
        base_url=base_url,
        model=server.model,
        prompt_style="instruction",
        concurrency=concurrency,
        max_tokens=400,
        journal=str(journal),
    )


def expected_status(row: dict) -> str:
    if row["origin"] == "jl":
        return "unfiltered"  # the listing's good row has no target, and the test names no judge
    return PLAN[int(row["id"].split("_")[1]) - 100000][2]


def test_bad_rows_are_recorded_and_skipped(sources):
    rows_path, rejected_path = sources
    rows = pq.read_table(rows_path).to_pylist()
    rejected = pq.read_table(rejected_path).to_pylist()
    assert len(rows) == len(PLAN) + 1
    assert Counter(r["split"] for r in rows if r["origin"] == "mb") == {"train": 40, "val": 10}  # dev -> val
    assert {r["id"] for r in rows if r["origin"] == "mb"} == {f"mb_{100000 + i}_1" for i in range(len(PLAN))}
    reasons = sorted((r["origin"], r["reason"].split(" (")[0].split(":")[0]) for r in rejected)
    assert len(rejected) == 6, rejected
    assert ("mb", "empty instruction") in reasons and ("mb", "no image") in reasons
    text = " | ".join(r["reason"] for r in rejected if r["origin"] == "jl")
    for needle in ("no such file", "not a readable image", "line 4 is not JSON", "repeats an earlier row"):
        assert needle in text, text


def test_chain_verdicts_match_the_teachers_answers(sources, served_teacher, pipeline_run, tmp_path):
    rows = pq.read_table(sources[0]).to_pylist()
    with recording_proxy(served_teacher.base_url) as proxy:
        cfg = _teacher(served_teacher, proxy.base_url, tmp_path / "journal.sqlite")
        stats = teacher_chunk(rows, cfg, pipeline_run / "results", tmp_path / "verdicts.parquet", batch_size=8)
        assert len(proxy.chat_requests) == len(rows) == stats["sent"]
    verdicts = pq.read_table(tmp_path / "verdicts.parquet").to_pylist()
    assert len(verdicts) == len(rows)
    registry = default_registry()
    for v in verdicts:
        # The verdict follows from the answer the teacher gave, read by the same parser and validator.
        a = answer_from(v["answer"], registry)
        if a.workflow is None:
            assert v["status"] == "unparseable", v
        elif not a.valid:
            assert v["status"] == "invalid" and "WARP" in v["reason"], v
        elif v["status"] in ("kept", "filtered"):
            assert v["score_kind"] == "error_ratio"
            assert (v["score"] <= cfg.max_error_ratio) == (v["status"] == "kept"), v
            assert v["workflow"] == a.workflow.to_json()
        else:
            assert v["status"] in ("execution_failed", "unfiltered"), v
        # ... and the teacher was fit to answer each instruction kind so that every verdict occurs where planned.
        assert v["status"] == expected_status(v), (v["id"], v["status"], v["reason"], v["answer"])
    assert Counter(v["status"] for v in verdicts) == Counter(expected_status(r) for r in rows)
    failed = [v for v in verdicts if v["status"] == "execution_failed"]
    assert failed and all("differ in size" in v["reason"] for v in failed)


def _journal_count(path: Path) -> int:
    if not path.is_file():
        return 0
    try:
        with sqlite3.connect(path, timeout=5) as conn:
            return conn.execute("SELECT COUNT(*) FROM answers").fetchone()[0]
    except sqlite3.OperationalError:  # the table is not there yet
        return 0


def test_killed_job_repays_no_answered_request(sources, served_teacher, pipeline_run, tmp_path):
    rows_path = sources[0]
    n_rows = pq.read_table(rows_path).num_rows
    journal = tmp_path / "journal.sqlite"
    with recording_proxy(served_teacher.base_url, delay_s=0.3) as slow:
        cfg = _teacher(served_teacher, slow.base_url, journal, concurrency=2)
        script = (
            "import json, sys\n"
            "from lego_edit.data.teacher import TeacherConfig, run_teacher_chunk\n"
            "cfg = TeacherConfig(**json.loads(sys.argv[1]))\n"
            "run_teacher_chunk(cfg, sys.argv[2], (0, 1), sys.argv[3], sys.argv[4])\n"
        )
        args = [json.dumps(cfg.__dict__), str(rows_path), str(pipeline_run / "results"), str(tmp_path / "v.parquet")]
        proc = subprocess.Popen(
            [sys.executable, "-c", script, *args], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 120
        while _journal_count(journal) < 10 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        answered = _journal_count(journal)
        assert 10 <= answered < n_rows, "the job should have been killed midway"
        first_sent = len(slow.chat_requests)
    assert not (tmp_path / "v.parquet").exists()
    with recording_proxy(served_teacher.base_url) as proxy:
        cfg = _teacher(served_teacher, proxy.base_url, journal)
        rows = pq.read_table(rows_path).to_pylist()
        stats = teacher_chunk(rows, cfg, pipeline_run / "results", tmp_path / "v.parquet")
        # Every answer that reached the journal is reused; only the others are asked again.
        assert len(proxy.chat_requests) == stats["sent"] == n_rows - answered
        assert stats["journaled"] == answered
    assert first_sent >= answered
    assert _journal_count(journal) == n_rows  # every answer is journaled now
    with recording_proxy(served_teacher.base_url) as proxy:  # a third run asks nothing
        teacher_chunk(rows, _teacher(served_teacher, proxy.base_url, journal), pipeline_run / "results", tmp_path / "w")
        assert proxy.chat_requests == []


def test_dag_trains_the_builder_on_the_teacher_tables(sources, served_teacher, pipeline_run, tmp_path):
    """The test config's finished run, copied, with the teacher path turned on: the teacher chain runs and the
    Builder's three stages retrain on its tables; the bricks are not retrained."""
    workdir = tmp_path / "run"
    shutil.copytree(pipeline_run, workdir, symlinks=True)
    root = Path(sources[0]).parent
    cfg = yaml.safe_load(TEST_CONFIG.read_text())
    cfg["data"]["builder_sources"] = [
        {"path": str(root / "magicbrush"), "preset": "magicbrush", "name": "mb"},
        {"path": str(root / "listing" / "listing.jsonl"), "root": str(root / "listing"), "name": "jl"},
    ]
    cfg["data"]["teacher"].update(base_url=served_teacher.base_url, model=served_teacher.model, max_tokens=400)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(cfg))
    before = {p: (workdir / p).stat().st_mtime for p in ("results/bricks/segmentation", "results/builder/sft")}
    result = snakemake(workdir, "--cores", "2", "--configfile", str(config))
    assert result.returncode == 0, result.stdout[-8000:]
    assert "rule teacher_workflows" in result.stdout and "rule train_builder_sft" in result.stdout
    assert "rule train_segmentation" not in result.stdout
    results = workdir / "results"
    gt = pq.read_table(results / "data/builder/gt.parquet").to_pylist()
    real = [r for r in gt if r["origin"] != "shapes"]
    assert len(real) == Counter(s[2] for s in PLAN)["kept"] and all(r["workflow"] for r in real)
    open_pool = pq.read_table(results / "data/builder/open.parquet").to_pylist()
    assert len([r for r in open_pool if r["origin"] != "shapes"]) == len(PLAN) + 1 - len(real)
    sft = json.loads((results / "builder/sft/metrics.json").read_text())
    assert sft["rows"] == len([r for r in gt if r["split"] == "train" and r["workflow"]])
    assert (results / "builder/sft").stat().st_mtime > before["results/builder/sft"]
    assert (results / "bricks/segmentation").stat().st_mtime == before["results/bricks/segmentation"]
    summary = (results / "data/builder/summary.md").read_text()
    assert "of the teacher's answers kept" in summary and "| mb |" in summary


def test_rows_without_a_target_are_filtered_by_the_judge(
    sources, served_teacher, served_teacher_judge, pipeline_run, tmp_path
):
    """With evaluation.judge an endpoint, a row without a target is kept only when the judge scores its result at
    least min_judge_score (the judge here rates every brightened scene 0.748)."""
    rows = [r for r in pq.read_table(sources[0]).to_pylist() if expected_status(r) == "unfiltered"]
    for threshold, status in ((0.6, "kept"), (0.9, "filtered")):
        with recording_proxy(served_teacher_judge.base_url) as judge:
            cfg = _teacher(served_teacher, served_teacher.base_url, tmp_path / "journal.sqlite")
            cfg.min_judge_score = threshold
            spec = {"base_url": judge.base_url, "model": served_teacher_judge.model, "cache": None}
            out = tmp_path / f"v{threshold}.parquet"
            teacher_chunk(rows, cfg, pipeline_run / "results", out, judge=spec)
            assert len(judge.chat_requests) == 2 * len(rows)  # SC, then PQ, for each executed result
        verdicts = pq.read_table(out).to_pylist()
        assert [v["status"] for v in verdicts] == [status] * len(rows), verdicts
        assert all(v["score_kind"] == "judge" and abs(v["score"] - 0.748) < 1e-3 for v in verdicts)
