"""The report draws training curves from the metrics.jsonl a stage leaves, not from a picture made at training."""

import json

import numpy as np
import pytest
from PIL import Image

from lego_edit.evaluation.training_curves import curve_keys, curve_title, metrics_files, plot_training_curve


def write_metrics(folder, rows):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_a_grpo_stage_gets_its_reward_panels_and_a_plain_stage_its_loss():
    grpo = [{"step": 1, "loss": 0.1, "reward": 0.5, "kl": None, "rewards/format/mean": 1.0, "rewards/x/std": 0.1}]
    assert curve_keys(grpo) == ("reward", "rewards/format/mean")  # a key logged only as None draws nothing
    assert curve_keys([{"step": 1, "loss": 2.0, "pair_accuracy": 0.6}]) == ("loss", "pair_accuracy")
    assert curve_keys([{"step": 1, "lr": 1e-3}]) == ("loss",)


def test_an_ensemble_is_drawn_a_line_per_member_in_member_order(tmp_path):
    for k in (10, 2, 0):  # member-10 sorts after member-2 by number, not by name
        write_metrics(tmp_path / "critic" / f"member-{k}", [{"step": s, "loss": 1 / (s + k + 1)} for s in range(5)])
    files = metrics_files(tmp_path / "critic")
    assert [f.parent.name for f in files] == ["member-0", "member-2", "member-10"]
    drawn = plot_training_curve(tmp_path / "critic", tmp_path / "out" / "critic.png", curve_title("critic"))
    assert drawn == files
    image = np.asarray(Image.open(tmp_path / "out" / "critic.png"))
    assert image.shape[0] > 100 and image.std() > 0


def test_many_curves_wrap_into_rows(tmp_path):
    terms = {f"rewards/t{k}/mean": 0.1 * k for k in range(5)}
    write_metrics(tmp_path / "grpo", [{"step": s, "reward": 0.5, "kl": 0.01 * s, **terms} for s in range(3)])
    plot_training_curve(tmp_path / "grpo", tmp_path / "grpo.png", "Builder grpo_gt")
    height, width = np.asarray(Image.open(tmp_path / "grpo.png")).shape[:2]
    assert height > width / 3  # 7 panels: two rows of at most four, not one strip


def test_a_model_folder_without_metrics_is_named_in_the_error(tmp_path):
    (tmp_path / "sft").mkdir()
    with pytest.raises(FileNotFoundError, match="sft: no metrics.jsonl"):
        metrics_files(tmp_path / "sft")


def test_titles_name_the_stage():
    assert curve_title("builder_grpo_gt") == "Builder grpo_gt"
    assert curve_title("edit_lora_FILL") == "edit FILL"
    assert curve_title("segmentation").startswith("segmentation")
