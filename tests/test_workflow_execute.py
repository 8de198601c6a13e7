"""Executor: runs the needed steps in order with typed values; brick failures become ExecutionErrors."""

from __future__ import annotations

import numpy as np
import pytest

from lego_edit.bricks.functions import fastinpaint
from lego_edit.workflow import (
    BrickContext,
    BrickUnavailableError,
    ExecutionError,
    Executor,
    LimitExceededError,
    Limits,
    WorkflowError,
    WorkflowValidationError,
    parse_workflow,
    run_workflow,
)
from lego_edit.workflow.values import Kind, as_mask, check_value, kind_of, rgb

IMAGE = np.full((16, 16, 3), 90, np.uint8)
MASK = np.zeros((16, 16), np.uint8)
MASK[4:8, 4:8] = 255


def S(n, model, inputs, outputs):
    return {"step": n, "model": model, "input": inputs, "output": outputs}


def W(*steps, result):
    return parse_workflow({"process": "test", "pipeline": [*steps, {"result": result}]})


BBOX1 = S(1, "BBOX", {"mask": "init[mask]"}, {"mask": "step1[mask]"})
INPAINT2 = S(
    2,
    "FASTINPAINT",
    {"image": "init[image]", "mask": "step1[mask]"},
    {"image": "step2[image]", "score": "step2[score]"},
)


def test_function_workflow_gives_the_hand_computed_values(function_case):
    wf = parse_workflow(function_case.workflow.read_text(encoding="utf-8"))
    result = run_workflow(wf, function_case.image, function_case.mask)
    assert [(r.step, r.brick) for r in result.steps] == [
        (1, "BBOX"),
        (2, "RESIZE"),
        (3, "INVERSE"),
        (4, "COMPOSE"),
        (5, "FASTINPAINT"),
        (6, "RESIZE"),
        (7, "INVERSE"),
        (8, "COMPOSE"),
    ]
    assert result.warnings == []
    for name, expected in function_case.masks.items():
        np.testing.assert_array_equal(result.values[name], expected, err_msg=name)
    for name, expected in function_case.images.items():
        np.testing.assert_array_equal(result.values[name], expected, err_msg=name)
    # a few pixels of step 7 written out: [60, 60, 200] - [0, 0, 200]; and [150, 150, 200] - [210, 210, 200]
    # saturates to 0 (uint8 arithmetic would wrap to [196, 196, 0])
    assert result.values["step7[image]"][4, 4].tolist() == [60, 60, 0]
    assert result.values["step7[image]"][11, 11].tolist() == [0, 0, 0]
    assert len(result.images) == 4
    np.testing.assert_array_equal(result.images[1], function_case.images["step6[image]"])
    inpainted, region = result.images[0], function_case.inpaint_region
    assert inpainted.shape == (16, 16, 3) and inpainted.dtype == np.uint8
    np.testing.assert_array_equal(inpainted[region == 0], function_case.image[region == 0])
    assert (inpainted != function_case.image).any()
    direct = fastinpaint(BrickContext(), image=function_case.image, mask=function_case.masks["step4[mask]"])
    np.testing.assert_array_equal(inpainted, direct["image"])
    score = result.values["step5[score]"]
    assert isinstance(score, float) and function_case.hole_pixels / 256 / 0.4 <= score <= 1.0
    assert result.seconds >= result.brick_seconds > 0


def test_only_steps_the_result_needs_run(recording_registry):
    reg, calls = recording_registry()
    wf = W(
        S(1, "SOS", {"image": "init[image]"}, {"mask": "step1[mask]"}),
        S(2, "BBOX", {"mask": "step1[mask]"}, {"mask": "step2[mask]"}),
        S(3, "FASTINPAINT", {"image": "init[image]", "mask": "step1[mask]"}, {"image": "step3[image]"}),
        S(4, "ENV", {"image": "init[image]", "prompt": "make it night"}, {"image": "step4[image]"}),
        result="[step3[image]]",
    )
    result = run_workflow(wf, IMAGE, registry=reg)
    assert calls == ["SOS", "FASTINPAINT"]
    assert [r.step for r in result.steps] == [1, 3]
    assert [(w.step, w.code) for w in result.warnings] == [(2, "unused_step"), (4, "unused_step")]
    assert sorted(result.values) == ["init[image]", "step1[mask]", "step3[image]"]


