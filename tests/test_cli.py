"""The lego-edit command line: validate, run-workflow, bricks, prompt; through the installed console script
(a subprocess) and through lego_edit.cli.main in process."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lego_edit.bricks.functions import fastinpaint
from lego_edit.cli import main
from lego_edit.workflow import BrickContext

# the console script of the interpreter running the tests (its venv), else the one on PATH
LEGO_EDIT = (
    str(Path(sys.executable).with_name("lego-edit"))
    if Path(sys.executable).with_name("lego-edit").exists()
    else shutil.which("lego-edit")
)


def cli(*args, stdin=None):
    return subprocess.run([LEGO_EDIT, *map(str, args)], capture_output=True, text=True, input=stdin, timeout=120)


def run_main(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def write_workflow(path: Path, obj) -> Path:
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj), encoding="utf-8")
    return path


RES_WORKFLOW = {
    "pipeline": [
        {
            "step": 1,
            "model": "RES",
            "input": {"image": "init[image]", "prompt": "dog"},
            "output": {"mask": "step1[mask]"},
        },
        {
            "step": 2,
            "model": "FASTINPAINT",
            "input": {"image": "init[image]", "mask": "step1[mask]"},
            "output": {"image": "step2[image]"},
        },
        {"result": "[step2[image]]"},
    ]
}


# --------------------------------------------------------------------------------------------------- validate


def test_validate_valid_workflow_exits_0(published_dir):
    done = cli("validate", published_dir / "example2.json")
    assert (done.returncode, done.stdout, done.stderr) == (0, "valid\n", "")


def test_validate_invalid_workflow_exits_1_with_every_error(published_dir):
    done = cli("validate", published_dir / "example1_fixed.json")
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    assert lines[0] == "error: step 2, output.mask: FILL has no output 'mask' (outputs: image)"
    assert lines[2] == (
        "error: step 3, input.ratio: CMI-PRED has no input 'ratio' (inputs: image, left_ratio, "
        "right_ratio, top_ratio, bottom_ratio)"
    )
    assert [line.split(":")[0] for line in lines] == ["error"] * 6 + ["warning"] * 2
    assert "valid" not in lines


def test_validate_json_output(capsys, published_dir):
    code, out, _ = run_main(capsys, "validate", "--json", published_dir / "example1_fixed.json")
    verdict = json.loads(out)
    assert code == 1 and verdict["valid"] is False
    assert [(e["step"], e["field"], e["code"]) for e in verdict["errors"]] == [
        (2, "output.mask", "unknown_output"),
        (3, "input.image", "unknown_output"),
        (3, "input.ratio", "unknown_input"),
        (4, "input.image", "unknown_output"),
        (4, "input.mask", "unknown_output"),
        (4, "input.preimage", "unknown_output"),
    ]
    assert [(w["step"], w["field"], w["code"]) for w in verdict["warnings"]] == [
        (3, "output.image", "not_produced"),
        (3, "output.mask", "not_produced"),
    ]
    code, out, _ = run_main(capsys, "validate", "--json", published_dir / "example1.json")
    assert code == 1
    assert json.loads(out) == {
        "valid": False,
        "warnings": [],
        "errors": [
            {
                "step": None,
                "field": None,
                "code": "syntax",
                "message": "invalid JSON: Expecting ',' delimiter (line 25, column 7 of the JSON object)",
            }
        ],
    }
    code, out, _ = run_main(capsys, "validate", "--json", published_dir / "example4.json")
    assert (code, json.loads(out)) == (0, {"valid": True, "errors": [], "warnings": []})


def test_validate_mask_flag_stdin_and_warnings(capsys, tmp_path):
    wf = {
        "pipeline": [
            {"step": 1, "model": "BBOX", "input": {"mask": "init[mask]"}, "output": {"mask": "step1[mask]"}},
            {"step": 2, "model": "SOS", "input": {"image": "init[image]"}, "output": {"mask": "step2[mask]"}},
            {
                "step": 3,
                "model": "FASTINPAINT",
                "input": {"image": "init[image]", "mask": "step1[mask]"},
                "output": {"image": "step3[image]"},
            },
            {"result": "[step3[image]]"},
        ]
    }
    path = write_workflow(tmp_path / "wf.json", wf)
    code, out, _ = run_main(capsys, "validate", "--mask", path)
    assert (code, out) == (0, "warning: step 2: step 2 (SOS) does not contribute to the result and is skipped\nvalid\n")
    done = cli("validate", "-", stdin="<think>from stdin</think>" + json.dumps(wf))
    assert done.returncode == 0 and done.stdout.endswith("valid\n")
    done = cli("validate", "-", stdin="{'single': 'quotes'}")
    assert done.returncode == 1
    assert done.stdout == (
        "error: workflow: single quotes are not accepted (line 1, column 2); JSON strings use double quotes\n"
    )


def test_validate_survives_a_lone_surrogate(tmp_path):
    path = write_workflow(
        tmp_path / "wf.json",
        '{"pipeline": [{"step": 1, "model": "BBOX", "input": '
        '{"\\ud800": "init[mask]"}, "output": {}}, {"result": "init[image]"}]}',
    )
    done = cli("validate", path)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stdout.splitlines()[0] == r"error: step 1, input.\ud800: BBOX has no input '\ud800' (inputs: mask)"


def test_validate_missing_folder_or_unreadable_file_is_one_line(capsys, tmp_path):
    from lego_edit.cli import main

    unreadable = tmp_path / "locked.json"
    unreadable.write_text("{}")
    unreadable.chmod(0)
    cases = [(tmp_path / "missing.json", "no such workflow file"), (tmp_path, "is a folder, not a workflow file")]
    try:
        open(unreadable).close()  # root reads anything: the permission case applies to other users only
    except PermissionError:
        cases.append((unreadable, "cannot read the workflow file"))
    for path, message in cases:
        assert main(["validate", str(path)]) == 2
        err = capsys.readouterr().err.strip()
        assert err == f"lego-edit validate: error: {path}: {message}" and "Traceback" not in err
    assert main(["run-workflow", str(tmp_path / "missing.json"), "--image", "x.png", "--out", str(tmp_path)]) == 2
    assert "no such workflow file" in capsys.readouterr().err


def test_version_and_usage(capsys):
    done = cli("--version")
    assert (done.returncode, done.stdout) == (0, "lego-edit 0.1.0\n")
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2
    assert "the following arguments are required: command" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------- bricks


def test_bricks_lists_every_brick_and_alias(registry):
    done = cli("bricks")
    assert done.returncode == 0 and done.stderr == ""
    rows = done.stdout.splitlines()
    assert rows[0].split() == ["NAME", "KIND", "INPUTS", "OUTPUTS", "STATUS", "ALIASES"]
    assert [r.split()[0] for r in rows[1:]] == registry.names()
    by_name = {r.split()[0]: r for r in rows[1:]}
    for spec in registry:
        row = by_name[spec.name]
        for alias in spec.aliases:
            assert row.endswith(alias)
        assert ("  ready" in row) == (spec.backend == "function") and ("  no model" in row) == (spec.backend == "model")
    assert by_name["FILL"].split() == [
        "FILL",
        "edit",
        "image:Image,",
        "mask:Mask,",
        "prompt:Str,",
        "preimage:Image",
        "image:Image",
        "no",
        "model",
        "FLUX-FILL",
    ]
    aliases = {a for r in rows[1:] for a in r.split() if a.startswith("FLUX-")}
    assert aliases == {
        "FLUX-FILL",
        "FLUX-RCM",
        "FLUX-INPAINT",
        "FLUX-CBG",
        "FLUX-STYLE",
        "FLUX-ENV",
        "FLUX-POSE",
        "FLUX-BRIGHT",
    }


def test_bricks_json(capsys, registry):
    code, out, _ = run_main(capsys, "bricks", "--json")
    listing = json.loads(out)
    assert code == 0 and [b["name"] for b in listing] == registry.names()
    assert listing[1] == {
        "name": "RES",
        "aliases": [],
        "category": "predict",
        "backend": "model",
        "inputs": {"image": "Image", "prompt": "Str"},
        "outputs": {"mask": "Mask", "image": "Image"},
        "available": False,
        "source": "lego_edit (built-in)",
    }
    assert {b["name"] for b in listing if b["available"]} == {
        "INVERSE",
        "BBOX",
        "FASTINPAINT",
        "COMPOSE",
        "RESIZE",
        "BRIGHTNESS",
    }


# ----------------------------------------------------------------------------------------------------- prompt


def test_prompt_contains_every_brick_and_the_instruction(capsys, registry):
    code, out, _ = run_main(capsys, "prompt", "remove the dog")
    assert code == 0
    for spec in registry:
        assert f".{spec.name} ({spec.description})\n" in out, spec.name
    assert out.endswith('Now the image and the instruction: "remove the dog". Write the workflow JSON.\n')
    code, out, _ = run_main(capsys, "prompt")
    assert code == 0 and "Now the image and the instruction" not in out and "**Example 4:**" in out
    code, out, _ = run_main(capsys, "prompt", "make it red", "--mask")
    assert out.endswith('"The user provided a mask and wants to: make it red". Write the workflow JSON.\n')


def test_prompt_published_naming():
    done = cli("prompt", "--naming", "published", "add a cat")
    assert done.returncode == 0
    assert "\n2.FLUX-FILL (Generate what the prompt describes inside the mask; not for recolouring)\n" in done.stdout
    assert '"model": "FLUX-INPAINT"' in done.stdout and '"model": "INPAINT"' not in done.stdout
    canonical = cli("prompt").stdout
    assert "\n2.FILL (" in canonical and "FLUX-FILL" not in canonical


# ----------------------------------------------------------------------------------------------- run-workflow


@pytest.fixture
def inputs(tmp_path, function_case):
    Image.fromarray(function_case.image).save(tmp_path / "image.png")
    Image.fromarray(function_case.mask).save(tmp_path / "mask.png")
    return tmp_path / "image.png", tmp_path / "mask.png"


def check_function_outputs(out: Path, case) -> None:
    images = [np.asarray(Image.open(out / f"result_{i}.png")) for i in range(4)]
    inpainted, region = images[0], case.inpaint_region
    assert inpainted.shape == (16, 16, 3) and inpainted.dtype == np.uint8
    np.testing.assert_array_equal(inpainted[region == 0], case.image[region == 0])  # FASTINPAINT's hole only
    assert (inpainted != case.image).any()
    # FASTINPAINT run directly on the hand-computed step-4 mask gives the same pixels: the mask chain
    # BBOX -> RESIZE -> INVERSE -> COMPOSE inside the workflow was exact
    direct = fastinpaint(BrickContext(), image=case.image, mask=case.masks["step4[mask]"])["image"]
    np.testing.assert_array_equal(inpainted, direct)
    np.testing.assert_array_equal(images[1], case.images["step6[image]"])
    np.testing.assert_array_equal(images[2], case.images["step7[image]"])
    np.testing.assert_array_equal(images[3], case.images["step8[image]"])
    record = json.loads((out / "run.json").read_text(encoding="utf-8"))
    assert record["results"] == [str(out / f"result_{i}.png") for i in range(4)]
    assert [(s["step"], s["brick"]) for s in record["steps"]] == [
        (1, "BBOX"),
        (2, "RESIZE"),
        (3, "INVERSE"),
        (4, "COMPOSE"),
        (5, "FASTINPAINT"),
        (6, "RESIZE"),
        (7, "INVERSE"),
        (8, "COMPOSE"),
    ]
    assert record["warnings"] == [] and record["reasoning"].startswith("A hand-written workflow")
    assert record["workflow"]["process"] == "function bricks end to end"
    assert sorted(p.name for p in out.iterdir()) == [
        "result_0.png",
        "result_1.png",
        "result_2.png",
        "result_3.png",
        "run.json",
    ]


def test_run_workflow_console_script(inputs, tmp_path, function_case):
    image, mask = inputs
    out = tmp_path / "out"
    done = cli("run-workflow", function_case.workflow, "--image", image, "--mask", mask, "--out", out)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [str(out / f"result_{i}.png") for i in range(4)]
    check_function_outputs(out, function_case)


def test_run_workflow_in_process_matches(capsys, inputs, tmp_path, function_case):
    image, mask = inputs
    code, out_text, err = run_main(
        capsys,
        "run-workflow",
        function_case.workflow,
        "--image",
        image,
        "--mask",
        mask,
        "--out",
        tmp_path / "a",
        "--seed",
        3,
    )
    assert (code, err) == (0, "")
    check_function_outputs(tmp_path / "a", function_case)
    done = cli("run-workflow", function_case.workflow, "--image", image, "--mask", mask, "--out", tmp_path / "b")
    assert done.returncode == 0
    for i in range(4):  # deterministic: the subprocess gives the same pixels, FASTINPAINT's included
        np.testing.assert_array_equal(
            np.asarray(Image.open(tmp_path / "a" / f"result_{i}.png")),
            np.asarray(Image.open(tmp_path / "b" / f"result_{i}.png")),
        )


def test_run_workflow_with_a_model_brick_fails_clearly(capsys, inputs, tmp_path):
    image, _ = inputs
    path = write_workflow(tmp_path / "wf.json", RES_WORKFLOW)
    code, out, err = run_main(capsys, "run-workflow", path, "--image", image, "--out", tmp_path / "out")
    assert (code, out, err) == (1, "", "error: step 1 (RES): no model configured for RES\n")
    assert not (tmp_path / "out").exists()
    done = cli("run-workflow", path, "--image", image, "--out", tmp_path / "out")
    assert (done.returncode, done.stderr) == (1, "error: step 1 (RES): no model configured for RES\n")


def test_run_workflow_errors(capsys, inputs, tmp_path, function_case):
    image, mask = inputs
    code, _, err = run_main(capsys, "run-workflow", function_case.workflow, "--image", image, "--out", tmp_path / "o")
    assert code == 1  # the workflow reads init[mask] but no --mask was given
    assert err == (
        "error: step 1, input.mask: init[mask] is used but no mask was given with the image\n"
        "error: step 4, input.mask2: init[mask] is used but no mask was given with the image\n"
    )
    bad = write_workflow(tmp_path / "bad.json", {"pipeline": [{"result": "[step1[image]]"}]})
    code, _, err = run_main(capsys, "run-workflow", bad, "--image", image, "--out", tmp_path / "o")
    assert (code, err) == (1, "error: result: step1[image] refers to step 1, which does not exist\n")
    (tmp_path / "empty.png").write_bytes(b"")
    code, _, err = run_main(
        capsys, "run-workflow", function_case.workflow, "--image", tmp_path / "empty.png", "--out", tmp_path / "o"
    )
    assert (code, err) == (1, f"error: {tmp_path / 'empty.png'}: empty file (0 bytes)\n")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "small_mask.png")
    code, _, err = run_main(
        capsys,
        "run-workflow",
        function_case.workflow,
        "--image",
        image,
        "--mask",
        tmp_path / "small_mask.png",
        "--out",
        tmp_path / "o",
    )
    assert code == 0 and err == ""  # a mask of another size is resized to the image
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == [  # and the earlier failures wrote nothing
        "result_0.png",
        "result_1.png",
        "result_2.png",
        "result_3.png",
        "run.json",
    ]
