"""parse_workflow: the published format and its slips are accepted; everything else is a WorkflowParseError."""

from __future__ import annotations

import json

import pytest

from lego_edit.workflow import Ref, WorkflowError, WorkflowParseError, parse_workflow
from lego_edit.workflow.parse import MAX_NESTING, MAX_TEXT_CHARS, normalise_json, split_reasoning

STEP1 = {
    "step": 1,
    "model": "RES",
    "input": {"image": "init[image]", "prompt": "dog"},
    "output": {"mask": "step1[mask]", "image": "step1[image]"},
}
STEP2 = {
    "step": 2,
    "model": "FASTINPAINT",
    "input": {"image": "init[image]", "mask": "step1[mask]"},
    "output": {"image": "step2[image]", "score": "step2[score]"},
}
CANONICAL = {"process": "remove the dog", "pipeline": [STEP1, STEP2, {"result": "[step2[image]]"}]}


def parse_error(source) -> WorkflowParseError:
    with pytest.raises(WorkflowParseError) as info:
        parse_workflow(source)
    return info.value


def only_issue(source):
    issues = parse_error(source).issues
    assert len(issues) == 1, issues
    return issues[0]


# --------------------------------------------------------------------------------------------- the format


def test_canonical_workflow_parses_to_steps_refs_and_result():
    wf = parse_workflow(json.dumps(CANONICAL))
    assert wf.process == "remove the dog"
    assert wf.reasoning == ""
    assert [s.number for s in wf.steps] == [1, 2]
    assert wf.bricks() == ["RES", "FASTINPAINT"]
    s1, s2 = wf.steps
    assert s1.inputs == {"image": Ref("image"), "prompt": "dog"}
    assert s1.outputs == {"mask": Ref("mask", 1), "image": Ref("image", 1)}
    assert s2.inputs == {"image": Ref("image"), "mask": Ref("mask", 1)}
    assert s2.references() == [("image", Ref("image")), ("mask", Ref("mask", 1))]
    assert wf.result == [Ref("image", 2)]
    assert wf.step(2) is s2 and wf.step(3) is None


def test_to_dict_and_to_json_round_trip():
    wf = parse_workflow(json.dumps(CANONICAL))
    assert wf.to_dict() == CANONICAL
    assert json.loads(wf.to_json()) == CANONICAL
    assert json.loads(wf.to_json(compact=False)) == CANONICAL
    assert parse_workflow(wf.to_json()).to_dict() == CANONICAL


def test_dict_and_bytes_sources():
    assert parse_workflow(CANONICAL).to_dict() == CANONICAL
    assert parse_workflow(json.dumps(CANONICAL).encode()).to_dict() == CANONICAL
    assert parse_workflow(b"\xef\xbb\xbf" + json.dumps(CANONICAL).encode()).to_dict() == CANONICAL  # UTF-8 BOM
    assert parse_workflow("\ufeff" + json.dumps(CANONICAL)).to_dict() == CANONICAL


def test_ref_parse_and_str():
    assert Ref.parse("init[image]") == Ref("image", None)
    assert Ref.parse(" step12[caption] ") == Ref("caption", 12)
    assert Ref.parse("step[mask]") is None
    assert Ref.parse("stepX[mask]") is None
    assert Ref.parse("dog") is None
    assert str(Ref("mask", 3)) == "step3[mask]" and str(Ref("mask")) == "init[mask]"
    assert Ref("mask").is_init and not Ref("mask", 1).is_init


def test_literals_numbers_and_nulls():
    text = json.dumps(
        {
            "pipeline": [
                {
                    "step": 1,
                    "model": "RESIZE",
                    "input": {"mask": "init[mask]", "image": None, "ratio": 2},
                    "output": {"mask": "step1[mask]", "image": None},
                },
                {
                    "step": "2",
                    "model": "CMI-PRED",
                    "input": {
                        "image": "init[image]",
                        "left_ratio": 1.5,
                        "right_ratio": "1.5",
                        "top_ratio": 1,
                        "bottom_ratio": 1,
                    },
                    "output": {"caption": "step2[caption]"},
                },
                {"result": "[step2[image]]"},
            ]
        }
    )
    wf = parse_workflow(text)
    s1, s2 = wf.steps
    assert s1.inputs == {"mask": Ref("mask"), "image": None, "ratio": 2.0}
    assert type(s1.inputs["ratio"]) is float
    assert s1.outputs == {"mask": Ref("mask", 1), "image": None}
    assert s2.number == 2  # "2" is read as a step number, as the published executor does
    assert s2.inputs["right_ratio"] == "1.5"  # numeric strings stay strings until validation knows the type
    assert wf.process == ""