def test_model_brick_without_a_model_fails_clearly():
    wf = W(
        S(1, "RES", {"image": "init[image]", "prompt": "dog"}, {"mask": "step1[mask]"}),
        S(2, "FASTINPAINT", {"image": "init[image]", "mask": "step1[mask]"}, {"image": "step2[image]"}),
        result="[step2[image]]",
    )
    with pytest.raises(BrickUnavailableError) as info:
        run_workflow(wf, IMAGE)
    assert str(info.value) == "step 1 (RES): no model configured for RES"
    assert (info.value.step, info.value.brick) == (1, "RES")
    assert isinstance(info.value, ExecutionError)


def test_aliases_run_the_canonical_brick_and_bricks_get_the_context(recording_registry):
    seen = {}

    def fill(ctx, image, mask, prompt, preimage=None):
        seen.update(seed=ctx.seed, prompt=prompt, preimage=preimage, mask=mask.copy())
        return {"image": np.full_like(image, 7)}

    reg, calls = recording_registry({"FILL": fill})
    wf = W(
        BBOX1,
        S(
            2,
            "FLUX-FILL",
            {"image": "init[image]", "mask": "step1[mask]", "prompt": "cat", "preimage": None},
            {"image": "step2[image]"},
        ),
        result="[step2[image]]",
    )
    result = Executor(reg, BrickContext(seed=42)).run(wf, IMAGE, MASK)
    assert calls == ["BBOX", "FILL"]
    assert seen["seed"] == 42 and seen["prompt"] == "cat" and seen["preimage"] is None
    np.testing.assert_array_equal(seen["mask"], MASK)  # BBOX of a square is the square
    np.testing.assert_array_equal(result.images[0], np.full_like(IMAGE, 7))
    assert [(r.step, r.brick) for r in result.steps] == [(1, "BBOX"), (2, "FILL")]


@pytest.mark.parametrize(
    "impl, exc_type, message",
    [
        (lambda ctx, **kw: 1 / 0, ExecutionError, "step 2 (FASTINPAINT): ZeroDivisionError: division by zero"),
        (
            lambda ctx, **kw: (_ for _ in ()).throw(MemoryError()),
            ExecutionError,
            "step 2 (FASTINPAINT): ran out of memory",
        ),
        (lambda ctx, **kw: [1, 2], ExecutionError, "step 2 (FASTINPAINT): returned list, not a dict of outputs"),
        (
            lambda ctx, **kw: {"image": IMAGE},
            ExecutionError,
            "step 2 (FASTINPAINT): did not produce its 'score' output",
        ),
        (
            lambda ctx, **kw: {"image": "pixels", "score": 0.5},
            ExecutionError,
            "step 2 (FASTINPAINT): output 'image' must be a uint8 image array, got str",
        ),
        (
            lambda ctx, **kw: {"image": IMAGE[:, :, 0], "score": 0.5},
            ExecutionError,
            "step 2 (FASTINPAINT): output 'image' must be HxWx3 (RGB) or HxWx4 (RGBA), got shape (16, 16)",
        ),
        (
            lambda ctx, **kw: {"image": IMAGE, "score": "high"},
            ExecutionError,
            "step 2 (FASTINPAINT): output 'score' must be a finite number, got 'high'",
        ),
        (
            lambda ctx, **kw: {"image": np.zeros((64, 64, 3), np.uint8), "score": 0.5},
            LimitExceededError,
            "step 2 (FASTINPAINT): output 'image' would be 64x64 pixels, above the bound (1024 pixels, 8192 per side)",
        ),
        (
            lambda ctx, **kw: (_ for _ in ()).throw(ExecutionError("model crashed")),
            ExecutionError,
            "step 2 (FASTINPAINT): model crashed",
        ),
        (
            lambda ctx, **kw: (_ for _ in ()).throw(BrickUnavailableError("weights missing")),
            BrickUnavailableError,
            "step 2 (FASTINPAINT): weights missing",
        ),
    ],
)
def test_brick_failures_name_the_step_and_brick(recording_registry, impl, exc_type, message):
    reg, _ = recording_registry({"FASTINPAINT": impl})
    wf = W(BBOX1, INPAINT2, result="[step2[image]]")
    with pytest.raises(ExecutionError) as info:
        Executor(reg, BrickContext(limits=Limits(max_pixels=1024))).run(wf, IMAGE, MASK)
    assert type(info.value) is exc_type
    assert str(info.value) == message
    assert (info.value.step, info.value.brick) == (2, "FASTINPAINT")


