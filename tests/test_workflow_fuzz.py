"""Fuzzing the workflow language: untrusted Builder output may be anything.

- parse_workflow / check_workflow raise nothing but WorkflowError, for random text, random JSON-ish
  structures and mutations of valid workflows;
- executing such workflows (model bricks bound to a recording fake) never runs an unregistered name and
  runs nothing at all when validation fails;
- size bounds hold: RESIZE ratio 1e6 is rejected before any allocation, and fuzzed RESIZE / CMI-PRED
  chains under small Limits keep tracemalloc's peak under a bound worked out below.
"""

from __future__ import annotations

import copy
import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from lego_edit.bricks.prompt import EXAMPLES
from lego_edit.bricks.registry import BrickRegistry, default_registry
from lego_edit.workflow import (
    BrickContext,
    ExecutionError,
    Executor,
    LimitExceededError,
    Limits,
    WorkflowError,
    WorkflowValidationError,
    check_workflow,
    parse_workflow,
)
from lego_edit.workflow.parse import MAX_TEXT_CHARS

FUZZ = settings(
    max_examples=250,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

FIXTURES = Path(__file__).parent / "fixtures"
REGISTRY = default_registry(plugins=False)
BRICK_NAMES = REGISTRY.all_names()
CANONICAL = set(REGISTRY.names())
IMAGE = np.full((16, 16, 3), 120, np.uint8)
IMAGE[4:12, 4:12] = 30
MASK = np.zeros((16, 16), np.uint8)
MASK[5:10, 6:11] = 255

BASES = (
    [json.loads(json.dumps(ex[1])) for ex in EXAMPLES]
    + [
        parse_workflow((FIXTURES / "published" / name).read_text(encoding="utf-8")).to_dict()
        for name in ("example2.json", "example3.json", "example4.json")
    ]
    + [parse_workflow((FIXTURES / "workflows" / "function_bricks.json").read_text(encoding="utf-8")).to_dict()]
)
REFS = [
    "init[image]",
    "init[mask]",
    "init[caption]",
    "step1[mask]",
    "step1[image]",
    "step2[image]",
    "step2[score]",
    "step3[caption]",
    "step9[mask]",
    "step0[image]",
    "step-1[mask]",
    "step1 [mask]",
    "stepX[image]",
    "init[]",
]
KEYS = [
    "step",
    "model",
    "input",
    "output",
    "result",
    "process",
    "pipeline",
    "image",
    "mask",
    "prompt",
    "ratio",
    "mask1",
    "mask2",
    "image1",
    "image2",
    "score",
    "caption",
    "preimage",
    "left_ratio",
    "style",
]
NUMBERS = [0, -1, 1, 2, 0.1, 4.0, 3.5, 1e6, -1e6, 1e308, -1e308, 1e-300, 10**30, 2**63, "1e6", "nan", "inf", "2"]

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(REFS + BRICK_NAMES + KEYS)
)
json_like = st.recursive(
    scalars,
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), kids, max_size=5)
    ),
    max_leaves=40,
)
TOKENS = list("{}[]\",:，：'0123456789.e-+ \n\\/*") + [
    '"pipeline"',
    '"result"',
    '"step"',
    '"model"',
    '"input"',
    '"output"',
    '"process"',
    '"init[image]"',
    '"step1[mask]"',
    '"[step1[image]]"',
    '"RES"',
    '"FLUX-FILL"',
    "null",
    "true",
    "NaN",
    "<think>",
    "</think>",
    "```json\n",
    "```",
    "<answer>",
    '"',
    "'",
]


def spy_registry(calls: list, lookups: list) -> BrickRegistry:
    """The built-in bricks; model bricks bound to fakes; every call and implementation lookup recorded."""
    reg = default_registry(plugins=False)
    for spec in list(reg):
        inner = reg.implementation(spec.name)

        def run(ctx, _spec=spec, _inner=inner, **inputs):
            calls.append(_spec.name)
            if _inner is not None:
                return _inner(ctx, **inputs)
            shape = next((v.shape[:2] for v in inputs.values() if isinstance(v, np.ndarray)), (16, 16))
            fake = {
                "Image": np.zeros((*shape, 3), np.uint8),
                "Mask": np.zeros(shape, np.uint8),
                "Str": "a caption",
                "Float": 0.5,
            }
            return {p.name: fake[str(p.kind)] for p in _spec.outputs}

        reg.bind(spec.name, run)

    def implementation(name):
        lookups.append(name)
        return BrickRegistry.implementation(reg, name)

    reg.implementation = implementation
    return reg


