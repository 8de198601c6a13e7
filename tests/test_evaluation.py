"""Batch evaluation: benchmark copies in their published layouts run through a chunk job and the tables, and a
judge behind a real OpenAI-compatible server that never gets a readable answer leaves items unscored."""

from __future__ import annotations

import json

import numpy as np
import openai_server
import pandas as pd
import pytest
from judge_fixtures import BRIGHTEN

from lego_edit.bricks.registry import default_registry
from lego_edit.evaluation.benchmarks import write_gedit_fixture, write_imgedit_fixture
from lego_edit.evaluation.runner import EvalItem, chunk_of, load_items, run_chunk
from lego_edit.evaluation.tables import benchmark_tables, builder_table, category_table
from lego_edit.models.critic import CriticScore, OpenAICritic, OpenAICriticConfig

served_vlm = openai_server.served_vlm

BROKEN = json.dumps(
    {
        "process": "x",
        "pipeline": [
            {
                "step": 1,
                "model": "RES",
                "input": {"image": "init[image]", "prompt": "cat"},
                "output": {"mask": "step1[mask]", "image": "step1[image]"},
            },
            {"result": "[step1[image]]"},
        ],
    }
)


class FixedCritic:
    """A critic answering fixed figures: SC 6, PQ 8 (a judge) - the unit under test is the chunk and tables."""

    def score(self, instructions, sources, edited):
        return [CriticScore(0.5, 6.0, 8.0) for _ in instructions]

    def imgedit_scores(self, instructions, edit_types, sources, edited):
        return [4.0 for _ in instructions]


def test_scatter_chunks_split_items_evenly():
    items = list(range(10))
    chunks = [chunk_of(items, i, 3) for i in (0, 1, 2)]
    assert chunks == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]


def test_benchmark_sets_in_published_layouts_run_through_a_chunk(tmp_path):
    gedit = load_items("gedit", {"path": str(write_gedit_fixture(tmp_path / "gedit")), "languages": ["en"]})
    json_path, root = write_imgedit_fixture(tmp_path / "imgedit")
    imgedit = load_items("imgedit", {"json": str(json_path), "images": str(root)})
    assert len(gedit) == 11 and len(imgedit) == 9
    # One workflow for every item stands in for a Builder ("oracle" kind: the item's own workflow runs);
    # every third item gets a workflow that cannot run: it must fail that item only.
    for i, it in enumerate(gedit + imgedit):
        it.workflow = BROKEN if i % 3 == 0 else BRIGHTEN
    rows = []
    for name, items in (("gedit", gedit), ("imgedit", imgedit)):
        table = run_chunk(
            items,
            {"name": "oracle", "kind": "oracle"},
            tmp_path,
            tmp_path / name / "images",
            tmp_path / name / "rows.parquet",
            registry=default_registry(plugins=False),
            critic=FixedCritic(),
        )
        rows.append(table.to_pandas())
    df = pd.concat(rows, ignore_index=True)
    failed = df[~df["executed"]]
    assert len(failed) == 7 and failed["error"].str.contains("no model configured for RES").all()
    ok = df[df["executed"]]
    assert all((tmp_path / s / "images" / f"{i}.png").is_file() for s, i in zip(ok["set"], ok["id"]))
    tables = benchmark_tables(df)
    ge = tables["gedit"].set_index(["subset", "language", "task_type"])
    avg = ge.loc[("fullset", "en", "average")]
    n_ok = int((df["set"].eq("gedit") & df["executed"]).sum())
    # A failed item is scored 0, a run item SC 6 / PQ 8 (O = sqrt(48)); averaged per type, then over types.
    per_type = df[df["set"] == "gedit"].groupby("category")["executed"].mean()
    assert avg["sc"] == pytest.approx((per_type * 6.0).mean())
    assert avg["overall"] == pytest.approx((per_type * np.sqrt(48.0)).mean())
    assert avg["coverage"] == 1.0 and n_ok == 7
    im = tables["imgedit"].set_index("task_type")
    per_type = df[df["set"] == "imgedit"].groupby("category")["executed"].mean()
    assert im.loc["overall", "score"] == pytest.approx((1 + 3 * per_type).mean())  # failed: 1, run: 4


