"""validate_workflow / check_workflow: every check, every error at once, named by step and field."""

from __future__ import annotations

import pytest

from lego_edit.workflow import (
    Limits,
    Ref,
    Workflow,
    WorkflowError,
    WorkflowValidationError,
    check_workflow,
    parse_workflow,
    validate_workflow,
)


def S(n, model, inputs, outputs):
    return {"step": n, "model": model, "input": inputs, "output": outputs}


def W(*steps, result):
    return parse_workflow({"process": "test", "pipeline": [*steps, {"result": result}]})


def errors(report):
    return [(i.step, i.field, i.code) for i in report.errors]


def warnings(report):
    return [(i.step, i.field, i.code) for i in report.warnings]


def one_error(report):
    assert len(report.errors) == 1, report.errors
    return report.errors[0]


RES1 = S(1, "RES", {"image": "init[image]", "prompt": "dog"}, {"mask": "step1[mask]", "image": "step1[image]"})


# ------------------------------------------------------------------------------------------ valid workflows


def test_valid_workflow_report(registry):
    wf = W(
        RES1,
        S(
            2,
            "FASTINPAINT",
            {"image": "init[image]", "mask": "step1[mask]"},
            {"image": "step2[image]", "score": "step2[score]"},
        ),
        S(
            3,
            "INPAINT",
            {"image": "init[image]", "mask": "step1[mask]", "preimage": "step2[image]", "score": "step2[score]"},
            {"image": "step3[image]"},
        ),
        result="[step1[image], step3[image]]",
    )
    report = check_workflow(wf, registry)
    assert report.ok and report.errors == [] and report.warnings == []
    assert report.needed == {1, 2, 3}
    assert report.result == [Ref("image", 1), Ref("image", 3)]
    assert [(p.step.number, p.spec.name, p.mode.produces) for p in report.plan] == [
        (1, "RES", ("mask", "image")),
        (2, "FASTINPAINT", ("image", "score")),
        (3, "INPAINT", ("image",)),
    ]
    assert report.plan[1].stored == {"step2[image]": "Image", "step2[score]": "Float"}


@pytest.mark.parametrize("name", ["example2.json", "example3.json", "example4.json"])
def test_published_examples_2_3_4_validate(registry, published_dir, name):
    wf = parse_workflow((published_dir / name).read_text(encoding="utf-8"))
    report = check_workflow(wf, registry, has_mask=True)
    assert report.errors == [] and report.warnings == []
    assert report.needed == set(range(1, len(wf.steps) + 1))


def test_published_example1_fixed_fails_with_named_errors(registry, published_dir):
    wf = parse_workflow((published_dir / "example1_fixed.json").read_text(encoding="utf-8"))
    with pytest.raises(WorkflowValidationError) as info:
        check_workflow(wf, registry)
    issues = info.value.issues
    assert [(i.step, i.field, i.code) for i in issues] == [
        (2, "output.mask", "unknown_output"),
        (3, "input.image", "unknown_output"),  # follows from step 2's slip: step2[image] was never stored
        (3, "input.ratio", "unknown_input"),
        (4, "input.image", "unknown_output"),  # follows from step 3's slip: caption mode gives no image/mask
        (4, "input.mask", "unknown_output"),
        (4, "input.preimage", "unknown_output"),
    ]
    assert str(issues[0]) == "step 2, output.mask: FILL has no output 'mask' (outputs: image)"
    assert str(issues[2]) == (
        "step 3, input.ratio: CMI-PRED has no input 'ratio' (inputs: image, left_ratio, "
        "right_ratio, top_ratio, bottom_ratio)"
    )
    assert str(issues[1]) == (
        "step 3, input.image: step2[image] is not available: step 2 stores it from output 'mask', which FILL lacks"
    )
    assert "step 2, output.mask: FILL has no output 'mask'" in str(info.value)


def test_flux_aliases_and_case_are_accepted(registry):
    wf = W(
        S(1, "sos", {"image": "init[image]"}, {"mask": "step1[mask]"}),
        S(2, "inverse", {"mask1": None, "mask2": "step1[mask]"}, {"mask": "step2[mask]"}),
        S(
            3,
            "FLUX-CBG",
            {"image": "init[image]", "mask": "step2[mask]", "prompt": "a beach"},
            {"image": "step3[image]"},
        ),
        S(4, "Flux-Env", {"image": "step3[image]", "prompt": "make it night"}, {"image": "step4[image]"}),
        result="[step4[image]]",
    )
    report = check_workflow(wf, registry)
    assert [p.spec.name for p in report.plan] == ["SOS", "INVERSE", "CBG", "ENV"]
    assert report.errors == []