def test_an_execution_error_that_names_its_step_is_kept(recording_registry):
    err = ExecutionError("inner failure", step=9, brick="X")
    reg, _ = recording_registry({"FASTINPAINT": lambda ctx, **kw: (_ for _ in ()).throw(err)})
    with pytest.raises(ExecutionError) as info:
        run_workflow(W(BBOX1, INPAINT2, result="[step2[image]]"), IMAGE, MASK, registry=reg)
    assert info.value is err


def test_mask_outputs_are_normalised(recording_registry):
    reg, _ = recording_registry({"SOS": lambda ctx, image: {"mask": np.eye(16, dtype=bool), "image": image}})
    wf = W(
        S(1, "SOS", {"image": "init[image]"}, {"mask": "step1[mask]"}),
        S(2, "FASTINPAINT", {"image": "init[image]", "mask": "step1[mask]"}, {"image": "step2[image]"}),
        result="[step2[image]]",
    )
    result = run_workflow(wf, IMAGE, registry=reg)
    assert result.values["step1[mask]"].dtype == np.uint8
    np.testing.assert_array_equal(result.values["step1[mask]"], np.eye(16, dtype=np.uint8) * 255)


def test_invalid_workflows_run_nothing(recording_registry):
    reg, calls = recording_registry()
    wf = W(
        BBOX1,
        S(2, "RESIZE", {"mask": "step1[mask]", "ratio": 1e6}, {"mask": "step2[mask]"}),
        S(3, "FASTINPAINT", {"image": "init[image]", "mask": "step2[mask]"}, {"image": "step3[image]"}),
        result="[step3[image]]",
    )
    with pytest.raises(WorkflowValidationError) as info:
        run_workflow(wf, IMAGE, MASK, registry=reg)
    assert [(i.step, i.field, i.code) for i in info.value.issues] == [(2, "input.ratio", "out_of_range")]
    assert calls == []


def test_init_mask_requires_a_mask_and_the_mask_must_fit(recording_registry):
    reg, calls = recording_registry()
    wf = W(BBOX1, INPAINT2, result="[step2[image]]")
    with pytest.raises(WorkflowValidationError) as info:
        run_workflow(wf, IMAGE, None, registry=reg)
    assert [(i.step, i.code) for i in info.value.issues] == [(1, "no_mask")]
    with pytest.raises(WorkflowError) as info:
        run_workflow(wf, IMAGE, np.zeros((8, 16), np.uint8), registry=reg)
    assert str(info.value) == "init[mask]: the mask is 16x8 but the image is 16x16"
    assert calls == []
    result = run_workflow(wf, IMAGE, MASK > 0, registry=reg)  # a bool mask is accepted
    np.testing.assert_array_equal(result.values["init[mask]"], MASK)


def test_input_image_bounds():
    wf = W(S(1, "RESIZE", {"image": "init[image]", "ratio": 2}, {"image": "step1[image]"}), result="[step1[image]]")
    with pytest.raises(LimitExceededError, match=r"the input image would be 16x16 pixels, above the bound"):
        Executor(context=BrickContext(limits=Limits(max_pixels=100))).run(wf, IMAGE)
    with pytest.raises(TypeError, match="the input image must be a uint8 image array"):
        run_workflow(wf, IMAGE.astype(np.float32))
    with pytest.raises(LimitExceededError, match=r"step 1 \(RESIZE\): the zoomed image would be 32x32 pixels"):
        Executor(context=BrickContext(limits=Limits(max_pixels=16 * 16))).run(wf, IMAGE)


def test_masks_and_values_in_the_result_are_dropped():
    wf = W(BBOX1, INPAINT2, result="[step1[mask], step2[score], step2[image]]")
    result = run_workflow(wf, IMAGE, MASK)
    assert len(result.images) == 1 and result.images[0].shape == (16, 16, 3)
    assert [(w.field, w.code) for w in result.warnings] == [("result", "mask_in_result"), ("result", "value_in_result")]