CALLS: list[str] = []
LOOKUPS: list[str] = []
RECORDING = spy_registry(CALLS, LOOKUPS)


def parse_and_check(source, has_mask=None):
    """Parse and validate; return (workflow or None, report or None). Anything but WorkflowError propagates."""
    try:
        wf = parse_workflow(source)
    except WorkflowError as e:
        assert e.issues and all(str(i) for i in e.issues)
        event("parse error")
        return None, None
    try:
        return wf, check_workflow(wf, RECORDING, has_mask=has_mask)
    except WorkflowError as e:
        assert e.issues
        return wf, None


# ------------------------------------------------------------------------------------ parse and validate


@FUZZ
@given(st.text(max_size=400))
def test_random_text(text):
    parse_and_check(text)


@FUZZ
@given(st.lists(st.sampled_from(TOKENS), max_size=80).map("".join))
def test_random_json_token_soup(text):
    parse_and_check(text)
    parse_and_check("{" + text)


@FUZZ
@given(json_like, st.sampled_from(["dict", "json", "pipeline", "pipeline-json"]))
def test_random_json_structures(value, how):
    if how.startswith("pipeline"):
        value = {"process": "fuzz", "pipeline": value if isinstance(value, list) else [value]}
    if how.endswith("json"):
        parse_and_check(json.dumps(value, allow_nan=True))
    else:
        parse_and_check(value if isinstance(value, dict) else {"pipeline": value})


def _steps(obj):
    return [item for item in obj.get("pipeline", []) if isinstance(item, dict) and "step" in item]


def _nested(depth, leaf):
    for i in range(depth):
        leaf = [leaf] if i % 2 else {"k": leaf}
    return leaf


def mutate(obj: dict, data) -> None:
    """One random damage to a workflow dict, in place."""
    steps = _steps(obj)
    step = data.draw(st.sampled_from(steps)) if steps else {}
    ports = [d for d in (step.get("input"), step.get("output")) if isinstance(d, dict)]
    port = data.draw(st.sampled_from(ports)) if ports else {}
    kind = data.draw(
        st.sampled_from(
            [  # hypothesis favours the first: those keep the JSON a workflow, so that
                "ref",
                "swap_refs",
                "brick",
                "number",
                "self_ref",
                "drop_port",
                "add_port",
                "dup_step",
                "shuffle",
                "output_ref",
                "top_result",  # validation and execution are reached; the rest mostly break the structure
                "drop_field",
                "rename_field",
                "step_number",
                "nest",
                "result",
            ]
        )
    )
    if kind == "drop_field" and step:
        step.pop(data.draw(st.sampled_from(sorted(step))))
    elif kind == "rename_field" and step:
        old = data.draw(st.sampled_from(sorted(step)))
        step[data.draw(st.sampled_from(KEYS) | st.text(max_size=5))] = step.pop(old)
    elif kind == "drop_port" and port:
        port.pop(data.draw(st.sampled_from(sorted(port))))
    elif kind == "add_port" and ports:
        port[data.draw(st.sampled_from(KEYS) | st.text(max_size=5))] = data.draw(scalars)
    elif kind == "swap_refs":
        slots = [(d, k) for s in steps for d in (s.get("input"), s.get("output")) if isinstance(d, dict) for k in d]
        if len(slots) >= 2:
            (d1, k1), (d2, k2) = data.draw(st.permutations(slots))[:2]
            d1[k1], d2[k2] = d2[k2], d1[k1]
    elif kind == "brick" and step:
        step["model"] = data.draw(
            st.sampled_from(BRICK_NAMES + ["MASK-INVERSE", "", "res", "FLUX-RES", 3, None]) | st.text(max_size=10)
        )
    elif kind == "number" and port:
        port[data.draw(st.sampled_from(sorted(port)))] = data.draw(st.sampled_from(NUMBERS))
    elif kind == "step_number" and step:
        step["step"] = data.draw(st.sampled_from([0, -3, 10**18, "1", "x", 1.5, True, None]) | st.integers(1, 9))
    elif kind == "nest":
        target = data.draw(st.sampled_from(["input", "output", "step", "result", "pipeline"]))
        deep = _nested(data.draw(st.integers(1, 60)), data.draw(scalars))
        if target == "result" or target == "pipeline" or not step:
            obj[target] = deep
        elif target == "step":
            step["step"] = deep
        elif isinstance(step.get(target), dict) and step[target]:
            step[target][data.draw(st.sampled_from(sorted(step[target])))] = deep
    elif kind == "self_ref" and port and isinstance(step.get("step"), int):
        port[data.draw(st.sampled_from(sorted(port)))] = f"step{step['step']}[{data.draw(st.sampled_from(KEYS))}]"
    elif kind == "ref" and port:
        n = data.draw(st.integers(-1, len(steps) + 2))
        port[data.draw(st.sampled_from(sorted(port)))] = f"step{n}[{data.draw(st.sampled_from(KEYS))}]"
    elif kind == "dup_step" and step:
        obj["pipeline"].insert(data.draw(st.integers(0, len(obj["pipeline"]))), copy.deepcopy(step))
    elif kind == "shuffle" and isinstance(obj.get("pipeline"), list):
        obj["pipeline"] = data.draw(st.permutations(obj["pipeline"]))
    elif kind == "result" and isinstance(obj.get("pipeline"), list) and obj["pipeline"]:
        obj["pipeline"][-1] = {
            "result": data.draw(
                st.sampled_from(REFS)
                | st.lists(st.sampled_from(REFS), max_size=3).map(lambda refs: "[" + ", ".join(refs) + "]")
                | scalars
            )
        }
    elif kind == "output_ref" and isinstance(step.get("output"), dict) and step["output"]:
        key = data.draw(st.sampled_from(sorted(step["output"])))
        step["output"][key] = data.draw(st.sampled_from(REFS) | scalars)
    elif kind == "top_result" and isinstance(obj.get("pipeline"), list) and obj["pipeline"]:
        obj["result"] = obj["pipeline"].pop().get("result") if isinstance(obj["pipeline"][-1], dict) else None