def test_shapes_tables_rows_and_categories():
    df = pd.DataFrame(
        [
            {
                "id": "a",
                "set": "shapes_gt",
                "category": "remove",
                "builder": "sft",
                "parsed": True,
                "valid": True,
                "executed": True,
                "brick_f1": 1.0,
                "exact_match": True,
                "success": True,
                "psnr": 30.0,
                "region_iou": 0.5,
                "critic": 0.8,
            },
            {
                "id": "b",
                "set": "shapes_gt",
                "category": "add",
                "builder": "sft",
                "parsed": False,
                "valid": False,
                "executed": False,
                "brick_f1": 0.0,
                "exact_match": False,
                "success": False,
                "psnr": 20.0,
                "region_iou": 0.0,
                "critic": None,
            },
            {
                "id": "c",
                "set": "shapes_open",
                "category": "add",
                "builder": "sft",
                "parsed": True,
                "valid": True,
                "executed": True,
                "success": True,
                "psnr": 25.0,
                "region_iou": 0.75,
                "critic": 0.6,
            },
        ]
    )
    bt = builder_table(df).set_index("builder").loc["sft"]
    assert (
        bt["gt_parse_rate"],
        bt["gt_valid_rate"],
        bt["gt_executable_rate"],
        bt["gt_brick_f1"],
        bt["gt_exact_match"],
        bt["gt_success"],
    ) == (0.5, 0.5, 0.5, 0.5, 0.5, 0.5)
    # a failed item is scored as the unedited input (its PSNR is the input's), never dropped
    assert bt["gt_psnr"] == 25.0 and bt["gt_region_iou"] == 0.25
    assert bt["open_valid_rate"] == 1.0 and bt["open_success"] == 1.0 and bt["open_psnr"] == 25.0
    assert bt["open_reward_model_score"] == pytest.approx(0.6)
    assert bt["gt_reward_model_score"] == pytest.approx(0.4)  # a failed item's reward model score counts as 0
    ct = category_table(df).set_index("category")
    assert ct.loc["add", "valid"] == 0.0 and ct.loc["add", "reward_model_score"] == 0.0
    assert ct.loc["remove", "psnr"] == 30.0 and ct.loc["remove", "success"] == 1.0


def test_a_judge_that_never_answers_in_the_format_leaves_items_unscored(served_vlm):
    """The served tiny model answers JSON about colours, never scores: after the retries the item is unscored
    (None), not given an invented number."""
    server, _ = served_vlm
    critic = OpenAICritic(
        OpenAICriticConfig(base_url=server.base_url, model=server.model, max_retries=1, concurrency=1)
    )
    src = openai_server.RED
    scores = critic.score(["make it blue"], [src], [openai_server.BLUE])
    assert scores[0].score is None and scores[0].sc is None and "unscored" in scores[0].error
    assert critic.imgedit_scores(["make it blue"], ["adjust"], [src], [openai_server.BLUE]) == [None]


def test_eval_items_of_the_shapes_split_keep_their_gt(tmp_path):
    from lego_edit.data.dataset import InstructionConfig, SceneConfig, make_instructions, make_scenes

    make_scenes(SceneConfig(train=2, val=1, test=4), tmp_path / "scenes.parquet", tmp_path / "img")
    make_instructions(
        InstructionConfig(per_scene=2), "gt", tmp_path / "scenes.parquet", tmp_path / "gt.parquet", tmp_path / "t"
    )
    items = load_items("shapes_gt", {"table": str(tmp_path / "gt.parquet")})
    assert len(items) == 8 and all(it.workflow and it.target for it in items)
    assert len(load_items("shapes_gt", {"table": str(tmp_path / "gt.parquet")}, max_items=3)) == 3
    assert isinstance(items[0], EvalItem)