def test_init_image_as_the_result_runs_nothing(recording_registry):
    reg, calls = recording_registry()
    result = run_workflow(W(result="[init[image]]"), IMAGE, registry=reg)
    assert calls == [] and result.steps == []
    assert result.images[0] is result.values["init[image]"]
    np.testing.assert_array_equal(result.images[0], IMAGE)


# ----------------------------------------------------------------------------------- values, limits, errors


def test_as_mask_normalises_every_mask_like_array():
    expected = np.array([[0, 255], [255, 0]], np.uint8)
    u8 = np.uint8
    for arr in (
        np.array([[0, 255], [255, 0]], u8),
        np.array([[0, 1], [1, 0]], u8),
        np.array([[0, 200], [128, 127]], u8),
        np.array([[False, True], [True, False]]),
        np.array([[0.0, 0.9], [0.6, 0.2]]),
        np.array([[0.0, 255.0], [200.0, 3.0]]),
        np.array([[[0], [255]], [[255], [0]]], u8),
        np.array([[0, 300], [128, -5]], np.int32),
    ):
        out = as_mask(arr)
        assert out.dtype == np.uint8
        np.testing.assert_array_equal(out, expected, err_msg=str(arr))
    np.testing.assert_array_equal(as_mask(np.zeros((2, 3), np.uint8)), np.zeros((2, 3), np.uint8))
    with pytest.raises(TypeError, match=r"a Mask must be a 2-D array, got shape \(2, 2, 3\)"):
        as_mask(np.zeros((2, 2, 3), np.uint8))
    with pytest.raises(TypeError, match="a Mask must be numeric, got dtype <U1"):
        as_mask(np.array([["a", "b"]]))


def test_rgb_check_value_and_kind_of():
    rgba = np.array([[[200, 100, 0, 128], [1, 2, 3, 255]]], np.uint8)
    np.testing.assert_array_equal(rgb(rgba), [[[227, 177, 127], [1, 2, 3]]])
    np.testing.assert_array_equal(rgb(rgba, background=0), [[[100, 50, 0], [1, 2, 3]]])
    assert rgb(IMAGE) is IMAGE
    assert check_value(Kind.FLOAT, 3, "x") == 3.0 and type(check_value(Kind.FLOAT, 3, "x")) is float
    assert check_value(Kind.STR, "dog", "x") == "dog"
    for kind, value, message in [
        (Kind.FLOAT, True, "x must be a finite number, got True"),
        (Kind.FLOAT, float("nan"), "x must be a finite number, got nan"),
        (Kind.STR, 3, "x must be a string, got int"),
        (Kind.MASK, [[1]], "x must be a mask array, got list"),
        (Kind.IMAGE, np.zeros((0, 4, 3), np.uint8), "x must be HxWx3 (RGB) or HxWx4 (RGBA), got shape (0, 4, 3)"),
    ]:
        with pytest.raises(TypeError) as info:
            check_value(kind, value, "x")
        assert str(info.value) == message
    assert [kind_of(v) for v in (IMAGE, MASK, "s", 1.5, 2, True, None, np.zeros((2, 2, 2)))] == [
        Kind.IMAGE,
        Kind.MASK,
        Kind.STR,
        Kind.FLOAT,
        Kind.FLOAT,
        None,
        None,
        None,
    ]


def test_limits_and_error_types():
    limits = Limits(max_pixels=100, max_side=20)
    limits.check_size(10, 10)
    for h, w, message in [
        (0, 5, "image would be 5x0, which is empty"),
        (11, 10, "image would be 10x11 pixels, above the bound (100 pixels, 20 per side)"),
        (1, 21, "image would be 21x1 pixels, above the bound (100 pixels, 20 per side)"),
    ]:
        with pytest.raises(LimitExceededError) as info:
            limits.check_size(h, w)
        assert str(info.value) == message and info.value.step is None
    err = WorkflowError("plain message")
    assert [str(i) for i in err.issues] == ["workflow: plain message"] and str(err) == "workflow: plain message"
    assert str(WorkflowError([])) == "invalid workflow"
    assert str(ExecutionError("boom", step=3, brick="RES")) == "step 3 (RES): boom"
    assert issubclass(BrickUnavailableError, ExecutionError) and issubclass(LimitExceededError, ExecutionError)
    assert issubclass(WorkflowValidationError, WorkflowError) and issubclass(WorkflowError, ValueError)


