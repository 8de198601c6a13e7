"""A teacher VLM for the builder-sources chain, and real-looking listings for it.

The teacher is a tiny VLM overfit to answer five kinds of instruction, so that its answers cover every verdict:
a brightening workflow (kept where the target is the brightened image, filtered where it is a darkened one,
unfiltered where the row has no target), a workflow calling an unknown brick (invalid), plain text (unparseable)
and a valid workflow whose images differ in size at run time (execution_failed). The listing is a copy of 50
shapes-world rows in MagicBrush's published layout (a datasets save_to_disk DatasetDict with train and dev
splits, images embedded), plus a JSONL listing of broken rows.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from data_fixtures import random_scenes

from lego_edit.builder.prompting import builder_user_text
from lego_edit.data.shapes import render

BRIGHTEN, WARP, SING, STACK = "brighten the picture", "warp the picture", "sing me a song", "stack it on a wider copy"


def _workflow(process: str, steps: list[dict], result: str) -> str:
    return json.dumps({"process": process, "pipeline": [*steps, {"result": result}]}, separators=(",", ":"))


ANSWERS = {
    BRIGHTEN: _workflow(
        BRIGHTEN,
        [
            {
                "step": 1,
                "model": "BRIGHTNESS",
                "input": {"image": "init[image]", "ratio": 0.8},
                "output": {"image": "step1[image]"},
            }
        ],
        "[step1[image]]",
    ),
    WARP: _workflow(
        WARP,
        [{"step": 1, "model": "WARP", "input": {"image": "init[image]"}, "output": {"image": "step1[image]"}}],
        "[step1[image]]",
    ),
    SING: "I cannot edit a picture into a song.",
    STACK: _workflow(
        STACK,
        [
            {
                "step": 1,
                "model": "CMI-PRED",
                "input": {"image": "init[image]", "left_ratio": 2, "right_ratio": 1, "top_ratio": 1, "bottom_ratio": 1},
                "output": {"caption": "step1[caption]", "image": "step1[image]", "mask": "step1[mask]"},
            },
            {
                "step": 2,
                "model": "COMPOSE",
                "input": {"image1": "init[image]", "image2": "step1[image]"},
                "output": {"image": "step2[image]"},
            },
        ],
        "[step2[image]]",
    ),
}
# What each listing row asks, and the verdict its answer must get: (instruction, target kind, expected status).
PLAN = (
    [(BRIGHTEN, "bright", "kept")] * 12
    + [(BRIGHTEN, "dark", "filtered")] * 10
    + [(WARP, "bright", "invalid")] * 8
    + [(SING, "bright", "unparseable")] * 8
    + [(STACK, "bright", "execution_failed")] * 6
    + [(BRIGHTEN, None, "unfiltered")] * 6
)


def brightness(image: np.ndarray, ratio: float) -> np.ndarray:
    """What the BRIGHTNESS brick makes of ``image`` (the registry's function, run by the executor)."""
    from lego_edit.bricks.registry import default_registry
    from lego_edit.workflow import BrickContext, Executor, parse_workflow

    wf = json.loads(ANSWERS[BRIGHTEN])
    wf["pipeline"][0]["input"]["ratio"] = ratio
    return Executor(default_registry(), BrickContext(seed=0)).run(parse_workflow(json.dumps(wf)), image).images[0]


def scene_images(n: int, seed: int = 7) -> list[np.ndarray]:
    return [render(s) for s in random_scenes(n, seed=seed, environment_rate=0.0)]


def write_magicbrush_copy(folder: Path) -> None:
    """50 rows in MagicBrush's layout (40 train, 10 dev; PLAN[i] is row img_id 100000 + i) plus two broken ones."""
    from datasets import Dataset, DatasetDict
    from PIL import Image

    from lego_edit.data.builder_sources import magicbrush_features

    def png(a):
        import io

        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format="PNG")
        return {"bytes": buf.getvalue(), "path": None}

    images = scene_images(len(PLAN))
    rows = {k: [] for k in ("img_id", "turn_index", "source_img", "mask_img", "instruction", "target_img")}
    for i, ((text, target, _), img) in enumerate(zip(PLAN, images)):
        rows["img_id"].append(f"{100000 + i}")
        rows["turn_index"].append(1)
        rows["source_img"].append(png(img))
        rows["mask_img"].append(None)
        rows["instruction"].append(text)
        tgt = None if target is None else brightness(img, 0.8 if target == "bright" else 0.2)
        rows["target_img"].append(None if tgt is None else png(tgt))
    order = list(range(len(PLAN)))
    np.random.default_rng(0).shuffle(order)  # kinds mixed across the splits and the chunks
    split_rows = {"train": order[:40], "dev": order[40:]}
    feats = magicbrush_features()
    parts = {}
    for split, idx in split_rows.items():
        part = {k: [v[i] for i in idx] for k, v in rows.items()}
        if split == "dev":  # two broken rows: an empty instruction and a missing source image
            for k, extra in (
                ("img_id", ["bad1", "bad2"]),
                ("turn_index", [1, 1]),
                ("source_img", [png(images[0]), None]),
                ("mask_img", [None, None]),
                ("instruction", ["  ", BRIGHTEN]),
                ("target_img", [None, None]),
            ):
                part[k] += extra
        parts[split] = Dataset.from_dict(part, features=feats)
    DatasetDict(parts).save_to_disk(str(folder))