def dumps_with_slips(value, comma: str) -> str:
    """JSON with the published slips: a trailing comma in every object and list, ``comma`` between fields."""
    if isinstance(value, dict):
        return (
            "{"
            + comma.join(
                json.dumps(str(k), ensure_ascii=False) + ": " + dumps_with_slips(v, comma) for k, v in value.items()
            )
            + (",}" if value else "}")
        )
    if isinstance(value, list):
        return "[" + ", ".join(dumps_with_slips(v, comma) for v in value) + (",]" if value else "]")
    return json.dumps(value, ensure_ascii=False)


def encode(obj: dict, data):
    how = data.draw(st.sampled_from(["dict", "json", "think", "slips", "text-damage"]))
    event(f"encoded as {how}")
    if how == "dict":
        return obj
    text = json.dumps(obj, ensure_ascii=False, allow_nan=True)
    if how == "think":
        return "<think>" + data.draw(st.text(max_size=30)) + "</think>" + text
    if how == "slips":
        return dumps_with_slips(obj, data.draw(st.sampled_from([", ", "，", ",\n"])))
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(text)))
        text = (
            text[:i]
            + data.draw(st.sampled_from(TOKENS[:20] + ["", "'", "//"]))
            + text[i + data.draw(st.integers(0, 3)) :]
        )
    return text


RARELY = st.sampled_from([False] * 11 + [True])  # (hypothesis favours the first element, and integers near 0)