# ------------------------------------------------------------------------------------------ each check


@pytest.mark.parametrize(
    "name, message",
    [
        ("RESS", "unknown brick 'RESS' (did you mean RES or RESIZE?)"),
        ("MASKSEG", "unknown brick 'MASKSEG' (did you mean MASK-SEG?)"),
        ("flux-fil", "unknown brick 'flux-fil' (did you mean FLUX-FILL or FLUX-STYLE?)"),
        # a brick named in the published prompt's CBG constraint that does not exist
        ("MASK-INVERSE", "unknown brick 'MASK-INVERSE' (did you mean INVERSE or MASK-SEG?)"),
        ("TELEPORT", "unknown brick 'TELEPORT'"),
    ],
)
def test_unknown_brick_with_suggestion(registry, name, message):
    wf = W(S(1, name, {"image": "init[image]"}, {"image": "step1[image]"}), result="[step1[image]]")
    issue = one_error(validate_workflow(wf, registry))
    assert (issue.step, issue.field, issue.code, issue.message) == (1, "model", "unknown_brick", message)


def test_unknown_brick_does_not_cascade(registry):
    wf = W(
        S(1, "SEGMENT", {"image": "init[image]"}, {"mask": "step1[mask]"}),
        S(2, "BBOX", {"mask": "step1[mask]"}, {"mask": "step2[mask]"}),
        S(3, "FASTINPAINT", {"image": "init[image]", "mask": "step2[mask]"}, {"image": "step3[image]"}),
        result="[step3[image]]",
    )
    assert errors(validate_workflow(wf, registry)) == [(1, "model", "unknown_brick")]


def test_missing_required_input(registry):
    wf = W(S(1, "FASTINPAINT", {"image": "init[image]"}, {"image": "step1[image]"}), result="[step1[image]]")
    issue = one_error(validate_workflow(wf, registry))
    assert (issue.step, issue.field, issue.code) == (1, "input", "bad_inputs")
    assert issue.message == "missing required input(s) mask"
    wf = W(
        S(1, "FASTINPAINT", {"image": "init[image]", "mask": None}, {"image": "step1[image]"}), result="[step1[image]]"
    )  # null counts as not given
    assert one_error(validate_workflow(wf, registry)).message == "missing required input(s) mask"


def test_unknown_input_names_step_and_field(registry):
    wf = W(
        S(1, "SOS", {"image": "init[image]", "prompt": "dog"}, {"mask": "step1[mask]", "image": "step1[image]"}),
        result="[step1[image]]",
    )
    issue = one_error(validate_workflow(wf, registry))
    assert (issue.step, issue.field, issue.code) == (1, "input.prompt", "unknown_input")
    assert str(issue) == "step 1, input.prompt: SOS has no input 'prompt' (inputs: image)"


def test_unknown_output_names_step_and_field(registry):
    wf = W(
        S(
            1,
            "FILL",
            {"image": "init[image]", "mask": "init[mask]", "prompt": "cat"},
            {"image": "step1[image]", "mask": "step1[mask]"},
        ),
        result="[step1[image]]",
    )
    issue = one_error(validate_workflow(wf, registry))
    assert (issue.step, issue.field, issue.code) == (1, "output.mask", "unknown_output")
    assert issue.message == "FILL has no output 'mask' (outputs: image)"


def test_inputs_that_fit_no_mode(registry):
    wf = W(
        S(1, "INVERSE", {"mask2": "init[mask]", "image1": "init[image]"}, {"mask": "step1[mask]"}),
        S(2, "CMI-PRED", {"image": "init[image]", "left_ratio": 2}, {"caption": "step2[caption]"}),
        S(3, "RESIZE", {"mask": "init[mask]", "image": "init[image]", "ratio": 2}, {"image": "step3[image]"}),
        S(4, "BBOX", {"mask": "step1[mask]"}, {"mask": "step4[mask]"}),
        S(5, "FASTINPAINT", {"image": "init[image]", "mask": "step4[mask]"}, {"image": "step5[image]"}),
        result="[step5[image], step3[image]]",
    )
    report = validate_workflow(wf, registry)
    assert errors(report) == [(1, "input", "bad_inputs"), (2, "input", "bad_inputs"), (3, "input", "bad_inputs")]
    assert report.errors[0].message == (
        "INVERSE takes [mask2 (+ optional mask1)] or [image1, image2] as non-null inputs; got [image1, mask2]"
    )
    assert report.errors[1].message == (
        "CMI-PRED takes [image] or [image, left_ratio, right_ratio, top_ratio, "
        "bottom_ratio] as non-null inputs; got [image, left_ratio]"
    )
    assert report.errors[2].message == (
        "RESIZE takes [mask, ratio] or [image, ratio] as non-null inputs; got [image, mask, ratio]"
    )


