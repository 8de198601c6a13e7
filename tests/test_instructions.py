"""Instruction synthesis: GT workflows validate and, run with the oracle bricks, reproduce the GT target exactly;
open-domain instructions share no template or connective with the GT ones; splits never share a scene."""

from __future__ import annotations

import json
import re
from collections import Counter
from functools import cache
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from data_fixtures import random_scenes
from PIL import Image

from lego_edit.bricks.registry import default_registry
from lego_edit.data import phrases
from lego_edit.data.dataset import (
    InstructionConfig,
    SceneConfig,
    load_instructions,
    load_scenes,
    make_instructions,
    make_scenes,
    scene_splits,
)
from lego_edit.data.instructions import CATEGORIES, HYBRID_PARTS, LAST_ONLY, _hybrid_pairs_for, make_instruction
from lego_edit.data.oracle import ShapesOracle
from lego_edit.data.referring import ORDINALS
from lego_edit.data.shapes import (
    BACKGROUNDS,
    COLORS,
    ORIENTATIONS,
    PATTERNS,
    SHAPES,
    SIZES,
    STYLES,
    TEXTURES,
    Scene,
    render,
)
from lego_edit.workflow import Executor, check_workflow, parse_workflow

SINGLE = [c for c in CATEGORIES if c != "hybrid"]
N_SCENES = 240  # per category; every category is possible in most scenes (pose needs a triangle)


@cache
def _scenes(seed: int, n: int):
    return tuple(random_scenes(n, seed=seed, environment_rate=0.3))


def _run_gt(scene: Scene, inst) -> np.ndarray:
    """Validate the GT workflow against the oracle's registry, run it on the scene's image, return the result."""
    oracle = ShapesOracle()
    image = oracle.remember(scene)
    registry = oracle.registry()
    workflow = parse_workflow(json.dumps(inst.workflow))
    check_workflow(workflow, registry, has_mask=False)
    check_workflow(workflow, default_registry(plugins=False), has_mask=False)  # the real bricks accept it too
    result = Executor(registry).run(workflow, image)
    assert len(result.images) == 1
    return result.images[0]


def _bricks_of(workflow: dict) -> list[str]:
    return [s["model"] for s in workflow["pipeline"] if "model" in s]


@pytest.mark.parametrize("category", CATEGORIES)
def test_gt_workflow_reproduces_the_target_with_oracle_bricks(category):
    n_scenes = 400 if category == "hybrid" else N_SCENES
    made = 0
    parts = Counter()
    for k, scene in enumerate(_scenes(1, n_scenes)):
        inst = make_instruction(scene, category, np.random.default_rng([CATEGORIES.index(category), k]), "gt")
        if inst is None:
            continue
        made += 1
        assert (inst.category, inst.domain, inst.workflow["process"]) == (category, "gt", inst.text)
        out = _run_gt(scene, inst)
        assert out.dtype == inst.target.dtype and out.shape == inst.target.shape, inst.text
        assert np.array_equal(out, inst.target), (scene.to_json(), inst.text)
        if inst.target_scene is not None:
            assert np.array_equal(inst.target, render(inst.target_scene))
        listed = [b for clause in inst.reasoning.split("; ") for b in clause.split(": ")[1].split(", ")]
        assert _bricks_of(inst.workflow) == listed  # the reasoning names exactly the bricks the workflow calls
        assert [c.split(":")[0] for c in inst.reasoning.split("; ")] == inst.parts
        parts[tuple(inst.parts[:2])] += 1
    if category == "pose":
        assert made > 60  # pose needs a triangle
    else:
        assert made >= n_scenes - 3, made
    if category == "hybrid":
        assert set(parts) == set(_hybrid_pairs_for("gt"))  # every GT pair occurs
    else:
        assert set(parts) == {(category,)}


