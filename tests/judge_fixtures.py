"""Stand-in checkouts of the benchmarks' evaluation code in the published layouts, and a tiny judge model that
answers their prompts in the published answer formats.

Layouts (as in stepfun-ai/Step1X-Edit and PKU-YuanGroup/ImgEdit): ``GEdit-Bench/viescore/vie_prompts.py``, module
-level string constants under VIEScore's names (among decoys), next to ``viescore/__init__.py``; and
``Benchmark/Basic/prompts.json``, raw edit type -> prompt with ``<edit_prompt>``, next to ``basic_edit.json`` and
``basic_bench.py``. The prompt texts are stand-ins written here, not the benchmarks' own.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

GEDIT_CONSTANTS = {
    "_context_no_delimit": "Stand-in context: you rate AI images.",
    "_prompts_0shot_two_image_edit_rule": "Stand-in rule: the first image is the source, the second the edit.",
    "_prompts_0shot_tie_rule_SC": "Stand-in SC: rate success and over-editing.\nEditing instruction: <instruction>",
    "_prompts_0shot_rule_PQ": "Stand-in PQ: rate naturalness and artifacts.",
}
GEDIT_SC = "\n".join(
    GEDIT_CONSTANTS[k]
    for k in ("_context_no_delimit", "_prompts_0shot_two_image_edit_rule", "_prompts_0shot_tie_rule_SC")
)
GEDIT_PQ = "\n".join(GEDIT_CONSTANTS[k] for k in ("_context_no_delimit", "_prompts_0shot_rule_PQ"))
IMGEDIT_RAW_TYPES = ("replace", "add", "adjust", "remove", "style", "action", "extract", "background", "compose")

# One runnable workflow that stands in for a Builder's answer in the evaluation tests.
BRIGHTEN = json.dumps(
    {
        "process": "brighten",
        "pipeline": [
            {
                "step": 1,
                "model": "BRIGHTNESS",
                "input": {"image": "init[image]", "ratio": 0.75},
                "output": {"image": "step1[image]"},
            },
            {"result": "[step1[image]]"},
        ],
    }
)


def imgedit_stand_in(edit_type: str) -> str:
    return (
        f"\nStand-in rubric for {edit_type} edits.\nediting instruction is : <edit_prompt>.\n\n"
        "Below are the images before and after editing:\n"
    )


def write_step1x_checkout(root: str | Path) -> Path:
    """A Step1X-Edit checkout holding GEdit-Bench/viescore with stand-in prompts; returns ``root``."""
    viescore = Path(root) / "GEdit-Bench" / "viescore"
    viescore.mkdir(parents=True, exist_ok=True)
    decoys = {"_context": "decoy: the delimited context", "_prompts_1shot_tie_rule_SC": "decoy: one-shot SC"}
    lines = ["# stand-in of VIEScore's prompt module", "import os", ""]
    for name, text in {**decoys, **GEDIT_CONSTANTS}.items():
        lines.append(f'{name} = """{text}"""')
    lines += ["RETRIES = 3", "", "def unused():", '    return "not a prompt"', ""]
    (viescore / "vie_prompts.py").write_text("\n".join(lines), encoding="utf-8")
    (viescore / "__init__.py").write_text("raise RuntimeError('a checkout is read, never imported')\n")
    (Path(root) / "GEdit-Bench" / "test_gedit_score.py").write_text("# stand-in\n")
    return Path(root)


def write_imgedit_checkout(root: str | Path) -> Path:
    """An ImgEdit checkout holding Benchmark/Basic/prompts.json with stand-in prompts; returns ``root``."""
    basic = Path(root) / "Benchmark" / "Basic"
    basic.mkdir(parents=True, exist_ok=True)
    prompts = {t: imgedit_stand_in(t) for t in IMGEDIT_RAW_TYPES}
    (basic / "prompts.json").write_text(json.dumps(prompts, indent=2), encoding="utf-8")
    (basic / "basic_edit.json").write_text("{}")
    (basic / "basic_bench.py").write_text("# stand-in\n")
    return Path(root)


def jpeg_round_trip(image: np.ndarray) -> np.ndarray:
    """The pixels a server decodes from the JPEG that VIEScore's protocol sends."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG")
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


# What the tiny judge is fit to answer. SC's three scores and ImgEdit's uncapped 2/5/5 are read only the published
# way: VIEScore takes the min of any score list (SC 5), ImgEdit averages its "Label: n" lines (4.0), where the
# project's own parsing would refuse three SC scores and cap ImgEdit's 2nd and 3rd score at the 1st.
INSTRUCTION = "Make the square green."
SC_ANSWER = '{"score": [7, 5, 9], "reasoning": "ok"}'
PQ_ANSWER = '{"score": [8, 6], "reasoning": "ok"}'
IMGEDIT_ANSWER = "Brief reasoning: ok\nInstruction Compliance: 2\nVisual Naturalness: 5\nPhysical Consistency: 5"


def judge_examples(source: np.ndarray, edited: np.ndarray):
    """(examples, conversations) to fit a tiny VLM on: the text first, then the images, as the protocols send."""
    from lego_edit.evaluation.protocols import _text_then_images

    src, out = jpeg_round_trip(source), jpeg_round_trip(edited)
    sc_text = GEDIT_SC.replace("<instruction>", INSTRUCTION)
    img_text = imgedit_stand_in("compose").replace("<edit_prompt>", INSTRUCTION)
    examples = [
        ([src, out], sc_text, SC_ANSWER),
        ([out], GEDIT_PQ, PQ_ANSWER),
        ([source, edited], img_text, IMGEDIT_ANSWER),
    ]
    return examples, [_text_then_images(text, len(images)) for images, text, _ in examples]


SOURCE = np.zeros((48, 64, 3), np.uint8)
SOURCE[:] = (200, 40, 40)
SOURCE[10:30, 10:30] = 255
EDITED = SOURCE.copy()
EDITED[10:30, 10:30] = (40, 200, 40)


@pytest.fixture(scope="session")
def served_judge(tmp_path_factory):
    """A `transformers serve` on loopback of a tiny VLM fit to answer the stand-in prompts (``judge_examples``)."""
    from openai_server import overfit_vlm, serve

    model_dir = tmp_path_factory.mktemp("served_judge") / "model"
    examples, conversations = judge_examples(SOURCE, EDITED)
    overfit_vlm(examples, model_dir, steps=50, messages=conversations)
    with serve(model_dir) as server:
        yield server


@pytest.fixture(scope="session")
def checkouts(tmp_path_factory):
    """(Step1X-Edit checkout, ImgEdit checkout) holding stand-in prompt files in the published layouts."""
    root = tmp_path_factory.mktemp("checkouts")
    return write_step1x_checkout(root / "Step1X-Edit"), write_imgedit_checkout(root / "ImgEdit")


def endpoint_critic_dir(path: Path, base_url: str, model: str) -> Path:
    """A run's critic folder whose critic.json names an endpoint critic, as train_critic writes it."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "critic.json").write_text(json.dumps({"backend": "openai", "base_url": base_url, "model": model}))
    return path
