"""The results layout is defined once (lego_edit/layout.py): the rules and the library take their paths from it,
and a job hands its trained models to the library by name."""

import re
from pathlib import Path

import pytest
from data_fixtures import REPO

from lego_edit.bricks.models import available_models
from lego_edit.layout import EDIT_BRICK_NAMES, BrickModels, RunLayout


def test_no_rule_spells_a_results_path():
    spelled = []
    for path in [REPO / "Snakefile", *sorted((REPO / "rules").glob("*.smk"))]:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if re.search(r"""["']results/""", code):
                spelled.append(f"{path.name}:{n}: {line.strip()}")
    assert not spelled, "use RUN (lego_edit.layout.RunLayout) instead:\n" + "\n".join(spelled)


def test_layout_paths_and_wildcard_templates():
    run = RunLayout("results")
    assert run.shards() == "results/data/shards/{family}"
    assert run.eval_chunk("sft", "shapes_gt") == "results/eval/sft/shapes_gt/chunk_{scatteritem}.parquet"
    assert RunLayout("/x/run/").edit_lora("FILL") == "/x/run/bricks/edit_lora/FILL"
    assert RunLayout(Path("/x/run")) == RunLayout("/x/run")  # a Path root is taken as its string
    assert set(run.model_folders()) >= {"critic", "builder_sft", "edit_lora_POSE", "segmentation"}


def test_a_jobs_named_inputs_name_the_same_models_as_its_run_folder(tmp_path):
    run = RunLayout(str(tmp_path / "results"))
    for folder, marker in (
        (run.segmentation, "segmentation.json"),
        (run.edit_base, "edit_model.json"),
        (run.brick("placement"), "adapter_config.json"),
    ):
        Path(folder).mkdir(parents=True)
        (Path(folder) / marker).write_text("{}")
    Path(run.builder("base")).mkdir(parents=True)
    named = {  # as a rule's input: other inputs beside the models, the LoRAs as a list
        "instructions": "gt.parquet",
        "segmentation": run.segmentation,
        "base_vlm": run.builder("base"),
        "placement": [run.brick("placement")],
        "captioning": run.brick("captioning"),
        "edit_base": run.edit_base,
        "edit_lora": [run.edit_lora(b) for b in EDIT_BRICK_NAMES],
    }
    models = BrickModels.from_named(named)
    assert models == BrickModels.of_run(run.root) == BrickModels.of(models.as_dict())
    assert available_models(models) == available_models(run.root)
    assert available_models(models)["ADD-PRED"] and not available_models(models)["CMI-PRED"]
    assert models.lora_folders()["POSE"] == Path(run.edit_lora("POSE"))


def test_a_model_named_twice_is_an_error():
    with pytest.raises(ValueError, match="one model folder expected, got 2"):
        BrickModels.from_named({"segmentation": ["a", "b"]})