def test_output_may_be_stored_under_another_key_of_its_own_step():
    wf = parse_workflow(
        {
            "pipeline": [
                {"step": 1, "model": "SOS", "input": {"image": "init[image]"}, "output": {"mask": "step1[subject]"}}
            ],
            "result": "step1[subject]",
        }
    )
    assert wf.steps[0].outputs == {"mask": Ref("subject", 1)}


@pytest.mark.parametrize(
    "result, expected",
    [
        ("[step1[image], step2[image]]", [Ref("image", 1), Ref("image", 2)]),
        ("step2[image]", [Ref("image", 2)]),
        ("['step2[image]']", [Ref("image", 2)]),
        (["step1[image]", "init[image]"], [Ref("image", 1), Ref("image")]),
        ("[ step1[mask] ,step2[image] ]", [Ref("mask", 1), Ref("image", 2)]),
    ],
)
def test_result_forms(result, expected):
    assert parse_workflow({"pipeline": [{"result": result}]}).result == expected


# ------------------------------------------------------------------------------------- the published slips


def test_reasoning_in_think_tags_before_the_json():
    text = "<think>The user wants the dog gone.\nRES, then FASTINPAINT.</think>\n" + json.dumps(CANONICAL)
    wf = parse_workflow(text)
    assert wf.reasoning == "The user wants the dog gone.\nRES, then FASTINPAINT."
    assert wf.to_dict() == CANONICAL


def test_several_think_blocks_and_a_missing_opening_tag():
    assert parse_workflow("<think>a</think> <think>b</think>" + json.dumps(CANONICAL)).reasoning == "a\nb"
    assert parse_workflow("just thinking</think>" + json.dumps(CANONICAL)).reasoning == "just thinking"


def test_braces_inside_reasoning_do_not_confuse_the_parser():
    text = '<think>maybe {"pipeline": []} ... no</think>' + json.dumps(CANONICAL)
    assert parse_workflow(text).to_dict() == CANONICAL


def test_free_text_fence_and_answer_tags():
    fenced = "Here is the workflow:\n```json\n" + json.dumps(CANONICAL, indent=1) + "\n```\nHope it helps."
    wf = parse_workflow(fenced)
    assert wf.reasoning == "Here is the workflow:"
    assert wf.to_dict() == CANONICAL
    assert parse_workflow("<answer>" + json.dumps(CANONICAL) + "</answer>").to_dict() == CANONICAL
    plain = parse_workflow("Plan: segment, then inpaint. " + json.dumps(CANONICAL))
    assert plain.reasoning == "Plan: segment, then inpaint."


def test_trailing_commas_are_accepted():
    text = (
        '{"process": "p", "pipeline": [{"step": 1, "model": "SOS", "input": {"image": "init[image]",},'
        ' "output": {"mask": "step1[mask]", "image": "step1[image]",},}, {"result": "[step1[image]]",},\n],\n}'
    )
    wf = parse_workflow(text)
    assert wf.steps[0].outputs == {"mask": Ref("mask", 1), "image": Ref("image", 1)}
    assert wf.result == [Ref("image", 1)]


def test_top_level_result_outside_the_pipeline():
    obj = {"process": "p", "pipeline": [STEP1, STEP2], "result": "[step2[image]]"}
    wf = parse_workflow(json.dumps(obj))
    assert wf.result == [Ref("image", 2)]
    assert wf.to_dict() == CANONICAL | {"process": "p"}  # written back inside the pipeline


def test_fullwidth_comma_and_colon_between_fields_but_not_inside_strings():
    text = '{"process": "先添加一只猫，然后扩图：2倍"，"pipeline"：[{"result": "[init[image]]"}]，}'
    wf = parse_workflow(text)
    assert wf.process == "先添加一只猫，然后扩图：2倍"
    assert wf.result == [Ref("image")]


def test_single_quotes_inside_strings_are_fine():
    obj = {"process": "don't touch the dog's 'hat'", "pipeline": [{"result": "[init[image]]"}]}
    assert parse_workflow(json.dumps(obj)).process == "don't touch the dog's 'hat'"


def test_normalise_json_cuts_the_first_object_and_repairs_slips():
    assert normalise_json('xx {"a": [1, 2,], "b"：3，} {"next": 1}') == '{"a": [1, 2], "b":3}'
    assert normalise_json('{"s": "a，b, }"}') == '{"s": "a，b, }"}'
    assert normalise_json('{"s": "esc \\" ，"}') == '{"s": "esc \\" ，"}'


def test_split_reasoning():
    assert split_reasoning('<think> r </think> {"a": 1}') == ("r", '{"a": 1}')
    assert split_reasoning("no json here") == ("", "no json here")


# ---------------------------------------------------------------------------------------- the published examples


