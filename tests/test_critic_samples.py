"""The critic's samples from the trained bricks (lego_edit.training.critic_samples): the mistakes made in GT
workflows, on a real shapes-world scene and its GT instructions."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lego_edit.data.instructions import make_instruction
from lego_edit.data.referring import candidates
from lego_edit.data.shapes import Obj, Scene
from lego_edit.training.critic_samples import PERTURBATIONS, _swap_word, perturb
from lego_edit.workflow import parse_workflow

SCENE = Scene(
    64,
    64,
    objects=(
        Obj("circle", "red", box=(4, 4, 16, 16)),
        Obj("square", "blue", box=(40, 40, 16, 16)),
        Obj("triangle", "green", box=(40, 4, 16, 16)),
    ),
)


def gt(category, seed=0):
    rng = np.random.default_rng(seed)
    for _ in range(20):
        inst = make_instruction(SCENE, category, rng, "gt")
        if inst is not None:
            return inst.workflow
    raise AssertionError(f"no {category} instruction")


def literals(wf):
    return [
        (s["model"], k, v)
        for s in wf["pipeline"]
        if "model" in s
        for k, v in s["input"].items()
        if not (isinstance(v, str) and "[" in v)
    ]


@pytest.mark.parametrize("category", ["remove", "recolour", "add", "background", "resize", "pose", "environment"])
def test_each_perturbation_changes_one_thing_and_stays_a_valid_workflow(category):
    workflow = gt(category)
    rng = np.random.default_rng(1)
    for kind in PERTURBATIONS:
        wf = perturb(workflow, SCENE, kind, rng)
        if wf is None:
            continue
        parse_workflow(json.dumps(wf))  # still in the published format
        if kind == "missing_step":
            assert wf["pipeline"][-1]["result"] != workflow["pipeline"][-1]["result"]
            assert literals(wf) == literals(workflow)
        else:
            changed = [(a, b) for a, b in zip(literals(workflow), literals(wf)) if a != b]
            assert len(changed) == 1, (kind, changed)
    assert workflow == gt(category)  # the GT workflow itself is never modified


def test_wrong_object_names_another_object_of_the_scene():
    wf = perturb(gt("remove"), SCENE, "wrong_object", np.random.default_rng(0))
    prompt = [s for s in wf["pipeline"] if s.get("model") == "RES"][0]["input"]["prompt"]
    named = [i for i in range(3) if prompt in candidates(SCENE, i)]
    assert len(named) == 1 and prompt != gt("remove")["pipeline"][0]["input"]["prompt"]


def test_attribute_words_swap_within_their_kind():
    rng = np.random.default_rng(0)
    for _ in range(20):
        out = _swap_word("change the background to light blue grid", rng)
        assert out != "change the background to light blue grid" and out.startswith("change the background to ")
    assert _swap_word("make it night", rng) is None
    assert _swap_word("red striped", rng).split()[0] != "red" or _swap_word("red striped", rng) != "red striped"


def test_a_one_object_scene_has_no_wrong_object():
    one = Scene(64, 64, objects=(Obj("circle", "red", box=(20, 20, 16, 16)),))
    rng = np.random.default_rng(0)
    inst = make_instruction(one, "remove", rng, "gt")
    assert perturb(inst.workflow, one, "wrong_object", rng) is None


def test_open_instructions_join_the_executed_rows_only_with_a_builder(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from lego_edit.training.critic_samples import CriticSamplesConfig, _variants, executed_rows

    def table(name, prefix, workflow):
        rows = [{"id": f"{prefix}_{i:06d}_0", "split": "train", "workflow": workflow} for i in range(10)]
        pq.write_table(pa.Table.from_pylist(rows), tmp_path / name)
        return str(tmp_path / name)

    gt_table, open_table = table("gt.parquet", "gt", '{"pipeline": []}'), table("open.parquet", "open", None)
    cfg = CriticSamplesConfig(
        instructions=gt_table, open_instructions=open_table, train_instructions=4, open_train_instructions=3
    )
    assert [r["id"][:2] for r in executed_rows(cfg, "train")] == ["gt"] * 4  # no Builder: nothing to execute
    cfg.builder = "results/builder/sft"
    rows = executed_rows(cfg, "train")
    assert [r["id"][:2] for r in rows] == ["gt"] * 4 + ["op"] * 3
    assert rows == executed_rows(cfg, "train")  # a seeded draw
    assert _variants(rows[-1], SCENE, cfg, np.random.default_rng(0)) == []  # no GT workflow to perturb
    assert executed_rows(cfg, "val") == []