# ------------------------------------------------------------------------------------------ run_batch / run_bounded


def _counting_registry():
    """A registry whose BRIGHTNESS brick records each call, with a ``batch`` implementation recording each batch."""
    from lego_edit.bricks.registry import default_registry

    reg = default_registry(plugins=False)
    single = reg.implementation("BRIGHTNESS")
    calls = {"single": 0, "batches": []}

    def one(ctx, **inputs):
        calls["single"] += 1
        return single(ctx, **inputs)

    def batch(ctx, many):
        calls["batches"].append(len(many))
        return [ValueError("no such ratio") if c["ratio"] == 0.99 else single(ctx, **c) for c in many]

    one.batch = batch
    reg.bind("BRIGHTNESS", one, source="test")
    return reg, calls


def _brighten(ratio, steps=1):
    chain = [
        S(
            k,
            "BRIGHTNESS",
            {"image": "init[image]" if k == 1 else f"step{k - 1}[image]", "ratio": ratio},
            {"image": f"step{k}[image]"},
        )
        for k in range(1, steps + 1)
    ]
    return W(*chain, result=f"[step{steps}[image]]")


def test_run_batch_gives_each_workflow_what_run_gives_and_batches_each_round():
    reg, calls = _counting_registry()
    ex = Executor(reg)
    wfs = [
        _brighten(0.5),
        _brighten(0.7, steps=2),
        _brighten(0.99),
        W(BBOX1, INPAINT2, result="[step2[image]]"),
        _brighten(0.8),
    ]
    images = [IMAGE] * 5
    masks = [None, None, None, MASK, None]
    out = ex.run_batch(wfs, images, masks)
    # round 1: four BRIGHTNESS calls in one batch (the BBOX workflow's step runs alone); round 2: one call alone
    assert calls["batches"] == [4] and calls["single"] == 1
    for k in (0, 1, 4):
        np.testing.assert_array_equal(out[k].images[0], ex.run(wfs[k], IMAGE).images[0])
    assert isinstance(out[2], ExecutionError) and "no such ratio" in str(out[2]) and out[2].step == 1
    np.testing.assert_array_equal(out[3].images[0], ex.run(wfs[3], IMAGE, MASK).images[0])
    assert [r.step for r in out[1].steps] == [1, 2]


def test_run_batch_runs_a_repeated_model_call_once():
    """A group's answers share leading steps on one image: a model brick's call with the same inputs as an earlier
    call of the batch (this round or an earlier one) is answered with its outputs, and every workflow still gets
    what it would get alone. Function bricks are not deduplicated (cheaper to run than to hash)."""
    from lego_edit.bricks.registry import default_registry

    reg = default_registry(plugins=False)
    runs: list[str] = []

    def res(ctx, image, prompt):
        runs.append(prompt)
        mask = np.zeros(image.shape[:2], np.uint8)
        mask[: len(prompt) % 16, : int(image.mean()) % 16] = 255
        return {"mask": mask, "image": np.dstack([image, mask])}

    res.batch = lambda ctx, many: [res(ctx, **c) for c in many]
    reg.bind("RES", res, source="test")
    other = np.full((16, 16, 3), 30, np.uint8)

    def segment_then_fill(prompt, ratio, first_brighten=False):
        image = "step1[image]" if first_brighten else "init[image]"
        steps = [S(1, "BRIGHTNESS", {"image": "init[image]", "ratio": 0.5}, {"image": "step1[image]"})]
        k = 2 if first_brighten else 1
        steps = steps if first_brighten else []
        steps += [
            S(k, "RES", {"image": image, "prompt": prompt}, {"mask": f"step{k}[mask]"}),
            S(k + 1, "BRIGHTNESS", {"image": image, "ratio": ratio}, {"image": f"step{k + 1}[image]"}),
            S(k + 2, "FASTINPAINT", {"image": f"step{k + 1}[image]", "mask": f"step{k}[mask]"},
              {"image": f"step{k + 2}[image]", "score": f"step{k + 2}[score]"}),
        ]  # fmt: skip
        return W(*steps, result=f"[step{k + 2}[image]]")

    wfs = [
        segment_then_fill("red circle", 0.6),
        segment_then_fill("red circle", 0.7),
        segment_then_fill("red circle", 0.6),
        segment_then_fill("blue square", 0.6),
        segment_then_fill("red circle", 0.6),
        segment_then_fill("red circle", 0.8, first_brighten=True),  # BRIGHTNESS 0.5 keeps the image: round 2's RES
    ]
    images = [IMAGE, IMAGE, IMAGE, IMAGE, other, IMAGE]
    ex = Executor(reg)
    out = ex.run_batch(wfs, images)
    assert sorted(runs) == ["blue square", "red circle", "red circle"]  # IMAGE and `other` once each
    assert ex.reused_calls == 3
    runs.clear()
    for wf, img, got in zip(wfs, images, out):
        alone = Executor(reg).run(wf, img)
        np.testing.assert_array_equal(got.images[0], alone.images[0])
    assert len(runs) == len(wfs)