def test_published_example1_is_a_clear_parse_error(published_dir):
    issue = only_issue((published_dir / "example1.json").read_text(encoding="utf-8"))
    assert issue.code == "syntax"
    assert issue.message == "invalid JSON: Expecting ',' delimiter (line 25, column 7 of the JSON object)"


@pytest.mark.parametrize(
    "name, bricks",
    [
        ("example1_fixed.json", ["ADD-PRED", "FLUX-FILL", "CMI-PRED", "FLUX-FILL"]),
        ("example2.json", ["RES", "FASTINPAINT", "FLUX-INPAINT"]),
        ("example3.json", ["CMI-PRED", "FLUX-STYLE"]),
        ("example4.json", ["MASK-SEG", "CMI-PRED", "FLUX-STYLE"]),
    ],
)
def test_published_examples_parse(published_dir, name, bricks):
    wf = parse_workflow((published_dir / name).read_text(encoding="utf-8"))
    assert wf.bricks() == bricks


def test_published_example_details(published_dir):
    ex1 = parse_workflow((published_dir / "example1_fixed.json").read_text(encoding="utf-8"))
    assert ex1.process == "先添加一只猫，然后扩图2倍"  # the full-width comma inside the string is kept
    assert ex1.steps[1].outputs == {"mask": Ref("image", 2)}  # the slip is parsed as written; validation rejects it
    assert ex1.steps[2].inputs == {"image": Ref("image", 2), "ratio": 2.0}
    assert ex1.result == [Ref("image", 4)]
    ex2 = parse_workflow((published_dir / "example2.json").read_text(encoding="utf-8"))
    assert ex2.result == [Ref("image", 1), Ref("image", 3)]
    ex3 = parse_workflow((published_dir / "example3.json").read_text(encoding="utf-8"))
    assert ex3.steps[0].outputs == {"caption": Ref("caption", 1), "image": None, "mask": None}
    ex4 = parse_workflow((published_dir / "example4.json").read_text(encoding="utf-8"))
    assert ex4.steps[0].outputs == {"mask": Ref("mask", 1), "image": Ref("image", 1)}  # across the '，'
    assert ex4.steps[0].inputs == {"image": Ref("image"), "mask": Ref("mask")}


# ------------------------------------------------------------------------------------------------- rejections


def test_single_quoted_json_is_rejected_with_its_position():
    issue = only_issue("{'pipeline': [{'result': 'init[image]'}]}")
    assert issue.code == "syntax"
    assert issue.message == ("single quotes are not accepted (line 1, column 2); JSON strings use double quotes")
    issue = only_issue('{"pipeline": [\n  {"result": \'init[image]\'}]}')
    assert "(line 2, column 14)" in issue.message


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"pipeline": [], // no\n "result": "init[image]"}', "comments are not accepted (line 1, column 18)"),
        ('{"pipeline": [] /* no */, "result": "init[image]"}', "comments are not accepted (line 1, column 17)"),
        ('{"pipeline": [], "result": NaN}', "NaN is not a valid JSON number"),
        ('{"pipeline": [], "result": -Infinity}', "-Infinity is not a valid JSON number"),
        ('{"pipeline": [], "result": "init[image]", "result": "x"}', "key 'result' is given twice in one object"),
        ("", "no JSON object found in the answer"),
        ("the answer is: nothing", "no JSON object found in the answer"),
        ('{"pipeline": [', "the JSON object that starts at line 1, column 1 is never closed"),
        ("<think>never closed", "'<think>' is never closed with '</think>'"),
        (
            '{"pipeline": [{"result": "init[image]"}] "x": 1}',
            "invalid JSON: Expecting ',' delimiter (line 1, column 42 of the JSON object)",
        ),
    ],
)
def test_syntax_errors(text, message):
    issue = only_issue(text)
    assert (issue.code, issue.message, issue.step, issue.field) == ("syntax", message, None, None)


def test_nesting_text_size_and_encoding_bounds():
    deep = '{"a":' * (MAX_NESTING + 1) + "1" + "}" * (MAX_NESTING + 1)
    assert only_issue(deep).message == f"JSON nested deeper than {MAX_NESTING} levels"
    huge = " " * MAX_TEXT_CHARS + json.dumps(CANONICAL)
    issue = only_issue(huge)
    assert issue.code == "too_large" and str(MAX_TEXT_CHARS) in issue.message
    assert only_issue(b"\xff\xfe{}").message == "the workflow is not UTF-8 text (invalid start byte at byte 0)"
    assert only_issue(None).message == "cannot parse a NoneType as a workflow"


