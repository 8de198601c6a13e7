"""The pipeline end to end on the small test config: every stage's products exist, the report builds, the
paper-scale config builds its DAG, and a model written by training reloads to give the same outputs."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pandas as pd
import pytest
import yaml
from PIL import Image
from pipeline_fixtures import REPO, dry_run_jobs, snakemake

pytestmark = pytest.mark.slow


def test_every_stage_writes_its_products(pipeline_run):
    r = pipeline_run / "results"
    for family in ("segmentation", "placement", "captioning", "edit", "critic"):
        assert (r / "data" / "shards" / family / "manifest.parquet").is_file()
    for model in (
        "bricks/segmentation",
        "bricks/edit_base",
        "bricks/critic",
        "builder/sft",
        "builder/grpo_gt",
        "builder/grpo_critic",
    ):
        files = {p.name for p in (r / model).iterdir()}
        assert "metrics.json" in files, (model, files)
        # the curve's numbers, at the top or per ensemble member (the report draws them)
        assert list((r / model).rglob("metrics.jsonl")), (model, files)
        # weights at the top, or in the parts a model is saved as (a UNet folder, an ensemble's member-<k>/ folders)
        assert list((r / model).rglob("*.safetensors")), (model, files)
    for adapter in ("bricks/placement", "bricks/captioning"):
        assert (r / adapter / "adapter_model.safetensors").is_file()
    for brick in ("RCM", "INPAINT"):  # the edit bricks the test config trains LoRAs for
        assert (r / "bricks" / "edit_lora" / brick / "pytorch_lora_weights.safetensors").is_file()
    summary = json.loads((r / "bricks" / "summary.json").read_text())
    assert {row["brick"] for row in summary["rows"]} == {"RES", "SOS", "MASK-SEG", "ADD-PRED", "CMI-PRED", "critic"}
    assert not list(r.rglob("*.pt")) and not list(r.rglob("*.pkl")), "no pickle files may be written"


def test_evaluation_tables_have_every_builder_row(pipeline_run):
    builders = pd.read_csv(pipeline_run / "results" / "eval" / "builders.csv")
    assert list(builders["builder"]) == ["base", "sft", "grpo_gt", "grpo_critic", "oracle"]
    oracle = builders.set_index("builder").loc["oracle"]
    assert oracle["gt_parse_rate"] == 1.0 and oracle["gt_valid_rate"] == 1.0 and oracle["gt_brick_f1"] == 1.0
    base = builders.set_index("builder").loc["base"]
    assert base["gt_parse_rate"] == 0.0 and base["gt_success"] == 0.0  # an untrained Builder writes no workflow
    # every item of every row is scored against its exact GT target, failures as the unedited input
    items_all = pd.read_parquet(pipeline_run / "results" / "eval" / "items.parquet")
    shapes = items_all[items_all["set"].isin(["shapes_gt", "shapes_open"])]
    assert shapes["success"].notna().all() and shapes["psnr"].notna().all()
    stages = pd.read_csv(pipeline_run / "results" / "eval" / "stages.csv")
    assert {("shapes_gt", "grpo_gt", "sft"), ("shapes_open", "grpo_critic", "grpo_gt")} <= set(
        zip(stages["set"], stages["stage"], stages["vs"])
    )
    assert (stages["ci_low"] <= stages["difference"]).all() and (stages["difference"] <= stages["ci_high"]).all()
    items = pd.read_parquet(pipeline_run / "results" / "eval" / "items.parquet")
    assert set(items["set"]) == {"shapes_gt", "shapes_open"}
    assert items.groupby(["builder", "set"]).size().loc[("sft", "shapes_gt")] == 12
    grids = list((pipeline_run / "results" / "eval" / "grids").glob("*.png"))
    assert grids, "no before/after grids"
    # no evaluation.judge in the test config: the critic judged, and the tables name it and warn
    judges = pd.read_csv(pipeline_run / "results" / "eval" / "judges.csv")
    assert set(judges["set"]) == {"shapes_gt", "shapes_open"} and judges["judge_is_reward_model"].all()
    assert set(judges["judge"]) == {"local critic results/bricks/critic"}
    assert "Warning: judged by the stage-3 reward model" in (pipeline_run / "results/eval/tables.md").read_text()


def test_report_builds(pipeline_run):
    result = snakemake(
        pipeline_run,
        "--configfile",
        str(REPO / ".test/config/config.yaml"),
        "--report",
        str(pipeline_run / "report.zip"),
    )
    assert result.returncode == 0, result.stdout[-4000:]
    import zipfile

    # the zip keeps each result's file name under a hashed folder
    names = {n.rsplit("/", 1)[-1] for n in zipfile.ZipFile(pipeline_run / "report.zip").namelist()}
    assert "report.html" in names
    curves = {p.name for p in (pipeline_run / "results" / "report" / "curves").glob("*.png")}
    assert (
        {
            "segmentation.png",
            "builder_sft.png",
            "builder_grpo_gt.png",
            "builder_grpo_critic.png",
            "critic.png",
            "edit_base.png",
        }
        <= curves
        <= names
    ), (curves, names)
    grids = {p.name for p in (pipeline_run / "results" / "eval" / "grids").glob("*.png")}
    assert grids and grids <= names
    assert {
        "data_stats.png",
        "data_samples.png",
        "summary.md",
        "builders.csv",
        "categories.csv",
        "stages.csv",
        "reward_model.csv",
        "judges.csv",
    } <= names


def test_trained_models_reload_in_a_fresh_process_with_the_same_outputs(pipeline_run):
    code = """