@pytest.mark.parametrize(
    "ref, code, message",
    [
        ("step1[image]", "self_reference", "step1[image] refers to the step's own output"),
        ("step2[mask]", "bad_reference", "step2[mask] refers to step 2, which comes later"),
        ("step9[mask]", "bad_reference", "step9[mask] refers to step 9, which does not exist"),
        ("init[foo]", "bad_reference", "init[foo] is not an initial input (there are init[image] and init[mask])"),
    ],
)
def test_bad_references(registry, ref, code, message):
    wf = W(
        S(1, "BBOX", {"mask": ref}, {"mask": "step1[mask]"}),
        S(2, "BBOX", {"mask": "init[mask]"}, {"mask": "step2[mask]"}),
        S(3, "FASTINPAINT", {"image": "init[image]", "mask": "step2[mask]"}, {"image": "step3[image]"}),
        result="[step3[image]]",
    )
    issue = one_error(validate_workflow(wf, registry))
    assert (issue.step, issue.field, issue.code, issue.message) == (1, "input.mask", code, message)


def test_reference_to_an_output_the_brick_does_not_produce_or_the_step_did_not_store(registry):
    wf = W(
        S(1, "RES", {"image": "init[image]", "prompt": "dog"}, {"mask": "step1[mask]"}),
        S(2, "FASTINPAINT", {"image": "init[image]", "mask": "step1[caption]"}, {"image": "step2[image]"}),
        S(3, "FASTINPAINT", {"image": "step1[image]", "mask": "step1[mask]"}, {"image": "step3[image]"}),
        result="[step2[image], step3[image]]",
    )
    report = validate_workflow(wf, registry)
    assert errors(report) == [(2, "input.mask", "unknown_output"), (3, "input.image", "unknown_output")]
    assert report.errors[0].message == "step1[caption]: RES produces no 'caption' (it produces mask, image)"
    assert report.errors[1].message == "step1[image] is not stored by step 1 (it stores step1[mask])"


def test_outputs_a_mode_does_not_produce(registry):
    wf = W(
        S(
            1,
            "CMI-PRED",
            {"image": "init[image]"},
            {"caption": "step1[caption]", "image": "step1[image]", "mask": "step1[mask]"},
        ),
        S(
            2,
            "FILL",
            {"image": "step1[image]", "mask": "step1[mask]", "prompt": "step1[caption]"},
            {"image": "step2[image]"},
        ),
        result="[step2[image]]",
    )
    report = validate_workflow(wf, registry)
    assert errors(report) == [(2, "input.image", "unknown_output"), (2, "input.mask", "unknown_output")]
    assert report.errors[0].message == (
        "step1[image] is not available: in step 1, CMI-PRED called this way produces no 'image'"
    )
    assert warnings(report) == [(1, "output.image", "not_produced"), (1, "output.mask", "not_produced")]


def test_type_mismatch_mask_where_image_needed(registry):
    wf = W(
        RES1,
        S(2, "FASTINPAINT", {"image": "step1[mask]", "mask": "step1[image]"}, {"image": "step2[image]"}),
        result="[step2[image]]",
    )
    report = validate_workflow(wf, registry)
    assert errors(report) == [(2, "input.image", "type_mismatch"), (2, "input.mask", "type_mismatch")]
    assert report.errors[0].message.endswith("but step1[mask] is a Mask")
    assert report.errors[1].message.endswith("but step1[image] is an Image")


def test_literal_types(registry):
    wf = W(
        S(1, "RES", {"image": "photo.png", "prompt": 3}, {"mask": "step1[mask]", "image": "step1[image]"}),
        S(2, "RESIZE", {"image": "step1[image]", "ratio": "big"}, {"image": "step2[image]"}),
        result="[step2[image]]",
    )
    report = validate_workflow(wf, registry)
    assert errors(report) == [
        (1, "input.image", "type_mismatch"),
        (1, "input.prompt", "type_mismatch"),
        (2, "input.ratio", "type_mismatch"),
    ]
    assert report.errors[0].message == (
        "needs a reference to an Image (such as init[image] or stepN[image]), got the literal 'photo.png'"
    )
    assert report.errors[1].message == "needs a string, got 3.0"
    assert report.errors[2].message == "needs a number, got 'big'"