def write_broken_listing(folder: Path) -> Path:
    """A JSONL listing: one good row without a target, a missing file, a corrupt file, a line that is not JSON and a
    repeated id."""
    folder.mkdir(parents=True, exist_ok=True)
    from PIL import Image

    Image.fromarray(scene_images(1, seed=9)[0]).save(folder / "good.png")
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    lines = [
        json.dumps({"id": "g1", "image": "good.png", "instruction": BRIGHTEN}),
        json.dumps({"id": "m1", "image": "missing.png", "instruction": BRIGHTEN}),
        json.dumps({"id": "c1", "image": "corrupt.png", "instruction": BRIGHTEN}),
        "{not json",
        json.dumps({"id": "g1", "image": "good.png", "instruction": SING}),
    ]
    path = folder / "listing.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def overfit_teacher(model_dir: Path):
    """The tiny teacher VLM: each instruction kind, with several images, to its answer."""
    from openai_server import overfit_vlm

    examples = [
        ([img], builder_user_text(text), ANSWERS[text])
        for k, text in enumerate(ANSWERS)
        for img in scene_images(3, seed=100 + k)
    ]
    return overfit_vlm(examples, model_dir, steps=120, extra_texts=tuple(ANSWERS.values()))


@pytest.fixture(scope="session")
def served_teacher(tmp_path_factory):
    from openai_server import serve

    model_dir = tmp_path_factory.mktemp("teacher") / "model"
    overfit_teacher(model_dir)
    with serve(model_dir) as server:
        yield server


JUDGE_SC, JUDGE_PQ = '{"score": [8, 9], "reasoning": "brighter"}', '{"score": [7, 8], "reasoning": "clean"}'


@pytest.fixture(scope="session")
def served_teacher_judge(tmp_path_factory):
    """A judge in the project's wording (VIEScore SC then PQ) fit to rate any brightened scene SC 8 and PQ 7:
    overall sqrt(8 * 7) / 10 = 0.748."""
    from openai_server import overfit_vlm, serve

    from lego_edit.evaluation.judge import PQ_PROMPT, SC_PROMPT

    sc_text = SC_PROMPT.replace("{instruction}", BRIGHTEN)
    examples = []
    for img in scene_images(4, seed=200):
        out = brightness(img, 0.8)
        examples += [([img, out], sc_text, JUDGE_SC), ([out], PQ_PROMPT, JUDGE_PQ)]
    model_dir = tmp_path_factory.mktemp("teacher_judge") / "model"
    overfit_vlm(examples, model_dir, steps=60)
    with serve(model_dir) as server:
        yield server