def test_extract_target_is_rgba_and_outpaint_grows_the_canvas():
    scene = _scenes(1, N_SCENES)[0]
    inst = make_instruction(scene, "extract", np.random.default_rng(0), "gt")
    assert inst.target.shape == (64, 64, 4) and inst.target_scene is None
    assert set(np.unique(inst.target[:, :, 3])) == {0, 255}
    sizes = set()
    for k, scene in enumerate(_scenes(1, 40)):
        inst = make_instruction(scene, "outpaint", np.random.default_rng([5, k]), "gt")
        sizes.add(inst.target.shape[:2])
    assert sizes == {(64, 96), (96, 64), (96, 96)}


# --- open-domain phrasing ---------------------------------------------------------------------------------


def _alt(words) -> str:
    return "(?:" + "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True)) + ")"


def _gt_placeholders() -> dict[str, str]:
    color, pattern, shape, size = _alt(COLORS), _alt(PATTERNS), _alt(SHAPES), _alt(SIZES)
    expr_word = _alt(
        [*SIZES, *COLORS, *PATTERNS, *SHAPES, *ORDINALS, "on", "the", "at", "from", "left", "right", "top", "bottom"]
    )
    return {
        "e": f"the (?:{expr_word} )*{shape}(?: {expr_word})*",
        "cp": f"(?:{color}(?: {pattern})?|{pattern})",
        "o": f"an? (?:{size} )?{color}(?: {pattern})? {shape}(?: pointing {_alt(ORIENTATIONS)})?",
        "at": _alt(phrases.AT.values()),
        "bg": f"{_alt(BACKGROUNDS)}(?: {_alt(TEXTURES)})?",
        "s": _alt(STYLES[1:]),
        "sn": _alt(phrases.STYLE_WORDS.values()),
        "r": _alt(phrases.RESIZE_WORDS.values()),
        "d": _alt(phrases.DIRECTIONS.values()),
        "side": _alt(phrases.OUTPAINT_PHRASE.values()),
        "env": _alt(p for ps in phrases.GT_ENV.values() for p in ps),
    }


def _template_regex(template: str, slots: dict[str, str]) -> str:
    out, pos = [], 0
    for m in re.finditer(r"\{(\w+)\}", template):
        out.append(re.escape(template[pos : m.start()]))
        out.append(f"(?:{slots[m.group(1)]})")
        pos = m.end()
    out.append(re.escape(template[pos:]))
    return "".join(out)


@cache
def _gt_regexes():
    slots = _gt_placeholders()
    clause = {c: [_template_regex(t, slots) for t in ts] for c, ts in phrases.GT.items()}
    any_clause = "(?:" + "|".join(r for rs in clause.values() for r in rs) + ")"
    connective = [
        _template_regex(t, {"a": any_clause, "b": any_clause, "c": any_clause})
        for t in (*phrases.GT_CONNECTIVES, *phrases.GT_CONNECTIVES_3)
    ]
    loose = [
        _template_regex(t, {"a": ".+", "b": ".+", "c": ".+"})
        for t in (*phrases.GT_CONNECTIVES, *phrases.GT_CONNECTIVES_3)
    ]
    compile_ = lambda rs: [re.compile(r, re.IGNORECASE) for r in rs]
    return ({c: compile_(rs) for c, rs in clause.items()}, compile_(connective), compile_(loose))


def _matches(text: str, regexes) -> bool:
    return any(r.fullmatch(text) for r in regexes)


def test_phrase_tables_are_disjoint():
    assert set(phrases.GT) == set(phrases.OPEN) == set(SINGLE)
    gt = {t for ts in phrases.GT.values() for t in ts}
    open_ = {t for ts in phrases.OPEN.values() for t in ts}
    assert gt & open_ == {"{env}"}  # the environment clause's wording comes from GT_ENV / OPEN_ENV
    assert not {p for ps in phrases.GT_ENV.values() for p in ps} & {p for ps in phrases.OPEN_ENV.values() for p in ps}
    assert not set(phrases.GT_CONNECTIVES + phrases.GT_CONNECTIVES_3) & set(
        phrases.OPEN_CONNECTIVES + phrases.OPEN_CONNECTIVES_3
    )
    gt_pairs, open_pairs = _hybrid_pairs_for("gt"), _hybrid_pairs_for("open")
    assert not set(gt_pairs) & set(open_pairs)
    assert (
        len(gt_pairs) + len(open_pairs)
        == 7 * 8
        == len([(a, b) for a in HYBRID_PARTS for b in HYBRID_PARTS if a != b and a not in LAST_ONLY])
    )