@pytest.mark.parametrize(
    "ratio, message",
    [
        (5, "5 is outside the allowed range [0.1, 4]"),
        (0.05, "0.05 is outside the allowed range [0.1, 4]"),
        (1e6, "1e+06 is outside the allowed range [0.1, 4]"),
        (-1, "-1 is outside the allowed range [0.1, 4]"),
        ("1e6", "1e+06 is outside the allowed range [0.1, 4]"),
        ("inf", "needs a finite number, got 'inf'"),
        ("nan", "needs a finite number, got 'nan'"),
    ],
)
def test_float_out_of_range(registry, ratio, message):
    wf = W(S(1, "RESIZE", {"image": "init[image]", "ratio": ratio}, {"image": "step1[image]"}), result="[step1[image]]")
    issue = one_error(validate_workflow(wf, registry))
    assert (issue.step, issue.field, issue.message) == (1, "input.ratio", message)
    assert issue.code in ("out_of_range", "type_mismatch")


def test_float_bounds_are_inclusive_and_numeric_strings_are_read(registry):
    wf = W(
        S(1, "RESIZE", {"image": "init[image]", "ratio": 4}, {"image": "step1[image]"}),
        S(2, "RESIZE", {"image": "step1[image]", "ratio": "0.1"}, {"image": "step2[image]"}),
        S(
            3,
            "FASTINPAINT",
            {"image": "step2[image]", "mask": "init[mask]"},
            {"image": "step3[image]", "score": "step3[score]"},
        ),
        S(
            4,
            "INPAINT",
            {"image": "init[image]", "mask": "init[mask]", "preimage": "step3[image]", "score": 1.0},
            {"image": "step4[image]"},
        ),
        result="[step4[image]]",
    )
    report = check_workflow(wf, registry)
    assert report.errors == []
    assert wf.steps[1].inputs["ratio"] == 0.1  # the numeric string became the number the brick receives
    assert warnings(report) == []
    assert report.needed == {1, 2, 3, 4}


def test_string_length_bound(registry):
    wf = W(
        S(1, "ENV", {"image": "init[image]", "prompt": "x" * 2001}, {"image": "step1[image]"}), result="[step1[image]]"
    )
    issue = one_error(validate_workflow(wf, registry))
    assert (issue.step, issue.field, issue.code) == (1, "input.prompt", "too_long")
    assert issue.message == "the string is 2001 characters long, above the 2000 bound"
    assert validate_workflow(wf, registry, limits=Limits(max_string_chars=5000)).ok


def test_duplicate_step_numbers_and_stored_names(registry):
    wf = W(
        S(1, "SOS", {"image": "init[image]"}, {"mask": "step1[mask]"}),
        S(1, "BBOX", {"mask": "init[mask]"}, {"mask": "step1[box]"}),
        S(2, "SOS", {"image": "init[image]"}, {"mask": "step2[x]", "image": "step2[x]"}),
        S(3, "FASTINPAINT", {"image": "init[image]", "mask": "step1[mask]"}, {"image": "step3[image]"}),
        result="[step3[image]]",
    )
    report = validate_workflow(wf, registry)
    assert errors(report) == [(1, "step", "duplicate_step"), (2, "output.image", "duplicate_output")]
    assert report.errors[0].message == "step number 1 is used twice"
    assert report.errors[1].message == "step2[x] is stored twice"


def test_too_many_steps(registry):
    steps = [S(n, "BBOX", {"mask": "init[mask]"}, {"mask": f"step{n}[mask]"}) for n in range(1, 18)]
    wf = W(*steps, result="[init[image]]")
    issue = one_error(validate_workflow(wf, registry))
    assert (issue.step, issue.field, issue.code) == (None, "pipeline", "too_many_steps")
    assert issue.message == "the workflow has 17 steps, above the bound of 16"
    assert validate_workflow(wf, registry, limits=Limits(max_steps=17)).errors == []
    issue = one_error(validate_workflow(W(*steps[:3], result="[init[image]]"), registry, limits=Limits(max_steps=2)))
    assert issue.message == "the workflow has 3 steps, above the bound of 2"