import sys, numpy as np, json
from lego_edit.models.segmentation import SegmentationModel
from lego_edit.bricks.models import load_edit_model
from lego_edit.imageio import load_image
run = sys.argv[1]
img = load_image(run + '/results/data/scene_images/scene_000000.png')
seg = SegmentationModel.from_pretrained(run + '/results/bricks/segmentation', device='cpu')
m = seg.predict([img], ['SOS'], [''])[0]
edit = load_edit_model(run + '/results/bricks/edit_base', device='cpu')
out = edit.edit('RCM', [img], [m if m.any() else None], ['blue'], seed=3)[0]
print(json.dumps([int(m.sum()), int(out.astype(np.int64).sum())]))
"""
    runs = [
        subprocess.run(
            [sys.executable, "-c", code, str(pipeline_run)], capture_output=True, text=True, timeout=300, check=True
        )
        .stdout.strip()
        .splitlines()[-1]
        for _ in range(2)
    ]
    assert runs[0] == runs[1]


def test_pose_brick_turns_the_named_object_inside_its_box(pipeline_run):
    """POSE through the registry on a trained run: it finds the object its prompt names (RES), starts from the
    object turned the asked way, and leaves every pixel outside that object's box as it was."""
    import numpy as np

    from lego_edit.bricks.functions import object_region
    from lego_edit.bricks.models import bind_model_bricks
    from lego_edit.bricks.registry import default_registry
    from lego_edit.data.shapes import Obj, Scene, render_layers
    from lego_edit.workflow import BrickContext

    registry = default_registry(plugins=False)
    bind_model_bricks(registry, pipeline_run / "results", device="cpu")
    scene = Scene(
        64,
        64,
        "beige",
        "plain",
        objects=(Obj("triangle", "blue", "solid", (8, 10, 20, 20), "up"), Obj("circle", "red", box=(40, 36, 16, 16))),
    )
    image = render_layers(scene)[0]
    ctx = BrickContext(seed=0)
    found = registry.implementation("RES")(ctx, image=image, prompt="blue triangle")["mask"]
    out = registry.implementation("POSE")(ctx, image=image, prompt="make the blue triangle point left")["image"]
    assert out.shape == image.shape and out.dtype == np.uint8
    region = object_region(found)
    if region is None:  # the test run's RES is barely trained: with nothing found, POSE edits the whole image
        return
    assert (out[region == 0] == image[region == 0]).all()
    again = registry.implementation("POSE")(ctx, image=image, prompt="make the blue triangle point left")["image"]
    assert (again == out).all()  # same seed, same edit


