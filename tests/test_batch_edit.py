"""Batch editing of an image folder (lego_edit.editing, ``lego-edit edit``, rules/edit.smk): inputs and mapping
files, odd and broken images, Builder batching, the manifest, resume after SIGKILL, chunks and their merge.

Workflows here use function bricks only (BRIGHTNESS with ratio 0.25 halves every pixel), and a fake generation
backend stands in for the Builder, so every expected value is known exactly and the file runs in seconds.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import types
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from lego_edit.bricks.registry import default_registry
from lego_edit.builder.backends import BackendError
from lego_edit.cli import main
from lego_edit.editing import (
    EditConfig,
    EditError,
    MappingError,
    collect_items,
    edit_folder,
    list_images,
    merge_manifests,
    model_inputs,
    output_stems,
    read_manifest,
    read_mapping,
    select_chunk,
)
from lego_edit.editing.manifest import Manifest, empty_record
from lego_edit.editing.sources import builder_identity, load_builder

REPO = Path(__file__).resolve().parents[1]


def brightness_wf(*ratios: float) -> dict:
    """One BRIGHTNESS step per ratio on the input image; the result lists them all."""
    steps = [
        {
            "step": i,
            "model": "BRIGHTNESS",
            "input": {"image": "init[image]", "ratio": r},
            "output": {"image": f"step{i}[image]"},
        }
        for i, r in enumerate(ratios, 1)
    ]
    return {
        "process": "brightness",
        "pipeline": steps + [{"result": "[" + ", ".join(f"step{i}[image]" for i in range(1, len(ratios) + 1)) + "]"}],
    }


HALVE = brightness_wf(0.25)  # factor 2 * 0.25 = 0.5: every channel value v becomes rint(v / 2)


def write_json(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj))
    return path


def solid(path: Path, rgb, size=(16, 16)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), rgb, np.uint8)).save(path)
    return path


def png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def rows(manifest: Path) -> dict[str, dict]:
    return {r["file"]: r for r in read_manifest(manifest)}


def run_cli(capsys, *args) -> tuple[int, str, str]:
    code = main(["edit", *map(str, args), "--no-progress"])
    out, err = capsys.readouterr()
    return code, out, err


# ---------------------------------------------------------------- inputs
def test_list_images_recursive_any_case_skipping_hidden_and_output(tmp_path):
    for name in (
        "a.PNG",
        "b.jpeg",
        "c.JPG",
        "sub/deep/d.WebP",
        "notes.txt",
        "e.gif",
        ".hidden.png",
        ".cache/f.png",
        "out/g.png",
        "sub/out/h.png",
    ):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    assert list_images(tmp_path, exclude=(tmp_path / "out",)) == [
        "a.PNG",
        "b.jpeg",
        "c.JPG",
        "e.gif",
        "sub/deep/d.WebP",
        "sub/out/h.png",
    ]


def test_an_animated_gif_is_edited_as_its_first_frame(tmp_path):
    from PIL import Image

    folder = tmp_path / "in"
    folder.mkdir()
    frames = [Image.new("RGB", (16, 12), (200, 100, 50)), Image.new("RGB", (16, 12), (0, 0, 0))]
    frames[0].save(folder / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    out = tmp_path / "out"
    s = edit_folder(
        EditConfig(str(folder), str(out), workflow=str(write_json(tmp_path / "w.json", HALVE)), progress=False)
    )
    assert (s.edited, s.failed) == (1, 0)
    first = np.asarray(Image.open(folder / "anim.gif").convert("RGB")).astype(int)
    [output] = pq.read_table(s.manifest).column("outputs").to_pylist()[0]
    assert np.array_equal(np.asarray(Image.open(out / output)), np.rint(first / 2).astype(np.uint8))


def test_read_mapping_csv_and_jsonl(tmp_path):
    csv = tmp_path / "m.csv"
    csv.write_text(
        '\ufefffile,instruction,mask,id\n./a.png,"make it red, please",,1\nsub/b.png,,masks/b.png,2\n'
        'c.png,"two\nlines",,3\n'
    )
    items = read_mapping(csv, default_instruction="brighten")
    assert [(i.file, i.instruction, i.mask, i.row) for i in items] == [
        ("a.png", "make it red, please", None, "m.csv line 2"),
        ("sub/b.png", "brighten", "masks/b.png", "m.csv line 3"),
        ("c.png", "two\nlines", None, "m.csv line 5"),
    ]
    jl = tmp_path / "m.jsonl"
    jl.write_text('{"path": "a.png", "instruction": "x"}\n\n{"image": "b.png", "instruction": " y ", "mask": null}\n')
    assert [(i.file, i.instruction, i.mask, i.row) for i in read_mapping(jl)] == [
        ("a.png", "x", None, "m.jsonl line 1"),
        ("b.png", "y", None, "m.jsonl line 3"),
    ]


@pytest.mark.parametrize(
    "name,text,message",
    [
        (
            "m.csv",
            "image_file,instruction\na.png,x\n",
            "m.csv: the header ['image_file', 'instruction'] has no 'file' column; expected file,instruction[,mask]",
        ),
        (
            "m.csv",
            "file,instruction\na.png,x\nb.png,\n",
            "m.csv line 3: no instruction for 'b.png' (and no --instruction to fall back on)",
        ),
        (
            "m.csv",
            "file,instruction\na.png,x,extra\n",
            "m.csv line 2: 3 fields, but the header has 2 (quote values that contain commas)",
        ),
        ("m.csv", "file,instruction,mask\na.png,x\n", "m.csv line 2: 2 fields, but the header has 3"),
        ("m.csv", "file,instruction\n,x\n", "m.csv line 2: empty 'file'"),
        ("m.csv", "file,instruction\n../a.png,x\n", "m.csv line 2: file '../a.png' points outside the input folder"),
        (
            "m.csv",
            "file,instruction\n/etc/a.png,x\n",
            "m.csv line 2: file '/etc/a.png' is an absolute path; give it relative to the input folder",
        ),
        (
            "m.csv",
            "file,instruction\na.png,x\nb.png,y\n./a.png,z\n",
            "m.csv line 4: 'a.png' is already listed (m.csv line 2); one instruction per image",
        ),
        ("m.csv", "file,instruction\n", "m.csv: no rows"),
        (
            "m.jsonl",
            '{"file": "a.png", "instruction": "x"}\n{"file": "b.png", "instruction": "y"\n',
            "m.jsonl line 2: not valid JSON (Expecting ',' delimiter at column 37)",
        ),
        ("m.jsonl", '["a.png", "x"]\n', "m.jsonl line 1: expected a JSON object, got list"),
        ("m.jsonl", '{"file": "a.png", "instruction": 3}\n', "m.jsonl line 1: 'instruction' must be a string, got 3"),
        ("m.jsonl", '{"instruction": "x"}\n', "m.jsonl line 1: no 'file' field (fields: ['instruction'])"),
        ("m.tsv", "file\tinstruction\n", "m.tsv: a mapping file must be .csv or .jsonl, not .tsv"),
    ],
)
def test_bad_mapping_rows_are_named(tmp_path, name, text, message):
    (tmp_path / name).write_text(text)
    with pytest.raises(MappingError) as e:
        read_mapping(tmp_path / name)
    assert str(e.value).replace(str(tmp_path) + "/", "") == message


def test_output_stems_never_clash():
    files = ["a.png", "a.jpg", "b.png", "b_1.png", "c_1.png", "d/e.webp", "d/E.png", "f.JPEG"]
    assert output_stems(files) == {
        "a.png": "a.png",
        "a.jpg": "a.jpg",
        "b.png": "b.png",
        "b_1.png": "b_1.png",
        "c_1.png": "c_1",
        "d/e.webp": "d/e.webp",
        "d/E.png": "d/E.png",
        "f.JPEG": "f",
    }


def test_chunks_partition_by_sorted_path(tmp_path):
    for n in ("c.png", "a.png", "sub/b.png", "d.png", "e.png"):
        solid(tmp_path / n, 0)
    items = collect_items(tmp_path, instruction="x")
    chunks = [[i.file for i in select_chunk(items, k, 2)] for k in range(2)]
    assert chunks == [["a.png", "d.png", "sub/b.png"], ["c.png", "e.png"]]


# ---------------------------------------------------------------- odd and broken images
@pytest.fixture
def odd_folder(tmp_path):
    """Every kind of image a real folder holds, valid and broken, with the halved pixels expected for each."""
    d = tmp_path / "in"
    d.mkdir()
    expected = {}
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[:, :8] = (200, 100, 50)
    rgb[:, 8:] = (64, 32, 16)
    Image.fromarray(rgb).save(d / "rgb.png")
    expected["rgb.png"] = rgb // 2
    deep = np.full((12, 10), 0x8000, np.uint16)
    deep[:6] = 0xC800  # 16-bit: the high byte counts (0x80 = 128, 0xC8 = 200)
    Image.fromarray(deep).save(d / "deep16.png")
    assert Image.open(d / "deep16.png").mode == "I;16"
    expected["deep16.png"] = np.repeat(np.where(deep[:, :, None] == 0xC800, 100, 64), 3, axis=2)
    rgba = np.zeros((10, 10, 4), np.uint8)
    rgba[..., :3] = (100, 40, 20)
    rgba[:, :5, 3] = 255  # left opaque, right transparent: composited on white (255 -> rint(127.5) = 128)
    Image.fromarray(rgba, "RGBA").save(d / "rgba.png")
    expected["rgba.png"] = np.broadcast_to(
        np.where(np.arange(10)[None, :, None] < 5, [50, 20, 10], [128] * 3), (10, 10, 3)
    )
    (d / "sub").mkdir()
    Image.fromarray(np.full((9, 9), 100, np.uint8), "L").save(d / "sub" / "gray.png")
    expected["sub/gray.png"] = np.full((9, 9, 3), 50)
    pal = Image.new("P", (8, 8))
    pal.putpalette([200, 0, 100, 10, 20, 30] + [0] * 762)
    pal.putdata([0] * 32 + [1] * 32)
    pal.save(d / "sub" / "palette.png")
    expected["sub/palette.png"] = np.concatenate([np.full((4, 8, 3), [100, 0, 50]), np.full((4, 8, 3), [5, 10, 15])])
    stored = np.zeros((8, 16, 3), np.uint8)  # stored 16 wide x 8 high: left red, right blue
    stored[:, :8] = (200, 0, 0)
    stored[:, 8:] = (0, 0, 200)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display": upright it is 8 wide x 16 high, red on top
    Image.fromarray(stored).save(d / "photo_exif.JPG", exif=exif, quality=95)
    good = io.BytesIO()
    Image.fromarray(rgb).save(good, format="PNG")
    (d / "truncated.png").write_bytes(good.getvalue()[: len(good.getvalue()) // 2])
    good = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(good, format="JPEG")
    (d / "truncated.jpg").write_bytes(good.getvalue()[: len(good.getvalue()) * 6 // 10])
    (d / "random.png").write_bytes(np.random.default_rng(1).integers(0, 256, 300, dtype=np.uint8).tobytes())
    (d / "empty.webp").write_bytes(b"")
    Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(d / "tiny.png")
    return d, expected


def test_odd_and_broken_images(odd_folder, tmp_path, capsys):
    folder, expected = odd_folder
    wf = write_json(tmp_path / "halve.json", HALVE)
    out = tmp_path / "out"
    code, stdout, err = run_cli(capsys, folder, "--out", out, "--workflow", wf, "--batch-size", "4")
    assert code == 1, err  # some images failed
    assert stdout.startswith("11 images: 6 edited, 5 failed, 0 already done, 0 skipped;")
    m = rows(out / "manifest.parquet")
    assert sorted(m) == sorted(
        [*expected, "photo_exif.JPG", "truncated.png", "truncated.jpg", "random.png", "empty.webp", "tiny.png"]
    )
    for name, want in expected.items():
        r = m[name]
        stem = name.rsplit(".", 1)[0]
        assert (r["status"], r["error"], r["outputs"], r["workflow_file"]) == (
            "ok",
            None,
            [f"{stem}.png"],
            f"{stem}.workflow.json",
        ), name
        assert np.array_equal(png(out / f"{stem}.png"), want.astype(np.uint8)), name
        assert json.loads(r["steps"])[0]["brick"] == "BRIGHTNESS" and r["brick_seconds"] > 0
    upright = png(out / "photo_exif.png").astype(int)
    assert upright.shape == (16, 8, 3)  # processed upright, not as stored (8 x 16)
    assert np.abs(upright[2:6, 2:6] - [100, 0, 0]).max() <= 6  # red on top
    assert np.abs(upright[10:14, 2:6] - [0, 0, 100]).max() <= 6  # blue below
    failures = {f: (m[f]["status"], m[f]["error"], m[f]["outputs"]) for f in m if m[f]["status"] != "ok"}
    assert failures == {
        "truncated.png": ("failed", "unreadable image: not a readable image (OSError: image file is truncated)", []),
        "truncated.jpg": ("failed", failures["truncated.jpg"][1], []),
        "random.png": (
            "failed",
            "unreadable image: not a readable image (UnidentifiedImageError: cannot identify "
            f"image file '{folder / 'random.png'}')",
            [],
        ),
        "empty.webp": ("failed", "unreadable image: empty file (0 bytes)", []),
        "tiny.png": ("failed", "unreadable image: image is 1x1, smaller than the 8-pixel minimum side", []),
    }
    assert failures["truncated.jpg"][1].startswith(
        "unreadable image: not a readable image (OSError: image file is truncated ("
    )
    doc = json.loads((out / "sub" / "gray.workflow.json").read_text())
    assert (doc["instruction"], doc["workflow"], doc["outputs"]) == ("brightness", HALVE, ["sub/gray.png"])
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == sorted(
        f"{n.rsplit('.', 1)[0]}.png" for n in [*expected, "photo_exif.JPG"]
    )


# ---------------------------------------------------------------- the Builder, batched
class FakeBuilder:
    """A generation backend answering each instruction with a canned text; records its batch sizes."""

    def __init__(self, answers: dict[str, str]):
        self.answers, self.calls = answers, []

    def generate(self, requests):
        self.calls.append(len(requests))
        return [self.answers[r.user.removeprefix("Instruction: ")] for r in requests]


def fake_run(tmp_path, stage="sft") -> Path:
    run = tmp_path / "results"
    (run / "builder" / stage).mkdir(parents=True)
    write_json(run / "builder" / stage / "train_config.json", {"prompt_style": "instruction"})
    return run


def test_builder_batches_and_per_item_failures(tmp_path):
    folder = tmp_path / "in"
    for i, name in enumerate(("a.png", "b.png", "c.png", "d.png", "e.png", "f.png")):
        solid(folder / name, 40 * (i + 1))
    mapping = tmp_path / "m.jsonl"
    mapping.write_text(
        "".join(
            json.dumps({"file": f, "instruction": t}) + "\n"
            for f, t in [
                ("a.png", "darken"),
                ("b.png", "both"),
                ("c.png", "chatter"),
                ("d.png", "magic"),
                ("e.png", "explode"),
                ("f.png", "offline"),
            ]
        )
    )
    answers = {
        "darken": "<think>halve it</think>" + json.dumps(HALVE),
        "both": json.dumps(brightness_wf(0.25, 0.75)),
        "chatter": "I would rather not.",
        "magic": json.dumps(
            {
                "pipeline": [
                    {
                        "step": 1,
                        "model": "MAGIC",
                        "input": {"image": "init[image]"},
                        "output": {"image": "step1[image]"},
                    },
                    {"result": "[step1[image]]"},
                ]
            }
        ),
        "offline": BackendError("connection refused", 1),
        "explode": json.dumps(
            {
                "pipeline": [
                    {
                        "step": 1,
                        "model": "RESIZE",
                        "input": {"image": "init[image]", "ratio": 0.5},
                        "output": {"image": "step1[image]"},
                    },
                    {"result": "[step1[image]]"},
                ]
            }
        ),
    }
    registry = default_registry(plugins=False)

    def boom(ctx, **inputs):
        raise RuntimeError("boom")

    registry.bind("RESIZE", boom)
    backend = FakeBuilder(answers)
    out = tmp_path / "out"
    cfg = EditConfig(
        str(folder),
        str(out),
        mapping=str(mapping),
        run=str(fake_run(tmp_path)),
        builder="sft",
        batch_size=2,
        progress=False,
    )
    summary = edit_folder(cfg, registry=registry, backend=backend)
    assert backend.calls == [2, 2, 2]
    assert (summary.items, summary.edited, summary.failed) == (6, 2, 4)
    m = rows(out / "manifest.parquet")
    assert {f: (r["status"], r["error"], r["outputs"]) for f, r in m.items()} == {
        "a.png": ("ok", None, ["a.png"]),
        "b.png": ("ok", None, ["b_1.png", "b_2.png"]),
        "c.png": ("failed", "builder: parse: workflow: no JSON object found in the answer", []),
        "d.png": ("failed", "builder: invalid: step 1, model: unknown brick 'MAGIC'", []),
        "e.png": ("failed", "brick failed: step 1 (RESIZE): RuntimeError: boom", []),
        "f.png": ("failed", "builder: builder request failed: request 1: connection refused", []),
    }
    assert {r["builder"] for r in m.values()} == {"sft"}
    assert all(r["builder_seconds"] > 0 for r in m.values())
    assert np.array_equal(png(out / "a.png"), np.full((16, 16, 3), 20, np.uint8))
    assert np.array_equal(png(out / "b_1.png"), np.full((16, 16, 3), 40, np.uint8))
    assert np.array_equal(png(out / "b_2.png"), np.full((16, 16, 3), 120, np.uint8))
    doc = json.loads((out / "a.workflow.json").read_text())
    assert (doc["instruction"], doc["reasoning"], doc["workflow"], doc["answer"]) == (
        "darken",
        "halve it",
        HALVE,
        answers["darken"],
    )
    doc = json.loads((out / "c.workflow.json").read_text())
    assert (doc["workflow"], doc["answer"], doc["status"]) == (None, "I would rather not.", "failed")


def test_endpoint_builder_identity_and_backend():
    label, style = builder_identity(None, "grpo_critic", "http://127.0.0.1:9/v1", "served", None)
    assert (label, style) == ("openai:served@http://127.0.0.1:9/v1", "registry")
    backend = load_builder(None, "grpo_critic", "http://127.0.0.1:9/v1", "served", max_new_tokens=77, concurrency=3)
    assert (type(backend).__name__, backend.model, backend.concurrency, backend.params["max_tokens"]) == (
        "OpenAIChatBackend",
        "served",
        3,
        77,
    )


def test_local_builder_loads_once_from_the_run(tmp_path, monkeypatch):
    import lego_edit.builder.backends as backends

    made = []

    class Recorder(FakeBuilder):
        def __init__(self, model, **kwargs):
            made.append((model, kwargs))
            super().__init__({"darken": json.dumps(HALVE)})

    monkeypatch.setattr(backends, "LocalVLMBackend", Recorder)
    stub = types.ModuleType("lego_edit.training.vlm_sft")  # resolve_base without importing torch
    stub.resolve_base = lambda p: f"resolved:{Path(p).name}"
    monkeypatch.setitem(sys.modules, "lego_edit.training.vlm_sft", stub)
    run = fake_run(tmp_path, "grpo_critic")
    (run / "builder" / "base").mkdir()
    write_json(run / "builder" / "grpo_critic" / "adapter_base.json", {"base": "/elsewhere/results/builder/base"})
    for i in range(3):
        solid(tmp_path / "in" / f"{i}.png", 10)
    cfg = EditConfig(
        str(tmp_path / "in"),
        str(tmp_path / "out"),
        instruction="darken",
        run=str(run),
        batch_size=2,
        progress=False,
        max_new_tokens=99,
    )
    summary = edit_folder(cfg)
    assert (summary.edited, summary.failed) == (3, 0)
    assert made == [
        (
            "resolved:base",
            {
                "adapter": run / "builder" / "grpo_critic",
                "device": None,
                "max_new_tokens": 99,
                "batch_size": 2,
                "seed": 0,
            },
        )
    ]


# ---------------------------------------------------------------- resume
def test_rerun_skips_done_retries_failed_only_when_asked(tmp_path, capsys):
    folder = tmp_path / "in"
    for n in ("a.png", "b.png", "sub/c.png"):
        solid(folder / n, 100)
    (folder / "bad.png").write_bytes(b"not an image")
    wf = write_json(tmp_path / "w.json", HALVE)
    out = folder / "edited"  # inside the input folder: never edited itself
    args = (folder, "--out", out, "--workflow", wf)
    assert run_cli(capsys, *args)[0] == 1
    first = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}
    assert len(first) == 3
    code, stdout, _ = run_cli(capsys, *args)
    assert code == 1
    assert stdout.startswith(
        "4 images: 0 edited, 0 failed, 3 already done, 0 skipped, 1 failed earlier (not "
        "retried; --retry-failed retries them);"
    )
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.png")} == first
    (folder / "bad.png").write_bytes((folder / "a.png").read_bytes())  # fixed by the user
    (out / "b.png").unlink()  # a lost output is redone
    code, stdout, _ = run_cli(capsys, *args, "--retry-failed")
    assert code == 0
    assert stdout.startswith("4 images: 2 edited, 0 failed, 2 already done, 0 skipped;")
    m = rows(out / "manifest.parquet")
    assert [(f, r["status"]) for f, r in sorted(m.items())] == [
        ("a.png", "ok"),
        ("b.png", "ok"),
        ("bad.png", "ok"),
        ("sub/c.png", "ok"),
    ]
    code, stdout, _ = run_cli(capsys, folder, "--out", out, "--workflow", write_json(wf, brightness_wf(0.25, 0.5)))
    assert stdout.startswith("4 images: 4 edited, 0 failed, 0 already done, 0 skipped;")  # another workflow
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == [
        "a_1.png",
        "a_2.png",
        "b_1.png",
        "b_2.png",
        "bad_1.png",
        "bad_2.png",
        "sub/c_1.png",
        "sub/c_2.png",
    ]


SLOW_DRIVER = textwrap.dedent("""
    import sys, time
    from lego_edit.bricks.functions import brightness
    from lego_edit.bricks.registry import default_registry
    from lego_edit.editing import EditConfig, edit_folder

    registry = default_registry(plugins=False)
    registry.bind("BRIGHTNESS", lambda ctx, **kw: (time.sleep(0.15), brightness(ctx, **kw))[1])
    edit_folder(EditConfig(sys.argv[1], sys.argv[2], workflow=sys.argv[3], batch_size=2, progress=False),
                registry=registry)
