"""Edit success against the exact GT target (evaluation.edit_success) and the stage and reward-model tables built
on it (evaluation.tables), with values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from lego_edit.evaluation.edit_success import in_frame, load_target, score_edit
from lego_edit.evaluation.tables import paired_bootstrap, reward_model_agreement, stage_table
from lego_edit.imageio import save_image


def flat(value, h=8, w=8, c=3):
    return np.full((h, w, c), value, np.uint8)


def test_an_output_that_halves_the_error_succeeds_and_one_that_does_not_fails():
    source, target = flat(100), flat(200)
    exact = score_edit(source, target, target)
    assert exact.success and exact.psnr == 60.0 and exact.error_ratio == 0.0 and exact.region_iou == 1.0
    # MSE to the target: source 100^2; output at 140: 60^2 = 0.36 of it (success), at 130: 70^2 = 0.49 (success),
    # at 125: 75^2 = 0.5625 (failure)
    assert score_edit(source, flat(140), target).success
    assert score_edit(source, flat(130), target).error_ratio == pytest.approx(0.49)
    assert not score_edit(source, flat(125), target).success


def test_a_failed_workflow_counts_as_the_unedited_input():
    source, target = flat(100), flat(200)
    failed = score_edit(source, None, target)
    assert not failed.success and failed.error_ratio == 1.0 and failed.region_iou == 0.0
    assert failed.psnr == failed.psnr_input == pytest.approx(10 * math.log10(255**2 / 100**2))


def test_region_iou_counts_changed_pixels_in_the_same_frame():
    source = flat(100)
    target = source.copy()
    target[:4] = 200  # the top half changes
    output = source.copy()
    output[:2] = 200  # the top quarter changes: half of the wanted region, nothing else
    s = score_edit(source, output, target)
    assert s.region_iou == pytest.approx(0.5)
    assert score_edit(source, source, source).region_iou is None  # the target changes nothing


def test_extract_is_compared_as_premultiplied_rgba():
    # A white scene with a red square: composited on white, the unedited input would look almost right.
    source = flat(255)
    source[2:6, 2:6] = (255, 0, 0)
    target = np.zeros((8, 8, 4), np.uint8)
    target[2:6, 2:6] = (255, 0, 0, 255)
    cut_out = target.copy()
    assert score_edit(source, cut_out, target).success
    unedited = score_edit(source, None, target)
    assert not unedited.success and unedited.region_iou == 0.0
    # an opaque output (no alpha) is the whole image, however it looks
    assert not score_edit(source, source.copy(), target).success


def test_a_larger_canvas_places_the_input_where_it_matches_and_scores_the_new_area():
    rng = np.random.default_rng(0)
    source = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
    target = np.full((8, 12, 3), 90, np.uint8)
    target[:, 4:] = source  # outpainted to the left: the old image sits at x = 4
    placed = in_frame(source.astype(np.float64), target.astype(np.float64))
    assert np.array_equal(placed[:, 4:], source) and (placed[:, :4] == 255).all()
    unedited = score_edit(source, None, target)
    assert not unedited.success and unedited.psnr_input == pytest.approx(
        10 * math.log10(255**2 / ((255 - 90) ** 2 / 3))
    )  # only the new third is wrong
    assert score_edit(source, target, target).success
    half_right = target.copy()
    half_right[:, :4] = 172  # halfway from white to the target grey: a quarter of the error
    assert score_edit(source, half_right, target).success
    # an output of the source's size (the Builder did not outpaint) is placed the same way
    assert not score_edit(source, source, target).success


def test_targets_load_with_their_alpha(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[1:3, 1:3] = (10, 20, 30, 255)
    save_image(tmp_path / "t.png", rgba)
    save_image(tmp_path / "u.png", rgba[:, :, :3])
    assert load_target(tmp_path / "t.png").shape == (4, 4, 4)
    assert load_target(tmp_path / "u.png").shape == (4, 4, 3)


def test_paired_bootstrap_interval():
    mean, lo, hi = paired_bootstrap(np.array([1.0] * 30 + [0.0] * 70), resamples=2000)
    assert mean == pytest.approx(0.3) and 0.2 < lo < 0.3 < hi < 0.4
    assert paired_bootstrap(np.zeros(20)) == (0.0, 0.0, 0.0)
    assert all(math.isnan(v) for v in paired_bootstrap(np.array([])))


def rows(builder, successes, set_name="shapes_gt", psnr=None, critic=None):
    return [
        {
            "id": f"i{k}",
            "set": set_name,
            "category": "remove",
            "builder": builder,
            "executed": True,
            "success": s,
            "psnr": (psnr[k] if psnr else 20.0),
            "region_iou": 0.5,
            "exact_match": s,
            "critic": (critic[k] if critic else 0.5),
        }
        for k, s in enumerate(successes)
    ]


def test_stage_table_pairs_each_stage_with_the_one_before():
    n = 40
    df = pd.DataFrame(
        rows("sft", [False] * n)
        + rows("grpo_gt", [k < 10 for k in range(n)])
        + rows("grpo_critic", [k < 10 for k in range(n)])
        + rows("oracle", [True] * n)
    )
    st = stage_table(df, resamples=2000).set_index(["stage", "figure"])
    gain = st.loc[("grpo_gt", "success")]
    assert gain["vs"] == "sft" and gain["n"] == n and gain["difference"] == pytest.approx(0.25)
    assert gain["ci_low"] > 0 and gain["ci_high"] < 0.5
    same = st.loc[("grpo_critic", "success")]
    assert (same["difference"], same["ci_low"], same["ci_high"]) == (0.0, 0.0, 0.0)
    assert "oracle" not in set(st.index.get_level_values("stage"))  # the oracle is not a stage


def test_reward_model_agreement_counts_pairs_more_than_a_decibel_apart():
    df = pd.DataFrame(
        rows("sft", [False] * 3, psnr=[20.0, 20.0, 20.0], critic=[0.2, 0.2, 0.9])
        + rows("grpo_gt", [True] * 3, psnr=[25.0, 20.5, 30.0], critic=[0.8, 0.1, 0.3])
    )
    ag = reward_model_agreement(df).set_index("set").loc["shapes_gt"]
    # i0: +5 dB, critic up (agrees); i1: 0.5 dB apart (not counted); i2: +10 dB, critic down (disagrees)
    assert ag["pairs"] == 2 and ag["agreement"] == 0.5