def test_empty_result_and_result_without_images(registry):
    empty = Workflow(process="", steps=[], result=[])
    assert errors(validate_workflow(empty, registry)) == [(None, "pipeline", "empty"), (None, "result", "empty_result")]
    masks_only = W(S(1, "SOS", {"image": "init[image]"}, {"mask": "step1[mask]"}), result="[step1[mask]]")
    report = validate_workflow(masks_only, registry)
    assert errors(report) == [(None, "result", "empty_result")]
    assert report.errors[0].message == "the result holds no image"
    assert warnings(report) == [(None, "result", "mask_in_result")]
    caption = W(
        S(1, "CMI-PRED", {"image": "init[image]"}, {"caption": "step1[caption]"}),
        result="[init[image], step1[caption]]",
    )
    report = validate_workflow(caption, registry)
    assert report.errors == [] and report.result == [Ref("image")]
    assert warnings(report) == [(None, "result", "value_in_result"), (1, None, "unused_step")]


def test_init_mask_needs_a_mask(registry):
    wf = W(
        S(1, "MASK-SEG", {"image": "init[image]", "mask": "init[mask]"}, {"image": "step1[image]"}),
        result="[step1[image]]",
    )
    issue = one_error(validate_workflow(wf, registry, has_mask=False))
    assert (issue.step, issue.field, issue.code) == (1, "input.mask", "no_mask")
    assert issue.message == "init[mask] is used but no mask was given with the image"
    assert validate_workflow(wf, registry, has_mask=True).ok
    assert validate_workflow(wf, registry).ok  # unknown whether a mask comes: allowed
    only_result = W(result="[init[mask]]")
    assert errors(validate_workflow(only_result, registry, has_mask=False)) == [(None, "result", "no_mask")]


def test_unused_steps_are_warnings(registry):
    wf = W(
        S(1, "SOS", {"image": "init[image]"}, {"mask": "step1[mask]"}),
        S(2, "BBOX", {"mask": "step1[mask]"}, {"mask": "step2[mask]"}),
        S(3, "FASTINPAINT", {"image": "init[image]", "mask": "step1[mask]"}, {"image": "step3[image]"}),
        result="[step3[image]]",
    )
    report = check_workflow(wf, registry)
    assert report.needed == {1, 3}
    assert warnings(report) == [(2, None, "unused_step")]
    assert str(report.warnings[0]) == "step 2: step 2 (BBOX) does not contribute to the result and is skipped"


def test_all_errors_are_reported_at_once(registry):
    wf = W(
        S(1, "RESS", {"image": "init[image]", "prompt": "dog"}, {"mask": "step1[mask]"}),
        S(
            2,
            "FASTINPAINT",
            {"image": "init[mask]", "mask": "step3[mask]", "strength": 0.5},
            {"image": "step2[image]", "quality": "step2[quality]"},
        ),
        S(3, "RESIZE", {"image": "step2[image]", "ratio": 1e6}, {"image": "step3[image]"}),
        S(3, "SOS", {"image": "init[image]"}, {"mask": "step3[mask]"}),
        result="[step3[image]]",
    )
    with pytest.raises(WorkflowValidationError) as info:
        check_workflow(wf, registry, has_mask=False)
    err = info.value
    assert isinstance(err, WorkflowError)
    assert [(i.step, i.field, i.code) for i in err.issues] == [
        (1, "model", "unknown_brick"),
        (2, "input.image", "no_mask"),
        (2, "input.mask", "bad_reference"),
        (2, "input.strength", "unknown_input"),
        (2, "output.quality", "unknown_output"),
        (3, "input.ratio", "out_of_range"),
        (3, "step", "duplicate_step"),
    ]
    text = str(err).splitlines()
    assert len(text) == 7
    assert text[0] == "step 1, model: unknown brick 'RESS' (did you mean RES or RESIZE?)"
    assert text[5] == "step 3, input.ratio: 1e+06 is outside the allowed range [0.1, 4]"


def test_default_registry_is_used_when_none_given():
    wf = W(RES1, result="[step1[image]]")
    assert validate_workflow(wf).ok


def test_an_input_outside_the_only_mode(registry):
    from lego_edit.bricks import BrickSpec, Mode, Port
    from lego_edit.workflow import Kind

    registry.register(
        BrickSpec(
            "TINT",
            "edit",
            "Tint the image",
            (Port("image", Kind.IMAGE), Port("hint", Kind.STR)),
            (Port("image", Kind.IMAGE),),
            modes=(Mode(("image",), ("image",)),),
        )
    )
    wf = W(S(1, "TINT", {"image": "init[image]", "hint": "warm"}, {"image": "step1[image]"}), result="[step1[image]]")
    issue = one_error(validate_workflow(wf, registry))
    assert (issue.step, issue.field, issue.code, issue.message) == (
        1,
        "input",
        "bad_inputs",
        "input(s) hint cannot be used here",
    )