@pytest.fixture
def paper_config(tmp_path):
    """config/paper.yaml with its SET_ME paths pointed at temporary fixtures in their published layouts."""
    from judge_fixtures import write_imgedit_checkout, write_step1x_checkout

    from lego_edit.evaluation.benchmarks import write_gedit_fixture, write_imgedit_fixture

    listing = tmp_path / "listing.parquet"
    pd.DataFrame({"image": ["a.png"], "caption": ["x"]}).to_parquet(listing)
    gedit = write_gedit_fixture(tmp_path / "gedit")
    imgedit_json, imgedit_root = write_imgedit_fixture(tmp_path / "imgedit")
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (32, 24), "white").save(photos / "a.png")
    (tmp_path / "magicbrush").mkdir()  # a dry run reads no row of the builder sources
    overlay = {
        "data": {
            "shards": {
                "sources": {
                    f: {"listing": str(listing), "root": str(tmp_path)} for f in ("segmentation", "captioning", "edit")
                }
            },
            "builder_sources": [{"path": str(tmp_path / "magicbrush"), "preset": "magicbrush"}],
            "teacher": {"base_url": "http://127.0.0.1:7/v1"},
        },
        "bricks": {"critic": {"openai": {"base_url": "http://127.0.0.1:9/v1"}}},
        "evaluation": {
            "gedit": {"path": str(gedit)},
            "imgedit": {"json": str(imgedit_json), "images": str(imgedit_root)},
            "judge": {"base_url": "http://127.0.0.1:8/v1"},
            "protocols": {
                "gedit": str(write_step1x_checkout(tmp_path / "Step1X-Edit")),
                "imgedit": str(write_imgedit_checkout(tmp_path / "ImgEdit")),
            },
        },
        "edit": {"folder": str(photos), "instruction": "make it snowy"},  # the batch-editing rules too
    }
    paper = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())

    def merge(a, b):
        for k, v in b.items():
            a[k] = merge(a.get(k, {}), v) if isinstance(v, dict) and isinstance(a.get(k), dict) else v
        return a

    (tmp_path / "paper.yaml").write_text(yaml.safe_dump(merge(paper, overlay)))
    return tmp_path / "paper.yaml"


def test_paper_config_dry_run_builds_the_full_dag_with_gpu_resources(tmp_path, paper_config):
    """The DAG of config/paper.yaml builds in < 10 s, with a GPU request on every GPU rule."""
    start = time.perf_counter()
    result = snakemake(tmp_path, "-n", "--configfile", str(paper_config), timeout=120)
    elapsed = time.perf_counter() - start
    assert result.returncode == 0, result.stdout[-4000:]
    assert elapsed < 10, f"dry run took {elapsed:.1f} s"
    jobs = dry_run_jobs(result.stdout)
    for rule in (
        "train_segmentation",
        "train_vlm_brick",
        "train_edit_base",
        "train_edit_lora",
        "train_builder_sft",
        "train_builder_grpo_gt",
        "train_builder_grpo_critic",
        "edit_eval_chunk",
        "teacher_workflows",
    ):
        gpus = [j["resources"].get("gpu") for j in jobs if j["rule"] == rule]
        assert gpus, f"{rule} missing from the DAG"
        assert all(g and int(g) >= 1 for g in gpus), f"{rule} without a GPU request: {gpus}"
    # each training job launches one process per GPU of its `gpu` resource (launch.run_stage), set from the config
    paper = yaml.safe_load(paper_config.read_text())
    expected = {f"train_builder_{s}": paper["builder"]["gpus"] for s in ("sft", "grpo_gt", "grpo_critic")}
    expected.update(
        train_edit_lora=paper["bricks"]["edit"]["gpus"], train_segmentation=paper["bricks"]["segmentation"]["gpus"]
    )
    for rule, count in expected.items():
        assert {j["resources"]["gpu"] for j in jobs if j["rule"] == rule} == {str(count)}, rule
    # the paper-scale critic is a judge behind an endpoint: its job only records and measures it, on no GPU
    assert [j["resources"]["gpu"] for j in jobs if j["rule"] == "train_critic"] == ["0"]
    # the Builder learns from the teacher's tables, ADD-PRED from the builder sources' add rows
    sft = next(j for j in jobs if j["rule"] == "train_builder_sft")
    assert "results/data/builder/gt.parquet" in sft["input"]
    assert len([j for j in jobs if j["rule"] == "teacher_workflows"]) == paper["data"]["teacher"]["chunks"]
    placement = next(j for j in jobs if j["rule"] == "make_shards" and j["wildcards"]["family"] == "placement")
    assert "results/data/builder_sources/placement.parquet" in placement["input"]
    evalsets = {j["wildcards"].get("evalset") for j in jobs if j["rule"] == "edit_eval_chunk"}
    assert {"gedit", "imgedit"} <= evalsets
    # a benchmark chunk reads the published prompts from the user's checkout: a changed prompt file reruns it
    chunks = [j for j in jobs if j["rule"] == "edit_eval_chunk" and j["wildcards"]["evalset"] in ("gedit", "imgedit")]
    prompt_files = {
        j["wildcards"]["evalset"]: {i for i in j["input"] if i.endswith(("vie_prompts.py", "prompts.json"))}
        for j in chunks
    }
    assert prompt_files == {
        "gedit": {str(tmp_path / "Step1X-Edit/GEdit-Bench/viescore/vie_prompts.py")},
        "imgedit": {str(tmp_path / "ImgEdit/Benchmark/Basic/prompts.json")},
    }


