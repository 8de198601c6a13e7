"""The VLM bricks' answer format (bricks.vlm_prompts) and the model-brick helpers that need no model
(bricks.models: inpaint_strength, available_models, bind_model_bricks on folder layouts)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from lego_edit.bricks.catalog import MODEL_BRICKS
from lego_edit.bricks.models import EDIT_BRICK_NAMES, available_models, bind_model_bricks, inpaint_strength
from lego_edit.bricks.registry import default_registry
from lego_edit.bricks.vlm_prompts import PLACEMENT_PROMPT, box_answer, parse_box

# --------------------------------------------------------------------------------------------- box answers


def test_box_answer_format():
    assert box_answer([3, 4, 20, 31]) == "[3, 4, 20, 31]"
    assert box_answer((3.9, 4.2, 20.0, 31.5)) == "[3, 4, 20, 31]"  # truncated to int
    assert box_answer(np.array([0, 1, 2, 3], np.int64)) == "[0, 1, 2, 3]"
    assert (
        PLACEMENT_PROMPT.format(prompt="a red circle")
        == "Where should this be added: a red circle? Answer [x1, y1, x2, y2]."
    )


@pytest.mark.parametrize("box", [[0, 0, 63, 47], [5, 6, 7, 8], [10, 10, 10, 10]])
def test_parse_box_reads_box_answer_back(box):
    assert parse_box(box_answer(box), 64, 48) == box


@pytest.mark.parametrize(
    "text, expected",
    [
        ("[1, 2, 30, 40]", [1, 2, 30, 40]),
        ("the box is [ 1 ,2,  30 , 40 ] I think", [1, 2, 30, 40]),  # spaces, surrounding text
        ("[1, 2, 3, 4] then [10, 10, 20, 20]", [1, 2, 3, 4]),  # the first box counts
        ("[30, 40, 1, 2]", [1, 2, 30, 40]),  # corners in the other order
        ("[30, 2, 1, 40]", [1, 2, 30, 40]),  # x and y ordered separately
        ("[-5, -1, 70, 50]", [0, 0, 63, 47]),  # clipped to a 64x48 image
        ("[60, 45, 100, 100]", [60, 45, 63, 47]),  # partly outside
        ("[63, 47, 63, 47]", [63, 47, 63, 47]),  # the last pixel
        ("[-3, 10, 0, 12]", [0, 10, 0, 12]),  # touches the left edge only
        ("[64, 0, 80, 10]", None),  # wholly right of the image
        ("[0, 48, 10, 60]", None),  # wholly below it
        ("[-9, -9, -1, -1]", None),  # wholly above-left of it
        ("", None),
        ("no box here", None),
        ("[1, 2, 3]", None),  # three numbers
        ("[1.5, 2, 3, 4]", None),  # not integers
        ("(1, 2, 3, 4)", None),  # not brackets
        ("[a, b, c, d]", None),
        ("[1, 2, 3, 4", None),
    ],
)
def test_parse_box(text, expected):
    assert parse_box(text, 64, 48) == expected


def test_parse_box_returns_ints():
    box = parse_box("[007, 8, 9, 10]", 64, 48)
    assert box == [7, 8, 9, 10] and all(type(v) is int for v in box)


# ------------------------------------------------------------------------------------------ inpaint_strength


@pytest.mark.parametrize(
    "score, strength",
    [
        (0.0, 0.2),
        (0.25, 0.4),
        (0.5, 0.6),
        (0.75, 0.8),
        (1.0, 1.0),
        (-2.0, 0.2),
        (3.0, 1.0),  # clipped to [0, 1] first
        (np.float32(0.5), 0.6),
        (1, 1.0),
    ],
)
def test_inpaint_strength(score, strength):
    got = inpaint_strength(score)
    assert type(got) is float
    assert got == pytest.approx(strength, abs=1e-7 if isinstance(score, np.float32) else 1e-15)


# -------------------------------------------------------------------------------- available models, binding


def touch(path: Path, text: str = "{}") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def layout(run: Path, *, seg=False, edit=False, base=False, placement=False, captioning=False) -> Path:
    run.mkdir(parents=True, exist_ok=True)
    if seg:
        touch(run / "bricks" / "segmentation" / "segmentation.json")
    if edit:
        touch(run / "bricks" / "edit_base" / "edit_model.json", json.dumps({"backend": "unet"}))
    if base:
        (run / "builder" / "base").mkdir(parents=True)
    if placement:
        touch(run / "bricks" / "placement" / "adapter_config.json")
    if captioning:
        touch(run / "bricks" / "captioning" / "adapter_config.json")
    return run


def expect(seg=False, edit=False, add=False, cmi=False) -> dict:
    out = {"RES": seg, "SOS": seg, "MASK-SEG": seg, "ADD-PRED": add, "CMI-PRED": cmi}
    out.update({b: edit for b in EDIT_BRICK_NAMES})
    return out


def test_available_models_covers_every_model_brick(tmp_path):
    assert set(available_models(tmp_path)) == set(MODEL_BRICKS)
    assert available_models(tmp_path / "absent") == expect()


@pytest.mark.parametrize(
    "files, expected",
    [
        ({}, expect()),
        ({"seg": True}, expect(seg=True)),
        ({"edit": True}, expect(edit=True)),
        ({"placement": True, "captioning": True}, expect()),  # adapters without the base VLM
        ({"base": True}, expect()),  # a base VLM without adapters
        ({"base": True, "placement": True}, expect(add=True)),
        ({"base": True, "captioning": True}, expect(cmi=True)),
        (
            {"seg": True, "edit": True, "base": True, "placement": True, "captioning": True},
            expect(seg=True, edit=True, add=True, cmi=True),
        ),
    ],
)
def test_available_models_by_layout(tmp_path, files, expected):
    assert available_models(layout(tmp_path / "run", **files)) == expected


def test_available_models_needs_the_marker_files(tmp_path):
    run = tmp_path / "run"
    (run / "bricks" / "segmentation").mkdir(parents=True)  # a folder, but no segmentation.json
    (run / "bricks" / "edit_base" / "edit_model.json").mkdir(parents=True)  # a folder named like the file
    (run / "builder").mkdir()
    (run / "builder" / "base").write_text("")  # a file, not a folder
    touch(run / "bricks" / "placement" / "adapter_config.json")
    assert available_models(run) == expect()


def test_bind_model_bricks_without_models_names_the_folder(tmp_path):
    registry = default_registry(plugins=False)
    empty = tmp_path / "results"
    empty.mkdir()
    message = f"^{re.escape(str(empty))}: no trained brick models found under bricks/$"
    with pytest.raises(FileNotFoundError, match=message):
        bind_model_bricks(registry, empty)
    missing = tmp_path / "no_such_run"
    with pytest.raises(FileNotFoundError, match=f"^{re.escape(str(missing))}: no such run folder"):
        bind_model_bricks(registry, missing)
    # nothing was bound
    assert all(registry.implementation(name) is None for name in MODEL_BRICKS)


def test_bind_model_bricks_binds_what_exists_lazily(tmp_path):
    run = layout(tmp_path / "results", seg=True, base=True, captioning=True)
    registry = default_registry(plugins=False)
    bound = bind_model_bricks(registry, run)  # the marker files are fakes: nothing is loaded until a call
    assert bound == ["RES", "SOS", "MASK-SEG", "CMI-PRED"]
    for name in bound:
        assert callable(registry.implementation(name))
        assert registry.source(name) == f"trained model in {run}"
    for name in set(MODEL_BRICKS) - set(bound):
        assert registry.implementation(name) is None


def test_bind_model_bricks_skips_bricks_the_registry_lacks(tmp_path):
    run = layout(tmp_path / "results", seg=True, edit=True)
    registry = default_registry(plugins=False)
    registry.unregister("SOS")
    registry.unregister("FLUX-POSE")  # by alias
    bound = bind_model_bricks(registry, run)
    assert bound == ["RES", "MASK-SEG", "FILL", "RCM", "INPAINT", "CBG", "STYLE", "ENV"]