def test_gt_texts_read_as_gt_templates():
    """The regexes below recognise every GT text, so the open-domain check that uses them has teeth."""
    clause, connective, _ = _gt_regexes()
    for k, scene in enumerate(_scenes(3, 150)):
        for category in CATEGORIES:
            inst = make_instruction(scene, category, np.random.default_rng([k, CATEGORIES.index(category)]), "gt")
            if inst is None:
                continue
            if category == "hybrid":
                assert _matches(inst.text, connective), inst.text
            else:
                assert _matches(inst.text, clause[category]), inst.text


def test_open_domain_instructions_have_no_workflow_and_no_gt_wording():
    clause, connective, loose = _gt_regexes()
    all_clauses = [r for rs in clause.values() for r in rs]
    made = Counter()
    for k, scene in enumerate(_scenes(4, 200)):
        for category in CATEGORIES:
            inst = make_instruction(scene, category, np.random.default_rng([k, CATEGORIES.index(category)]), "open")
            if inst is None:
                continue
            made[category] += 1
            assert (inst.domain, inst.workflow, inst.reasoning) == ("open", None, "")
            assert inst.text[0].isupper()
            assert not _matches(inst.text, all_clauses), inst.text
            assert not _matches(inst.text, connective), inst.text
            assert not _matches(inst.text, loose), inst.text
            if category == "hybrid":
                assert tuple(inst.parts[:2]) in set(_hybrid_pairs_for("open"))
    assert set(made) == set(CATEGORIES) and min(made.values()) > 60


# --- tables and splits ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    root = tmp_path_factory.mktemp("instructions")
    scfg = SceneConfig(seed=3, train=10, val=4, test=6)
    make_scenes(scfg, root / "scenes.parquet", root / "scene_images")
    icfg = InstructionConfig(seed=3, per_scene=3)
    for domain in ("gt", "open"):
        make_instructions(icfg, domain, root / "scenes.parquet", root / f"{domain}.parquet", root / "targets" / domain)
    return root


def test_scene_splits_are_disjoint_and_sized():
    cfg = SceneConfig(train=5, val=2, test=3)
    assert scene_splits(cfg) == [
        (0, "train"),
        (1, "train"),
        (2, "train"),
        (3, "train"),
        (4, "train"),
        (5, "val"),
        (6, "val"),
        (7, "test"),
        (8, "test"),
        (9, "test"),
    ]


def test_no_scene_in_two_splits(tables):
    scenes = load_scenes(tables / "scenes.parquet")
    assert [r["scene_id"] for r in scenes] == list(range(20))
    by_split = {s: {r["scene_id"] for r in scenes if r["split"] == s} for s in ("train", "val", "test")}
    assert [len(by_split[s]) for s in ("train", "val", "test")] == [10, 4, 6]
    assert not (
        by_split["train"] & by_split["val"]
        or by_split["train"] & by_split["test"]
        or by_split["val"] & by_split["test"]
    )
    split_of = {r["scene_id"]: r["split"] for r in scenes}
    for domain in ("gt", "open"):
        rows = load_instructions(tables / f"{domain}.parquet")
        assert len(rows) == 60  # 3 per scene: every scene can take some category
        assert len({r["id"] for r in rows}) == 60
        for r in rows:
            assert r["split"] == split_of[r["scene_id"]]
            assert r["domain"] == domain
        assert {r["split"] for r in load_instructions(tables / f"{domain}.parquet", "val")} == {"val"}