@st.composite
def generated_workflow(draw, has_mask: bool) -> dict:
    """A workflow built from the registry's signatures: mostly valid, sometimes with an unknown brick, a wrong
    kind, an out-of-range number or a dangling reference."""
    available = {"Image": ["init[image]"], "Mask": ["init[mask]"] if has_mask else [], "Str": [], "Float": []}
    anything = st.sampled_from(REFS + [1e6, -1.0, 5.0]) | scalars
    pipeline = []
    for n in range(1, draw(st.integers(1, 6)) + 1):
        unknown = draw(RARELY)
        name = draw(st.sampled_from(["SEGMENT", "MASK-INVERSE", "rm -rf /"] if unknown else BRICK_NAMES + ["res"]))
        spec = REGISTRY.resolve(name)
        if spec is None:
            pipeline.append(
                {"step": n, "model": name, "input": {"image": "init[image]"}, "output": {"image": f"step{n}[image]"}}
            )
            available["Image"].append(f"step{n}[image]")
            continue
        mode = draw(st.sampled_from(spec.all_modes))
        inputs = {}
        for port in spec.inputs:
            if port.name not in mode.requires and not (port.name in mode.allows and draw(st.booleans())):
                inputs[port.name] = None
            elif draw(RARELY):
                inputs[port.name] = draw(anything)  # a slip
            elif port.range:
                lo, hi = port.range
                inputs[port.name] = draw(st.floats(lo, hi) | st.sampled_from([lo, hi]))
            elif available[str(port.kind)]:
                inputs[port.name] = draw(st.sampled_from(available[str(port.kind)]))
            elif port.kind == "Str":
                inputs[port.name] = draw(st.sampled_from(["a dog", "watercolor style", "make it night"]))
            else:
                inputs[port.name] = "init[mask]"  # no mask yet: a slip
        outputs = {p.name: f"step{n}[{p.name}]" for p in spec.outputs if p.name in mode.produces}
        for key, ref in outputs.items():
            available[str(spec.output(key).kind)].append(ref)
        pipeline.append({"step": n, "model": name, "input": inputs, "output": outputs})
    result = draw(st.lists(st.sampled_from(available["Image"]), min_size=1, max_size=2))
    return {"process": "generated", "pipeline": [*pipeline, {"result": "[" + ", ".join(result) + "]"}]}


def check_execution(wf, report, has_mask: bool) -> None:
    """Run ``wf`` with the recording registry and check what ran against what was declared and validated."""
    CALLS.clear()
    LOOKUPS.clear()
    try:
        Executor(RECORDING).run(wf, IMAGE, MASK if has_mask else None)
        assert report is not None and report.ok
        event("executed")
    except WorkflowError:
        assert report is None  # executor and validator agree
        assert CALLS == [] and LOOKUPS == []  # nothing ran
        event("rejected by validation")
    except ExecutionError as e:
        assert report is not None
        event(f"execution error: {type(e).__name__}")
    assert set(LOOKUPS) <= CANONICAL and set(CALLS) <= CANONICAL
    declared = {REGISTRY.resolve(s.brick).name for s in wf.steps if REGISTRY.resolve(s.brick) is not None}
    assert set(CALLS) <= declared
    if any(REGISTRY.resolve(s.brick) is None for s in wf.steps):
        assert CALLS == []  # one unregistered brick anywhere: nothing runs at all


@FUZZ
@given(st.sampled_from(BASES), st.data())
def test_mutated_workflows_parse_validate_and_execute_safely(base, data):
    obj = copy.deepcopy(base)
    for _ in range(data.draw(st.integers(0, 3))):
        mutate(obj, data)
    has_mask = data.draw(st.booleans())
    wf, report = parse_and_check(encode(obj, data), has_mask=has_mask)
    if wf is not None:
        check_execution(wf, report, has_mask)


@FUZZ
@given(st.data())
def test_generated_workflows_run_only_registered_bricks(data):
    has_mask = data.draw(st.sampled_from([True, True, False]))
    wf, report = parse_and_check(data.draw(generated_workflow(has_mask)), has_mask=has_mask)
    if wf is not None:
        check_execution(wf, report, has_mask)


def test_valid_bases_execute_every_needed_step():
    for base in BASES:
        wf, report = parse_and_check(copy.deepcopy(base), has_mask=True)
        assert report is not None and report.ok, base["process"]
        CALLS.clear()
        Executor(RECORDING).run(wf, IMAGE, MASK)
        assert sorted(CALLS) == sorted(p.spec.name for p in report.plan if p.step.number in report.needed)


def test_a_hundred_thousand_steps():
    steps = [
        {"step": n, "model": "BBOX", "input": {"mask": "init[mask]"}, "output": {"mask": f"step{n}[mask]"}}
        for n in range(1, 100_001)
    ]
    wf = parse_workflow({"pipeline": steps, "result": "[step1[mask]]"})
    assert len(wf.steps) == 100_000
    with pytest.raises(WorkflowValidationError) as info:
        check_workflow(wf, REGISTRY)
    assert [i.code for i in info.value.issues] == ["too_many_steps"]
    with pytest.raises(WorkflowError) as info:
        parse_workflow(json.dumps({"pipeline": steps}))
    assert info.value.issues[0].code == "too_large"
    compact = [{"step": n, "model": "BBOX", "input": {}, "output": {}} for n in range(1, 3001)]
    text = json.dumps({"pipeline": compact, "result": "init[image]"}, separators=(",", ":"))
    assert len(text) < MAX_TEXT_CHARS
    with pytest.raises(WorkflowValidationError) as info:
        check_workflow(parse_workflow(text), REGISTRY)
    assert str(info.value) == "pipeline: the workflow has 3000 steps, above the bound of 16"