""")


def test_an_item_past_its_time_bound_fails_alone(tmp_path):
    import time

    from lego_edit.bricks.functions import brightness
    from lego_edit.bricks.registry import default_registry

    folder = tmp_path / "in"
    for i in range(3):
        solid(folder / f"{i}.png", 40 * (i + 1))
    registry = default_registry(plugins=False)
    # the second image's edit hangs (a brick stuck on one input); the others take no time
    registry.bind(
        "BRIGHTNESS",
        lambda ctx, image, **kw: (time.sleep(5 if image[0, 0, 0] == 80 else 0), brightness(ctx, image=image, **kw))[1],
    )
    out = tmp_path / "out"
    start = time.perf_counter()
    s = edit_folder(
        EditConfig(
            str(folder),
            str(out),
            workflow=str(write_json(tmp_path / "w.json", HALVE)),
            item_seconds=0.5,
            progress=False,
        ),
        registry=registry,
    )
    assert time.perf_counter() - start < 4
    table = pq.read_table(s.manifest).to_pylist()
    assert [(r["file"], r["status"]) for r in table] == [("0.png", "ok"), ("1.png", "failed"), ("2.png", "ok")]
    assert table[1]["error"].startswith("timed out: the workflow ran past 0.5 s")


def test_sigkill_midway_then_rerun_finishes_the_rest(tmp_path, capsys):
    folder, out = tmp_path / "in", tmp_path / "out"
    for i in range(12):
        solid(folder / f"img{i:02d}.png", 2 * i)
    wf = write_json(tmp_path / "w.json", HALVE)
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_DRIVER, str(folder), str(out), str(wf)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if (out / "manifest.parquet").is_file() and len(rows(out / "manifest.parquet")) >= 4:
                break
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        assert proc.wait(10) == -signal.SIGKILL, proc.stderr.read().decode()
    done = rows(out / "manifest.parquet")  # the last manifest the killed process wrote
    assert 4 <= len(done) <= 11 and {r["status"] for r in done.values()} == {"ok"}
    # each image goes on record as soon as it is written: at most the one in flight is on disk unrecorded
    assert len(list(out.glob("*.png"))) - len(done) <= 1
    mtimes = {f: (out / f).stat().st_mtime_ns for f in done}
    code, stdout, _ = run_cli(capsys, folder, "--out", out, "--workflow", wf)
    assert code == 0
    assert stdout.startswith(f"12 images: {12 - len(done)} edited, 0 failed, {len(done)} already done, 0 skipped;")
    assert {f: (out / f).stat().st_mtime_ns for f in done} == mtimes  # finished items were not redone
    m = rows(out / "manifest.parquet")
    assert sorted(m) == [f"img{i:02d}.png" for i in range(12)] and {r["status"] for r in m.values()} == {"ok"}
    for i in range(12):
        assert np.array_equal(png(out / f"img{i:02d}.png"), np.full((16, 16, 3), i, np.uint8))


# ---------------------------------------------------------------- mapping, masks, chunks
def test_mapping_with_masks_and_unnamed_images_skipped(tmp_path, capsys):
    folder = tmp_path / "in"
    solid(folder / "a.png", 100)
    solid(folder / "b.png", 60)
    solid(folder / "c.png", 30)
    mask = np.zeros((16, 16), np.uint8)
    mask[4:8, 2:6] = 255
    Image.fromarray(mask).save(tmp_path / "in" / ".masks.png")  # hidden: not itself an image to edit
    (tmp_path / "m.csv").write_text("file,mask\na.png,.masks.png\nb.png,missing.png\nsub/gone.png,\n")
    bbox_then_brighten = {
        "pipeline": [
            {"step": 1, "model": "BBOX", "input": {"mask": "init[mask]"}, "output": {"mask": "step1[mask]"}},
            {
                "step": 2,
                "model": "FASTINPAINT",
                "input": {"image": "init[image]", "mask": "step1[mask]"},
                "output": {"image": "step2[image]", "score": "step2[score]"},
            },
            {"step": 3, "model": "INVERSE", "input": {"mask2": "step1[mask]"}, "output": {"mask": "step3[mask]"}},
            {
                "step": 4,
                "model": "BRIGHTNESS",
                "input": {"image": "step2[image]", "ratio": 0.25},
                "output": {"image": "step4[image]"},
            },
            {"result": "[step4[image]]"},
        ]
    }
    wf = write_json(tmp_path / "w.json", bbox_then_brighten)
    code, stdout, _ = run_cli(
        capsys, folder, "--out", tmp_path / "out", "--workflow", wf, "--mapping", tmp_path / "m.csv"
    )
    assert code == 1
    m = rows(tmp_path / "out" / "manifest.parquet")
    assert {f: (r["status"], r["instruction"], r["mask"], r["error"]) for f, r in m.items()} == {
        "a.png": ("ok", None, ".masks.png", None),
        "b.png": ("failed", None, "missing.png", "unreadable mask: no such file"),
        "c.png": ("skipped", None, None, "not named in the mapping file m.csv"),
        "sub/gone.png": ("failed", None, None, "unreadable image: no such file"),
    }
    assert [s["brick"] for s in json.loads(m["a.png"]["steps"])] == ["BBOX", "FASTINPAINT", "BRIGHTNESS"]  # not 3
    edited = png(tmp_path / "out" / "a.png")
    hole = np.zeros((16, 16), bool)
    hole[3:9, 1:7] = True  # the mask's box, dilated once by FASTINPAINT: only there may it change pixels
    assert np.array_equal(edited[~hole], np.full((int((~hole).sum()), 3), 50, np.uint8))


def test_chunks_then_merge_equal_one_run(tmp_path):
    folder = tmp_path / "in"
    for i in range(7):
        solid(folder / f"d{i % 2}" / f"{i}.png", 10 * i)
    wf = write_json(tmp_path / "w.json", HALVE)
    out = tmp_path / "out"
    paths = []
    for k in range(3):
        s = edit_folder(EditConfig(str(folder), str(out), workflow=str(wf), chunk=k, chunks=3, progress=False))
        assert s.manifest == str(out / f"manifest.chunk-{k}-of-3.parquet")
        paths.append(s.manifest)
    assert [sorted(rows(Path(p))) for p in paths] == [
        ["d0/0.png", "d0/6.png", "d1/5.png"],
        ["d0/2.png", "d1/1.png"],
        ["d0/4.png", "d1/3.png"],
    ]
    counts = merge_manifests(paths, out / "manifest.parquet")
    assert counts == {"ok": 7, "failed": 0, "skipped": 0}
    merged = pq.read_table(out / "manifest.parquet")
    assert merged.column("file").to_pylist() == sorted(f"d{i % 2}/{i}.png" for i in range(7))
    assert merged.column("outputs").to_pylist() == [[f] for f in merged.column("file").to_pylist()]


def test_manifest_journal_bounds_rewrites_and_survives_a_cut_line(tmp_path):
    path = tmp_path / "manifest.parquet"
    m = Manifest(path, compact_ratio=0.5, min_journal=3)
    row = lambda f, status="ok": empty_record(f) | {"status": status, "outputs": [f]}  # noqa: E731
    m.set(row("a"))
    m.flush()  # no snapshot yet: write one
    assert (path.is_file(), m.journal.exists()) == (True, False)
    for f in ("b", "c"):
        m.set(row(f))
        m.flush()  # 1, then 2 journal rows: below min_journal, appended
    assert [json.loads(x)["file"] for x in m.journal.read_text().splitlines()] == ["b", "c"]
    assert pq.read_table(path).column("file").to_pylist() == ["a"]
    with open(m.journal, "a") as f:
        f.write('{"file": "d", "status": "ok", "outp')  # a kill in the middle of a write
    assert sorted((r["file"], r["outputs"]) for r in read_manifest(path)) == [("a", ["a"]), ("b", ["b"]), ("c", ["c"])]
    m = Manifest(path, compact_ratio=0.5, min_journal=100)  # resumed: appends after the cut line, not onto it
    m.set(row("e"))
    m.flush()
    assert sorted(r["file"] for r in read_manifest(path)) == ["a", "b", "c", "e"]
    m = Manifest(path, compact_ratio=0.5, min_journal=4)  # resumed: the journal's 3 whole rows count
    m.set(row("d", "failed"))
    m.flush()  # 4 journal rows >= max(4, 0.5 * 5): a new snapshot, no journal
    assert (m.journal.exists(), pq.read_table(path).column("file").to_pylist()) == (False, ["a", "b", "c", "d", "e"])
    m.remove("a")
    m.flush()  # a journal only adds rows: removing one takes a snapshot
    assert [(r["file"], r["status"]) for r in read_manifest(path)] == [
        ("b", "ok"),
        ("c", "ok"),
        ("d", "failed"),
        ("e", "ok"),
    ]


# ---------------------------------------------------------------- usage errors
@pytest.mark.parametrize(
    "extra,message",
    [
        ([], "error: give --instruction, --mapping or --workflow"),
        (
            ["--instruction", "x"],
            "error: a Builder is needed to write the workflows: --run <results folder> (with "
            "--builder grpo_critic|grpo_gt|sft|base) or --builder-url/--builder-model; or give a "
            "fixed --workflow",
        ),
        (
            ["--instruction", "x", "--run", "{tmp}/results"],
            "error: {tmp}/results/builder/grpo_critic: no Builder stage "
            "'grpo_critic' in this run (train it first, or choose another with --builder grpo_critic|grpo_gt|sft|base)",
        ),
        (
            ["--workflow", "{tmp}/fill.json"],
            "error: {tmp}/fill.json: the workflow uses FILL, which need trained models: "
            "pass --run <results folder> to bind the models",
        ),
        (
            ["--workflow", "{tmp}/bad.json"],
            "error: {tmp}/bad.json: invalid workflow:\n  step 1, model: unknown brick 'NOPE'",
        ),
        (["--mapping", "{tmp}/m.csv", "--workflow", "{tmp}/halve.json"], "error: m.csv line 3: empty 'file'"),
    ],
)
def test_usage_errors_exit_2_before_any_image(tmp_path, capsys, extra, message):
    solid(tmp_path / "in" / "a.png", 0)
    write_json(
        tmp_path / "fill.json",
        {
            "pipeline": [
                {
                    "step": 1,
                    "model": "FLUX-FILL",
                    "input": {"image": "init[image]", "mask": "init[mask]", "prompt": "a cat"},
                    "output": {"image": "step1[image]"},
                },
                {"result": "[step1[image]]"},
            ]
        },
    )
    write_json(
        tmp_path / "bad.json",
        {"pipeline": [{"step": 1, "model": "NOPE", "input": {}, "output": {}}, {"result": "[init[image]]"}]},
    )
    write_json(tmp_path / "halve.json", HALVE)
    (tmp_path / "m.csv").write_text("file,instruction\na.png,x\n,y\n")
    code, stdout, err = run_cli(
        capsys, tmp_path / "in", "--out", tmp_path / "out", *[a.format(tmp=tmp_path) for a in extra]
    )
    assert (code, stdout) == (2, "")
    assert err.strip() == message.format(tmp=tmp_path)
    assert not (tmp_path / "out" / "a.png").exists()


def test_edit_config_rejects_the_input_folder_as_output(tmp_path):
    solid(tmp_path / "a.png", 0)
    with pytest.raises(EditError, match="must not be the input folder"):
        edit_folder(EditConfig(str(tmp_path), str(tmp_path), workflow=str(write_json(tmp_path / "w.json", HALVE))))


def test_model_inputs_of_a_fixed_workflow_or_a_builder(tmp_path):
    wf = write_json(
        tmp_path / "w.json",
        {
            "pipeline": [
                {
                    "step": 1,
                    "model": "RES",
                    "input": {"image": "init[image]", "prompt": "dog"},
                    "output": {"mask": "step1[mask]"},
                },
                {
                    "step": 2,
                    "model": "FLUX-INPAINT",
                    "input": {"image": "init[image]", "mask": "step1[mask]", "preimage": "init[image]", "score": 0.5},
                    "output": {"image": "step2[image]"},
                },
                {"result": "[step2[image]]"},
            ]
        },
    )
    assert model_inputs(wf) == [
        "results/bricks/segmentation",
        "results/bricks/edit_base",
        "results/bricks/edit_lora/INPAINT",
    ]
    assert model_inputs(wf, "r", edit_bricks=("FILL",)) == ["r/bricks/segmentation", "r/bricks/edit_base"]
    assert model_inputs(write_json(tmp_path / "h.json", HALVE)) == []
    assert model_inputs(None, "results", ("FILL", "RCM")) == [
        "results/bricks/segmentation",
        "results/builder/base",
        "results/bricks/placement",
        "results/bricks/captioning",
        "results/bricks/edit_base",
        "results/bricks/edit_lora/FILL",
        "results/bricks/edit_lora/RCM",
    ]


# ---------------------------------------------------------------- the Snakemake rules
def test_snakemake_rules_edit_in_chunks_and_gather(tmp_path):
    pytest.importorskip("snakemake")
    folder = tmp_path / "imgs"
    for i in range(5):
        solid(folder / f"{i}.png", 20 * i)
    (folder / "broken.png").write_bytes(b"")
    write_json(tmp_path / "w.json", HALVE)
    # The real Snakefile with the small test config and an edit section; only the edit targets are asked for,
    # and a fixed workflow of function bricks needs no trained model.
    (tmp_path / "edit.yaml").write_text(
        textwrap.dedent("""
        edit: {folder: imgs, instruction: null, mapping: null, workflow: w.json, builder: grpo_critic, chunks: 2}
        """)
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "-c1",
            "-q",
            "--snakefile",
            str(REPO / "Snakefile"),
            "--configfile",
            str(REPO / ".test/config/config.yaml"),
            str(tmp_path / "edit.yaml"),
            "--directory",
            str(tmp_path),
            "results/edit/manifest.parquet",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = rows(tmp_path / "results" / "edit" / "manifest.parquet")
    assert {f: r["status"] for f, r in m.items()} == {**{f"{i}.png": "ok" for i in range(5)}, "broken.png": "failed"}
    assert [sorted(rows(tmp_path / "results" / "edit" / "chunks" / f"{k}-of-2.parquet")) for k in (1, 2)] == [
        ["0.png", "2.png", "4.png"],
        ["1.png", "3.png", "broken.png"],
    ]
    assert np.array_equal(png(tmp_path / "results" / "edit" / "3.png"), np.full((16, 16, 3), 30, np.uint8))