def test_rl_instructions_are_new_training_instructions_and_leave_the_others_unchanged(tables, tmp_path):
    """Stage 2's own prompts: rl_per_scene more per training scene, in the split 'rl', none in val or test, and the
    instructions written without them unchanged (same ids, texts, workflows and target images)."""
    cfg = InstructionConfig(seed=3, per_scene=3, rl_per_scene=2)
    make_instructions(cfg, "gt", tables / "scenes.parquet", tmp_path / "gt.parquet", tmp_path / "targets")
    rows = load_instructions(tmp_path / "gt.parquet")
    rl = [r for r in rows if r["split"] == "rl"]
    train_scenes = {r["scene_id"] for r in load_scenes(tables / "scenes.parquet") if r["split"] == "train"}
    assert len(rl) == 2 * len(train_scenes) and {r["scene_id"] for r in rl} == train_scenes
    assert all(r["workflow"] for r in rl)
    before = load_instructions(tables / "gt.parquet")
    kept = [r for r in rows if r["split"] != "rl"]
    fields = ("id", "split", "category", "instruction", "workflow", "target_scene")
    assert [[r[f] for f in fields] for r in kept] == [[r[f] for f in fields] for r in before]
    for r, b in zip(kept, before):
        assert Path(r["target_path"]).read_bytes() == Path(b["target_path"]).read_bytes()
    seen = {r["instruction"] for r in before if r["split"] == "train"}
    assert sum(r["instruction"] not in seen for r in rl) > len(rl) // 2  # mostly instructions SFT never saw


def test_stored_gt_rows_reproduce_the_stored_targets(tables):
    scenes = {r["scene_id"]: r for r in load_scenes(tables / "scenes.parquet")}
    rows = load_instructions(tables / "gt.parquet")
    assert all(r["workflow"] and r["reasoning"] for r in rows)
    assert all(r["workflow"] is None and r["reasoning"] is None for r in load_instructions(tables / "open.parquet"))
    for r in rows:
        scene = Scene.from_json(scenes[r["scene_id"]]["scene"])
        oracle = ShapesOracle()
        image = oracle.remember(scene)
        assert np.array_equal(np.asarray(Image.open(r["image_path"])), image)
        out = Executor(oracle.registry()).run(parse_workflow(r["workflow"]), image).images[0]
        assert np.array_equal(out, np.asarray(Image.open(r["target_path"]))), r["instruction"]
        if r["target_scene"]:
            assert np.array_equal(out, render(Scene.from_json(r["target_scene"])))
    schema = pq.read_schema(tables / "gt.parquet")
    assert schema.names == [
        "id",
        "scene_id",
        "scene_seed",
        "split",
        "domain",
        "category",
        "parts",
        "instruction",
        "reasoning",
        "workflow",
        "image_path",
        "target_path",
        "target_scene",
    ]


def test_stage3_draws_gt_prompts_for_its_share_without_their_workflows(tables):
    """grpo_critic.gt_share: GT training instructions join stage 3's open pool, as many as make that share, with no
    GT workflow left for the critic-scored stage to lean on; the draw follows the seed."""
    from lego_edit.training.builder import BuilderConfig, gt_prompt_rows
    from lego_edit.training.grpo_settings import GRPOSettings

    cfg = BuilderConfig(
        stage="grpo_critic", gt_instructions=str(tables / "gt.parquet"), seed=1, grpo_critic=GRPOSettings(gt_share=0.25)
    )
    rows = gt_prompt_rows(cfg, open_rows=12)
    assert len(rows) == 4  # 4 / (12 + 4) = 0.25
    assert all(r["domain"] == "gt" and r["split"] == "train" for r in rows)
    assert all(r["workflow"] is None and r["reasoning"] is None for r in rows)
    assert [r["id"] for r in gt_prompt_rows(cfg, open_rows=12)] == [r["id"] for r in rows]
    with pytest.raises(ValueError, match="needs gt_instructions"):
        gt_prompt_rows(BuilderConfig(stage="grpo_critic", grpo_critic=GRPOSettings(gt_share=0.25)), 12)
    with pytest.raises(ValueError, match="gt_share must be in"):
        GRPOSettings(gt_share=0.95)