def test_deep_nesting_in_a_dict_source():
    deep = _nested(50_000, "x")
    for obj in (
        {"pipeline": [], "result": [deep]},
        {"pipeline": [{"step": deep}], "result": "init[image]"},
        {
            "pipeline": [{"step": 1, "model": deep, "input": {"a": deep}, "output": {"b": deep}}],
            "result": "init[image]",
        },
        {"pipeline": deep},
    ):
        with pytest.raises(WorkflowError):
            parse_workflow(obj)


# ------------------------------------------------------------------------------------------------ size bounds
#
# The memory bound. LIMITS lets no image or mask exceed P = 8192 pixels (2x a 64x64 input), and at most 6
# steps. An RGB image of P pixels is 3P bytes, a mask P bytes. The executor keeps every stored output: at most
# an image and a mask per step, 4P per step, 24P for six steps. Inside one step a brick holds a few transient
# arrays next to its inputs (RESIZE: the resized patch and the zeroed canvas; FASTINPAINT: the dilated hole, the
# filled image and the masks of its difficulty score; the CMI-PRED fake: canvas and mask), together at most 12P.
# So images account for at most 36P = 288 KiB; parsing, validation and the executor's bookkeeping add tens of
# KiB (the largest peak over these examples, images included, was measured at ~160 KiB). BOUND = 512 KiB.
# Without the limit a single fuzzed chain grows by up to 4x (RESIZE) or 5x (CMI-PRED, ratio 3 on both sides) per
# side per step: two CMI-PRED steps alone reach 1600x1600 (~10 MiB), which the control test below shows.

P = 8192
LIMITS = Limits(max_steps=6, max_pixels=P, max_side=1024)
BOUND = 512 * 1024
SRC = np.tile(np.arange(64, dtype=np.uint8)[None, :, None], (64, 1, 3))  # 64x64 RGB


def cmi_like(ctx, image, left_ratio=None, right_ratio=None, top_ratio=None, bottom_ratio=None):
    """A CMI-PRED stand-in with the real contract: expand the canvas by the side ratios, and ask ctx.limits
    before allocating (as every brick that makes a bigger image must)."""
    if left_ratio is None:
        return {"caption": "a gradient"}
    h, w = image.shape[:2]
    left, right = int(w * (left_ratio - 1)), int(w * (right_ratio - 1))
    top, bottom = int(h * (top_ratio - 1)), int(h * (bottom_ratio - 1))
    ctx.limits.check_size(h + top + bottom, w + left + right, "the expanded canvas")
    canvas = np.zeros((h + top + bottom, w + left + right, 3), np.uint8)
    canvas[top : top + h, left : left + w] = image[:, :, :3]
    mask = np.full(canvas.shape[:2], 255, np.uint8)
    mask[top : top + h, left : left + w] = 0
    return {"caption": "a gradient", "image": canvas, "mask": mask}


SIZE_CALLS: list[str] = []
SIZE_REGISTRY = spy_registry(SIZE_CALLS, [])
SIZE_REGISTRY.bind("CMI-PRED", cmi_like)


def traced_run(wf, limits=LIMITS):
    """(peak traced bytes, error or None) of one run."""
    tracemalloc.start()
    try:
        Executor(SIZE_REGISTRY, BrickContext(limits=limits)).run(wf, SRC)
        error = None
    except (WorkflowError, ExecutionError) as e:
        error = e
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak, error


def test_resize_ratio_1e6_is_rejected_before_any_allocation():
    SIZE_CALLS.clear()
    wf = parse_workflow(
        {
            "pipeline": [
                {
                    "step": 1,
                    "model": "RESIZE",
                    "input": {"image": "init[image]", "ratio": 1e6},
                    "output": {"image": "step1[image]"},
                },
                {"result": "[step1[image]]"},
            ]
        }
    )
    peak, error = traced_run(wf)
    assert isinstance(error, WorkflowValidationError)
    assert str(error) == "step 1, input.ratio: 1e+06 is outside the allowed range [0.1, 4]"
    assert SIZE_CALLS == []
    assert peak < 64 * 1024  # nothing near even one 64x64 image (12 KiB) times the ratio