def test_run_batch_never_answers_one_brick_with_anothers_outputs():
    """SOS and CMI-PRED's caption mode both take just the image: in one round they are different calls."""
    from lego_edit.bricks.registry import default_registry

    reg = default_registry(plugins=False)
    runs: list[str] = []

    def sos(ctx, image):
        runs.append("SOS")
        mask = np.zeros(image.shape[:2], np.uint8)
        mask[:4] = 255
        return {"mask": mask, "image": np.dstack([image, mask])}

    def cmi(ctx, image):
        runs.append("CMI-PRED")
        return {"caption": "a grey square"}

    def env(ctx, image, prompt):
        runs.append("ENV")
        return {"image": np.full_like(image, len(prompt))}

    for name, fn in (("SOS", sos), ("CMI-PRED", cmi), ("ENV", env)):
        fn.batch = lambda ctx, many, fn=fn: [fn(ctx, **c) for c in many]
        reg.bind(name, fn, source="test")
    cut = W(S(1, "SOS", {"image": "init[image]"}, {"image": "step1[image]"}), result="[step1[image]]")
    night = W(
        S(1, "CMI-PRED", {"image": "init[image]"}, {"caption": "step1[caption]"}),
        S(2, "ENV", {"image": "init[image]", "prompt": "step1[caption]"}, {"image": "step2[image]"}),
        result="[step2[image]]",
    )
    ex = Executor(reg)
    out = ex.run_batch([cut, night, cut], [IMAGE] * 3)
    assert sorted(runs) == ["CMI-PRED", "ENV", "SOS"] and ex.reused_calls == 1
    assert out[0].images[0].shape[2] == 4 and np.all(out[1].images[0] == len("a grey square"))
    np.testing.assert_array_equal(out[0].images[0], out[2].images[0])


def test_run_batch_records_invalid_workflows_and_bad_images_without_stopping():
    reg, _ = _counting_registry()
    ex = Executor(reg)
    needs_mask = W(BBOX1, INPAINT2, result="[step2[image]]")
    out = ex.run_batch([needs_mask, _brighten(0.5), _brighten(0.5)], [IMAGE, np.zeros((3, 3), np.uint8), IMAGE])
    assert isinstance(out[0], WorkflowValidationError)  # init[mask] without a mask
    assert isinstance(out[1], (TypeError, ValueError))  # not an HxWx3 image
    assert out[2].images[0].shape == IMAGE.shape


def test_run_bounded_reruns_an_overrunning_batch_one_workflow_at_a_time():
    import time

    from lego_edit.bricks.registry import default_registry
    from lego_edit.workflow.execute import run_bounded

    reg = default_registry(plugins=False)
    brighten = reg.implementation("BRIGHTNESS")

    def slow_at_one(ctx, image, ratio):
        if ratio == 1:
            time.sleep(3)
        return brighten(ctx, image=image, ratio=ratio)

    reg.bind("BRIGHTNESS", slow_at_one, source="test")
    t0 = time.perf_counter()
    out = run_bounded(Executor(reg), [_brighten(0.5), _brighten(1), _brighten(0.7)], [IMAGE] * 3, seconds=0.3)
    assert time.perf_counter() - t0 < 2.5
    assert not isinstance(out[0], Exception) and not isinstance(out[2], Exception)
    assert isinstance(out[1], Exception) and "exceeded" in str(out[1])