def test_huge_numbers_are_errors_not_crashes():
    step = {
        "step": 1,
        "model": "RESIZE",
        "input": {"mask": "init[mask]", "ratio": None},
        "output": {"mask": "step1[mask]"},
    }
    for literal, message in [("1e400", "inf is not a finite number"), ("-1e400", "-inf is not a finite number")]:
        text = json.dumps({"pipeline": [step, {"result": "[step1[mask]]"}]}).replace("null", literal)
        issue = only_issue(text)
        assert (issue.step, issue.field, issue.code, issue.message) == (1, "input.ratio", "bad_value", message)
    for digits in (101, 400, 5000):  # 5000 is above Python's own int-to-str limit (a ValueError before the fix)
        too_long = json.dumps({"pipeline": [step, {"result": "[step1[mask]]"}]}).replace("null", "7" * digits)
        issue = only_issue(too_long)
        assert issue.code == "syntax"
        assert issue.message == f"the integer 777777777777... has {digits} digits, too many for a workflow value"
    ok = json.dumps({"pipeline": [step, {"result": "[step1[mask]]"}]}).replace("null", "7" * 100)
    assert parse_workflow(ok).steps[0].inputs["ratio"] == float("7" * 100)
    obj = {"pipeline": [dict(step, input={"mask": "init[mask]", "ratio": 10**400}), {"result": "step1[mask]"}]}
    assert only_issue(obj).message == "inf is not a finite number"


@pytest.mark.parametrize("number", [0, -1, 1.5, True, None, "one", "²", "1" * 20])
def test_bad_step_numbers(number):
    obj = {
        "pipeline": [
            {"step": number, "model": "SOS", "input": {"image": "init[image]"}, "output": {}},
            {"result": "init[image]"},
        ]
    }
    issue = only_issue(obj)
    assert (issue.code, issue.field) == ("bad_step", "step")
    assert issue.message == f"pipeline item 1: 'step' must be a positive integer, got {number!r}"


def test_structure_errors_are_all_reported_at_once():
    obj = {
        "process": 3,
        "extra": 1,
        "pipeline": [
            {"step": 1, "model": "", "input": [], "output": 3, "comment": "x"},
            5,
            {
                "step": 2,
                "model": "SOS",
                "input": {"image": "step1 [mask]", "n": [1], "b": True},
                "output": {"mask": "step3[mask]", "image": "init[image]"},
            },
            {"result": "[step2[image], dog]"},
        ],
    }
    err = parse_error(obj)
    got = [(i.step, i.field, i.code) for i in err.issues]
    assert got == [
        (None, "extra", "unknown_field"),
        (None, "process", "bad_process"),
        (1, "comment", "unknown_field"),
        (1, "model", "bad_model"),
        (1, "input", "bad_input"),
        (1, "output", "bad_output"),
        (None, "pipeline", "structure"),
        (2, "input.image", "bad_reference"),
        (2, "input.n", "bad_value"),
        (2, "input.b", "bad_value"),
        (2, "output.mask", "bad_output"),
        (2, "output.image", "bad_output"),
        (None, "result", "bad_result"),
    ]
    messages = [str(i) for i in err.issues]
    assert "step 2, input.image: 'step1 [mask]' is not a valid reference" in messages[7]
    assert messages[10] == (
        "step 2, output.mask: 'step3[mask]' stores the output under step 3; step 2 may only write step2[...]"
    )
    assert messages[11] == (
        "step 2, output.image: 'init[image]' must name a place to store the output, like 'step2[image]'"
    )
    assert messages[12] == "result: 'dog' in the result is not a reference"
    assert str(err) == "\n".join(messages)


@pytest.mark.parametrize(
    "obj, message",
    [
        ({"pipeline": "steps"}, "'pipeline' must be a list of steps"),
        ({"process": "p"}, "'pipeline' must be a list of steps"),
        ({"pipeline": [STEP1]}, "the workflow has no result"),
        ({"pipeline": [{"result": "[]"}]}, "the result is empty"),
        ({"pipeline": [{"result": 3}]}, "result must be a string or a list, got int"),
        ({"pipeline": [{"result": "init[image]"}, STEP1]}, "the result must be the last pipeline item"),
        ({"pipeline": [{"result": "init[image]"}], "result": "init[image]"}, "the result is given more than once"),
        ({"pipeline": [{"result": "init[image]", "note": 1}]}, "the result item has unknown fields ['note']"),
        (
            {1: 2, "pipeline": [{"result": "init[image]"}]},
            "unknown top-level field 1 (expected process, pipeline, result)",
        ),
    ],
)
def test_structure_error_messages(obj, message):
    assert only_issue(obj).message == message


def test_parse_errors_are_workflow_errors_and_value_errors():
    err = parse_error("{'x': 1}")
    assert isinstance(err, WorkflowError) and isinstance(err, ValueError)
    assert err.issues[0].to_dict() == {"step": None, "field": None, "code": "syntax", "message": err.issues[0].message}