def _chain(kinds, sources):
    """A workflow of RESIZE (image or mask) and CMI-PRED (expand) steps, each growing an earlier output."""
    pipeline, images, last_mask, mask_image = [], [], None, None
    for n, ((kind, ratios), src) in enumerate(zip(kinds, sources), start=1):
        image = (["init[image]"] + images)[src % (len(images) + 1)]  # grow the input or any earlier image
        if kind == "RESIZE-MASK" and last_mask:
            step = {
                "model": "RESIZE",
                "input": {"mask": last_mask, "ratio": ratios[0]},
                "output": {"mask": f"step{n}[mask]"},
            }
            last_mask = f"step{n}[mask]"
        elif kind == "CMI-PRED":
            names = ("left_ratio", "right_ratio", "top_ratio", "bottom_ratio")
            step = {
                "model": "CMI-PRED",
                "input": {"image": image, **dict(zip(names, ratios))},
                "output": {"caption": f"step{n}[caption]", "image": f"step{n}[image]", "mask": f"step{n}[mask]"},
            }
            images.append(f"step{n}[image]")
            last_mask, mask_image = f"step{n}[mask]", f"step{n}[image]"
        else:
            step = {
                "model": "RESIZE",
                "input": {"image": image, "ratio": ratios[0]},
                "output": {"image": f"step{n}[image]"},
            }
            images.append(f"step{n}[image]")
        pipeline.append({"step": n, **step})
    if last_mask:  # the mask chain feeds FASTINPAINT (with the canvas it belongs to), so that it is needed too
        n = len(pipeline) + 1
        pipeline.append(
            {
                "step": n,
                "model": "FASTINPAINT",
                "input": {"image": mask_image, "mask": last_mask},
                "output": {"image": f"step{n}[image]"},
            }
        )
        images.append(f"step{n}[image]")
    pipeline.append({"result": "[" + ", ".join(images or ["init[image]"]) + "]"})
    return {"process": "grow", "pipeline": pipeline}


# CMI-PRED's range is [1, 3], RESIZE's [0.1, 4]; now and then a ratio outside it
side = st.one_of(
    st.floats(1.0, 3.0),
    st.sampled_from([3.0, 1.0, 2.0]),
    RARELY.flatmap(lambda out: st.sampled_from([1e6, 0.5]) if out else st.floats(1.0, 3.0)),
)
scale = st.one_of(
    st.floats(0.1, 4.0),
    st.sampled_from([4.0, 0.1, 2.0]),
    RARELY.flatmap(lambda out: st.sampled_from([1e6, 0.01]) if out else st.floats(0.1, 4.0)),
)
step_kind = st.tuples(st.just("CMI-PRED"), st.lists(side, min_size=4, max_size=4)) | st.tuples(
    st.sampled_from(["RESIZE", "RESIZE-MASK"]), st.lists(scale, min_size=1, max_size=1)
)


@settings(FUZZ, max_examples=150)
@given(st.lists(step_kind, min_size=1, max_size=7), st.lists(st.integers(0, 7), min_size=7, max_size=7))
def test_fuzzed_growth_stays_under_the_memory_bound(kinds, sources):
    wf = None
    try:
        wf = parse_workflow(_chain(kinds, sources))
    except WorkflowError:
        return
    peak, error = traced_run(wf)
    event(type(error).__name__ if error else "ran")
    assert peak < BOUND, (peak, error)
    assert error is None or isinstance(error, (WorkflowValidationError, LimitExceededError)), error


def test_control_the_bound_catches_unbounded_growth():
    grow = [("CMI-PRED", [3.0] * 4), ("CMI-PRED", [3.0] * 4)]
    wf = parse_workflow(_chain(grow, [0, 1]))
    peak, error = traced_run(wf, Limits())  # default limits: 64 -> 320 -> 1600 pixels a side
    assert error is None and peak > 8 * 1024 * 1024 > BOUND
    peak, error = traced_run(wf)
    assert isinstance(error, LimitExceededError)
    assert str(error) == (
        "step 1 (CMI-PRED): the expanded canvas would be 320x320 pixels, above the bound (8192 pixels, 1024 per side)"
    )
    assert peak < BOUND
