"""The brick registry: built-in specs, aliases, registration rules, and third-party bricks from entry points.

The plugin tests install tests/fixtures/plugin_pkg (an INVERT-COLORS brick, plus one entry point that fails
on import) into a temporary ``--target`` folder, never into the shared virtual environment, and make it
visible only through ``sys.path`` (in this process, undone afterwards) or ``PYTHONPATH`` (in a subprocess).
Its bricks are found through importlib.metadata entry points, with no change to lego_edit.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lego_edit.bricks import ENTRY_POINT_GROUP, BrickSpec, Mode, Port, default_registry
from lego_edit.bricks.catalog import MODEL_BRICKS
from lego_edit.bricks.prompt import render_system_prompt
from lego_edit.layout import BRICK_MODELS
from lego_edit.workflow import Kind, check_workflow, parse_workflow, run_workflow

FIXTURES = Path(__file__).parent / "fixtures"
# the console script of the interpreter running the tests (its venv), else the one on PATH
LEGO_EDIT = (
    str(Path(sys.executable).with_name("lego-edit"))
    if Path(sys.executable).with_name("lego-edit").exists()
    else shutil.which("lego-edit")
)
PLUGIN_DIST = "lego-edit-invert-colors"
PLUGIN_MODULE = "lego_edit_invert_colors"
BROKEN_MESSAGE = (
    "brick plugin 'broken_example' (lego_edit_invert_colors.broken:register) failed to load: "
    "RuntimeError: this plugin is broken on purpose"
)

# (inputs, outputs) of every brick of the published release (ANCHORS.md), by its published name
PUBLISHED_SIGNATURES = {
    "INVERSE": (["mask1", "mask2", "image1", "image2"], ["mask", "image"]),
    "RES": (["image", "prompt"], ["mask", "image"]),
    "SOS": (["image"], ["mask", "image"]),
    "MASK-SEG": (["image", "mask"], ["mask", "image"]),
    "ADD-PRED": (["image", "prompt", "mask"], ["mask"]),
    "CMI-PRED": (["image", "left_ratio", "right_ratio", "top_ratio", "bottom_ratio"], ["caption", "image", "mask"]),
    "BBOX": (["mask"], ["mask"]),
    "FASTINPAINT": (["image", "mask"], ["image", "score"]),
    "FLUX-FILL": (["image", "mask", "prompt", "preimage"], ["image"]),
    "FLUX-RCM": (["image", "mask", "prompt"], ["image"]),
    "FLUX-INPAINT": (["image", "mask", "preimage", "score"], ["image"]),
    "FLUX-CBG": (["image", "mask", "prompt"], ["image"]),
    "FLUX-STYLE": (["image", "mask", "prompt", "style"], ["image"]),
    "COMPOSE": (["mask1", "mask2", "image1", "image2"], ["mask", "image"]),
    "RESIZE": (["mask", "image", "ratio"], ["mask", "image"]),
    "FLUX-ENV": (["image", "prompt"], ["image"]),
    "FLUX-POSE": (["image", "prompt"], ["image"]),
    "BRIGHTNESS": (["image", "ratio"], ["image"]),  # the README's example of a tool added later
}


def spec(name="SHARPEN", aliases=(), **kw):
    return BrickSpec(
        name,
        "edit",
        "Sharpen the image",
        (Port("image", Kind.IMAGE),),
        (Port("image", Kind.IMAGE),),
        aliases=aliases,
        **kw,
    )


def identity(ctx, image):
    return {"image": image}


# --------------------------------------------------------------------------------------------- built-ins


def test_builtin_bricks_in_catalogue_order(registry):
    assert registry.names() == [
        "INVERSE",
        "RES",
        "SOS",
        "MASK-SEG",
        "ADD-PRED",
        "CMI-PRED",
        "BBOX",
        "FASTINPAINT",
        "FILL",
        "RCM",
        "INPAINT",
        "CBG",
        "STYLE",
        "COMPOSE",
        "RESIZE",
        "ENV",
        "POSE",
        "BRIGHTNESS",
    ]
    assert len(registry) == 18
    assert [s.name for s in registry if s.category == "predict"] == [
        "INVERSE",
        "RES",
        "SOS",
        "MASK-SEG",
        "ADD-PRED",
        "CMI-PRED",
        "BBOX",
    ]
    assert set(MODEL_BRICKS) == {
        "RES",
        "SOS",
        "MASK-SEG",
        "ADD-PRED",
        "CMI-PRED",
        "FILL",
        "RCM",
        "INPAINT",
        "CBG",
        "STYLE",
        "ENV",
        "POSE",
    }
    assert set(BRICK_MODELS) == set(MODEL_BRICKS)  # the brick -> model map covers every model brick
    assert {registry.source(n) for n in registry.names()} == {"lego_edit (built-in)"}


@pytest.mark.parametrize("name", sorted(PUBLISHED_SIGNATURES))
def test_published_signatures(registry, name):
    inputs, outputs = PUBLISHED_SIGNATURES[name]
    brick = registry.resolve(name)
    assert brick is not None, name
    assert [p.name for p in brick.inputs] == inputs
    assert [p.name for p in brick.outputs] == outputs


def test_port_kinds_and_ranges(registry):
    kinds = {
        s.name: ({p.name: str(p.kind) for p in s.inputs}, {p.name: str(p.kind) for p in s.outputs}) for s in registry
    }
    assert kinds["CMI-PRED"] == (
        {
            "image": "Image",
            "left_ratio": "Float",
            "right_ratio": "Float",
            "top_ratio": "Float",
            "bottom_ratio": "Float",
        },
        {"caption": "Str", "image": "Image", "mask": "Mask"},
    )
    assert kinds["FASTINPAINT"][1] == {"image": "Image", "score": "Float"}
    assert kinds["ADD-PRED"] == ({"image": "Image", "prompt": "Str", "mask": "Mask"}, {"mask": "Mask"})
    assert registry.resolve("RESIZE").input("ratio").range == (0.1, 4.0)
    assert registry.resolve("CMI-PRED").input("top_ratio").range == (1.0, 3.0)
    assert registry.resolve("INPAINT").input("score").range == (0.0, 1.0)
    assert registry.resolve("BRIGHTNESS").input("ratio").range == (0.0, 1.0)


def test_aliases_resolve_case_insensitively(registry):
    for alias, name in [
        ("FLUX-FILL", "FILL"),
        ("flux-rcm", "RCM"),
        ("Flux-Inpaint", "INPAINT"),
        ("FLUX-CBG", "CBG"),
        ("FLUX-STYLE", "STYLE"),
        ("FLUX-ENV", "ENV"),
        ("FLUX-POSE", "POSE"),
        ("FLUX-BRIGHT", "BRIGHTNESS"),
        ("res", "RES"),
        ("mask-seg", "MASK-SEG"),
    ]:
        assert registry.resolve(alias).name == name
        assert alias in registry
    assert registry.resolve("FLUX-RES") is None and "FLUX-RES" not in registry
    assert registry.resolve(None) is None and 3 not in registry
    assert registry.all_names()[8:10] == ["FILL", "FLUX-FILL"]
    assert len(registry.all_names()) == 26


def test_modes(registry):
    inverse = registry.resolve("INVERSE")
    assert inverse.select_mode({"mask2"}).label == "masks"
    assert inverse.select_mode({"mask1", "mask2"}).produces == ("mask",)
    assert inverse.select_mode({"image1", "image2"}).produces == ("image",)
    assert inverse.select_mode({"image1"}) is None
    assert inverse.select_mode({"mask2", "image1", "image2"}) is None
    assert inverse.required_everywhere() == set()
    assert registry.resolve("RESIZE").required_everywhere() == {"ratio"}
    cmi = registry.resolve("CMI-PRED")
    assert cmi.required_everywhere() == {"image"}
    assert cmi.select_mode({"image"}).produces == ("caption",)
    assert cmi.select_mode({"image", "left_ratio", "right_ratio", "top_ratio", "bottom_ratio"}).label == "expand"
    res = registry.resolve("RES")
    assert res.all_modes == (Mode(("image", "prompt"), ("mask", "image")),)  # default: all inputs, all outputs


def test_spec_checks_itself():
    with pytest.raises(ValueError, match=r"brick X: duplicate input names \['a', 'a'\]"):
        BrickSpec("X", "edit", "d", (Port("a", Kind.IMAGE), Port("a", Kind.MASK)), ())
    with pytest.raises(ValueError, match=r"brick X: mode 'm' uses unknown inputs \['b'\]"):
        BrickSpec(
            "X",
            "edit",
            "d",
            (Port("a", Kind.IMAGE),),
            (Port("o", Kind.IMAGE),),
            modes=(Mode(("a", "b"), ("o",), label="m"),),
        )
    with pytest.raises(ValueError, match=r"brick X: mode 'm' produces unknown outputs"):
        BrickSpec(
            "X",
            "edit",
            "d",
            (Port("a", Kind.IMAGE),),
            (Port("o", Kind.IMAGE),),
            modes=(Mode(("a",), ("p",), label="m"),),
        )


# --------------------------------------------------------------------------------------------- registration


def test_register_refuses_taken_names_unless_replacing(registry):
    with pytest.raises(ValueError) as info:
        registry.register(spec("res"))
    assert str(info.value) == (
        "brick name(s) ['res'] already registered (by lego_edit (built-in)); pass replace=True to override"
    )
    with pytest.raises(ValueError, match=r"\['FLUX-FILL'\] already registered"):
        registry.register(spec("MYFILL", aliases=("FLUX-FILL",)))
    assert "MYFILL" not in registry
    registry.register(spec("RES"), identity, source="tests", replace=True)
    assert registry.resolve("RES").description == "Sharpen the image"
    assert registry.implementation("res") is identity and registry.source("RES") == "tests"
    assert registry.names().count("RES") == 1 and len(registry) == 18


def test_register_unregister_bind(registry):
    registry.register(spec(aliases=("FLUX-SHARPEN",)), identity, source="tests")
    assert registry.resolve("flux-sharpen").name == "SHARPEN"
    assert registry.names()[-1] == "SHARPEN" and registry.all_names()[-2:] == ["SHARPEN", "FLUX-SHARPEN"]
    registry.unregister("flux-sharpen")  # by alias: removes the brick and all its names
    assert "SHARPEN" not in registry and "FLUX-SHARPEN" not in registry and len(registry) == 18
    with pytest.raises(KeyError):
        registry.unregister("SHARPEN")
    assert registry.implementation("RES") is None
    registry.bind("flux-fill", identity, source="my models")
    assert registry.implementation("FILL") is identity and registry.source("FILL") == "my models"
    with pytest.raises(KeyError, match="unknown brick 'NOPE'"):
        registry.bind("NOPE", identity)
    with pytest.raises(KeyError, match="unknown brick 'NOPE'"):
        registry.implementation("NOPE")


def test_copy_is_independent(registry):
    other = registry.copy()
    other.register(spec(), identity)
    other.bind("RES", identity)
    assert "SHARPEN" in other and "SHARPEN" not in registry
    assert other.implementation("RES") is identity and registry.implementation("RES") is None
    registry.unregister("BBOX")
    assert "BBOX" in other


def test_a_registered_brick_validates_executes_and_is_offered_to_the_builder(registry):
    registry.register(spec(), lambda ctx, image: {"image": 255 - image})
    wf = parse_workflow(
        {
            "pipeline": [
                {"step": 1, "model": "sharpen", "input": {"image": "init[image]"}, "output": {"image": "step1[image]"}},
                {"result": "[step1[image]]"},
            ]
        }
    )
    assert check_workflow(wf, registry).ok
    image = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
    np.testing.assert_array_equal(run_workflow(wf, image, registry=registry).images[0], 255 - image)
    assert "\n12.SHARPEN (Sharpen the image)\nInput: {Image[image]}\nOutput: {Image[image]}\n" in render_system_prompt(
        registry
    )


# ------------------------------------------------------------------------------ entry points, in process


def fake_entry_points(monkeypatch, modules: dict, eps: list[tuple[str, str]]):
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    points = [importlib.metadata.EntryPoint(name, value, ENTRY_POINT_GROUP) for name, value in eps]

    def entry_points(group=None):
        assert group == ENTRY_POINT_GROUP
        return points

    monkeypatch.setattr("lego_edit.bricks.registry.entry_points", entry_points)


def module(name, register):
    mod = types.ModuleType(name)
    mod.register = register
    return mod


def test_plugins_load_and_broken_ones_are_warnings(monkeypatch, caplog):
    def register_conflict(registry):
        registry.register(spec("RES"), identity)

    def register_raises(registry):
        raise RuntimeError("boom")

    fake_entry_points(
        monkeypatch,
        {
            "good_plugin": module("good_plugin", lambda reg: reg.register(spec(), identity)),
            "conflict_plugin": module("conflict_plugin", register_conflict),
            "raising_plugin": module("raising_plugin", register_raises),
        },
        [
            ("good", "good_plugin:register"),
            ("missing", "no_such_module_xyz:register"),
            ("conflict", "conflict_plugin:register"),
            ("raises", "raising_plugin:register"),
            ("noattr", "good_plugin:nothing_here"),
        ],
    )
    with caplog.at_level(logging.WARNING, logger="lego_edit.bricks.registry"):
        registry = default_registry()
    assert registry.names()[-1] == "SHARPEN" and len(registry) == 19
    assert registry.implementation("SHARPEN") is identity
    assert registry.source("SHARPEN") == "plugin good (good_plugin:register)"
    assert registry.resolve("RES").description == "Segment the object that the prompt refers to"  # not replaced
    assert registry.plugin_errors == [
        "brick plugin 'missing' (no_such_module_xyz:register) failed to load: ModuleNotFoundError: No module named "
        "'no_such_module_xyz'",
        "brick plugin 'conflict' (conflict_plugin:register) failed to load: ValueError: brick name(s) ['RES'] already "
        "registered (by lego_edit (built-in)); pass replace=True to override",
        "brick plugin 'raises' (raising_plugin:register) failed to load: RuntimeError: boom",
        "brick plugin 'noattr' (good_plugin:nothing_here) failed to load: AttributeError: module 'good_plugin' has no "
        "attribute 'nothing_here'",
    ]
    assert [r.getMessage() for r in caplog.records] == registry.plugin_errors
    assert default_registry(plugins=False).names()[-1] == "BRIGHTNESS"
    assert registry.copy().plugin_errors == registry.plugin_errors


# ------------------------------------------------------------------------- the installed plugin package


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory):
    """tests/fixtures/plugin_pkg installed with pip into a temporary --target folder (built from a copy, so the
    source tree gets no build/ or egg-info)."""
    work = tmp_path_factory.mktemp("plugin")
    shutil.copytree(FIXTURES / "plugin_pkg", work / "src")
    site = work / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--quiet",
            "--disable-pip-version-check",
            "--target",
            str(site),
            str(work / "src"),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert (site / PLUGIN_MODULE / "__init__.py").is_file()
    yield site
    for name in [m for m in sys.modules if m == PLUGIN_MODULE or m.startswith(PLUGIN_MODULE + ".")]:
        del sys.modules[name]


def plugin_env(site) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), env.get("PYTHONPATH", "")) if p)
    return env


def cli(*args, env=None, stdin=None):
    return subprocess.run([LEGO_EDIT, *args], capture_output=True, text=True, env=env, input=stdin, timeout=120)


NEGATIVE_WORKFLOW = json.dumps(
    {
        "process": "make a negative",
        "pipeline": [
            {
                "step": 1,
                "model": "INVERT-COLORS",
                "input": {"image": "init[image]"},
                "output": {"image": "step1[image]"},
            },
            {"step": 2, "model": "negative", "input": {"image": "step1[image]"}, "output": {"image": "step2[image]"}},
            {
                "step": 3,
                "model": "INVERSE",
                "input": {"image1": "step1[image]", "image2": "init[image]"},
                "output": {"image": "step3[image]"},
            },
            {"result": "[step1[image], step2[image], step3[image]]"},
        ],
    }
)


def test_installed_plugin_in_process(plugin_site, monkeypatch):
    with monkeypatch.context() as m:
        m.syspath_prepend(str(plugin_site))
        assert importlib.metadata.distribution(PLUGIN_DIST).entry_points.select(group=ENTRY_POINT_GROUP).names == {
            "invert_colors",
            "broken_example",
        }
        registry = default_registry()
        assert registry.names()[-1] == "INVERT-COLORS"
        assert registry.resolve("negative").name == "INVERT-COLORS"
        assert registry.source("INVERT-COLORS") == "plugin invert_colors (lego_edit_invert_colors:register)"
        assert registry.plugin_errors == [BROKEN_MESSAGE]  # the broken entry point did not break the registry
        assert len(registry) == 19
        wf = parse_workflow(NEGATIVE_WORKFLOW)
        assert check_workflow(wf, registry).ok
        image = np.arange(16 * 16 * 3, dtype=np.uint8).reshape(16, 16, 3)
        result = run_workflow(wf, image, registry=registry)
        np.testing.assert_array_equal(result.images[0], 255 - image)
        np.testing.assert_array_equal(result.images[1], image)
        np.testing.assert_array_equal(result.images[2], np.clip(255 - 2 * image.astype(int), 0, 255))
        assert "INVERT-COLORS (Turn the image into its photographic negative)" in render_system_prompt(registry)
    # gone again once the folder is off sys.path: nothing was installed into the shared environment
    assert "INVERT-COLORS" not in default_registry()
    with pytest.raises(importlib.metadata.PackageNotFoundError):
        importlib.metadata.distribution(PLUGIN_DIST)


def test_installed_plugin_through_the_cli(plugin_site, tmp_path):
    env = plugin_env(plugin_site)
    listing = cli("bricks", env=env)
    assert listing.returncode == 0, listing.stderr
    row = next(line for line in listing.stdout.splitlines() if line.startswith("INVERT-COLORS"))
    assert row.split() == ["INVERT-COLORS", "edit", "image:Image", "image:Image", "ready", "(plugin)", "NEGATIVE"]
    assert f"warning: {BROKEN_MESSAGE}" in listing.stderr.splitlines()
    as_json = json.loads(cli("bricks", "--json", env=env).stdout)
    assert as_json[-1] == {
        "name": "INVERT-COLORS",
        "aliases": ["NEGATIVE"],
        "category": "edit",
        "backend": "function",
        "inputs": {"image": "Image"},
        "outputs": {"image": "Image"},
        "available": True,
        "source": "plugin invert_colors (lego_edit_invert_colors:register)",
    }
    prompt = cli("prompt", "make it a negative", env=env)
    assert prompt.returncode == 0
    assert (
        "INVERT-COLORS (Turn the image into its photographic negative)\nInput: {Image[image]}\n"
        "Output: {Image[image]}\nConstraint: Use it only when the user asks for a negative or inverted colours.\n"
        in prompt.stdout
    )
    assert prompt.stdout.rstrip().endswith('"make it a negative". Write the workflow JSON.')

    (tmp_path / "wf.json").write_text(NEGATIVE_WORKFLOW, encoding="utf-8")
    valid = cli("validate", str(tmp_path / "wf.json"), env=env)
    assert (valid.returncode, valid.stdout) == (0, "valid\n")
    image = np.arange(16 * 16 * 3, dtype=np.uint8).reshape(16, 16, 3)
    Image.fromarray(image).save(tmp_path / "in.png")
    run = cli(
        "run-workflow",
        str(tmp_path / "wf.json"),
        "--image",
        str(tmp_path / "in.png"),
        "--out",
        str(tmp_path / "out"),
        env=env,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == [str(tmp_path / "out" / f"result_{i}.png") for i in range(3)]
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out" / "result_0.png")), 255 - image)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out" / "result_1.png")), image)

    # without the folder on PYTHONPATH the shared environment knows nothing of the plugin
    plain = cli("bricks")
    assert "INVERT-COLORS" not in plain.stdout and plain.stderr == ""
    unknown = cli("validate", str(tmp_path / "wf.json"))
    assert unknown.returncode == 1
    assert "error: step 1, model: unknown brick 'INVERT-COLORS'" in unknown.stdout