def test_paper_config_through_the_slurm_profile(tmp_path, paper_config):
    """`snakemake --profile slurm --configfile config/paper.yaml -n`: the profile's cluster settings reach the
    jobs, memory and run time are expressions of the attempt, and no job pairs a GPU model with gpu=0 (the
    plugin would turn that into a GPU request that srun refuses)."""
    result = snakemake(tmp_path, "-n", "--profile", str(REPO / "slurm"), "--configfile", str(paper_config), timeout=120)
    assert result.returncode == 0, result.stdout[-4000:]
    jobs = dry_run_jobs(result.stdout)
    profile = yaml.safe_load((REPO / "slurm" / "config.yaml").read_text())["set-resources"]
    seen = set()
    for job in jobs:
        res = job["resources"]
        if "gpu_model" in res:
            assert int(res.get("gpu", 0)) >= 1, job
        if job["rule"] in profile:
            seen.add(job["rule"])
            expected = profile[job["rule"]]
            assert res["mem_mb"] == str(eval(expected["mem_mb"], {"attempt": 1})), job
            assert res["runtime"] == str(eval(expected["runtime"], {"attempt": 1})), job
    assert seen == set(profile), set(profile) - seen  # every profiled rule exists in the DAG


def _segmentation_only(tmp_path, steps: int):
    config = yaml.safe_load((REPO / ".test/config/config.yaml").read_text())
    config["bricks"]["segmentation"]["train"].update(steps=steps, checkpoint_every=5, log_every=5)
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump(config))
    # the target before --configfile, which would take it for a second config file
    return [
        sys.executable,
        "-m",
        "snakemake",
        "results/bricks/segmentation",
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(tmp_path),
        "--cores",
        "2",
        "--configfile",
        str(cfg),
    ]


def test_a_killed_training_resumes_from_its_last_checkpoint_with_equal_results(tmp_path):
    """Kill train_segmentation after a checkpoint; the rerun resumes from it (not from step 0) and ends with
    exactly the loss history of an uninterrupted run (batches and noise are seeded per step)."""
    import os
    import signal

    steps = 40
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    killed.mkdir()
    clean.mkdir()
    cmd = _segmentation_only(killed, steps)
    proc = subprocess.Popen(
        cmd,
        cwd=killed,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    ckpt = killed / "results" / "checkpoints" / "segmentation"
    deadline = time.time() + 600
    while time.time() < deadline and not list(ckpt.glob("checkpoint-*")) and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, f"snakemake ended (exit {proc.returncode}) before the first checkpoint"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    saved = sorted(int(p.name.split("-")[1]) for p in ckpt.glob("checkpoint-*"))
    assert saved and saved[-1] < steps, f"no checkpoint before the kill: {saved}"
    # a killed Snakemake leaves its lock behind: --unlock, then rerun the incomplete job
    subprocess.run(cmd + ["--unlock"], cwd=killed, stdin=subprocess.DEVNULL, capture_output=True, check=True)
    result = subprocess.run(
        cmd + ["--rerun-incomplete"], cwd=killed, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    log = (killed / "logs" / "train_segmentation.log").read_text()
    assert "resumed from" in log and f"at step {saved[-1]}" in log
    result = subprocess.run(
        _segmentation_only(clean, steps),
        cwd=clean,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert _losses(killed) == _losses(clean)


def _losses(workdir):
    lines = (workdir / "results/bricks/segmentation/metrics.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    return [(r["step"], r["loss"]) for r in rows]
