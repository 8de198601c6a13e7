"""Builder rewards (lego_edit.builder.rewards): exact values against hand-built GT workflows.

Every expected value below is worked out by hand from the GT ``REMOVE`` workflow:

    step 1 RES         (image=init[image], prompt="dog")                       -> mask, image
    step 2 FASTINPAINT (image=init[image], mask=step1[mask])                   -> image, score
    step 3 INPAINT     (image=init[image], mask=step1[mask],
                        preimage=step2[image], score=step2[score])             -> image
    result [step3[image]]

Its brick multiset is {RES, FASTINPAINT, INPAINT}; its 8 dependency edges (producer, key, consumer, input) are
    (init, image, RES, image)
    (init, image, FASTINPAINT, image)   (RES, mask, FASTINPAINT, mask)
    (init, image, INPAINT, image)       (RES, mask, INPAINT, mask)
    (FASTINPAINT, image, INPAINT, preimage)   (FASTINPAINT, score, INPAINT, score)
    (INPAINT, image, RESULT, "")
and its one literal argument is (RES, prompt, "dog").
"""

from __future__ import annotations

import copy
import doctest
import json
import time
from collections import Counter
from fractions import Fraction

import numpy as np
import pytest
from PIL import Image

from lego_edit.bricks.functions import fastinpaint
from lego_edit.bricks.registry import default_registry
from lego_edit.builder import rewards
from lego_edit.builder.rewards import (
    FAILED_PENALTY,
    GT_REWARDS,
    INVALID_PENALTY,
    CriticReward,
    argument_reward,
    brick_f1_reward,
    completion_text,
    dependency_edges,
    edge_f1_reward,
    exact_match,
    format_reward,
    try_parse,
    validity_reward,
)
from lego_edit.models.critic import CriticScore
from lego_edit.workflow import Executor


def step(n, model, inputs, outputs):
    return {"step": n, "model": model, "input": inputs, "output": outputs}


RES1 = step(1, "RES", {"image": "init[image]", "prompt": "dog"}, {"mask": "step1[mask]", "image": "step1[image]"})
FAST2 = step(
    2,
    "FASTINPAINT",
    {"image": "init[image]", "mask": "step1[mask]"},
    {"image": "step2[image]", "score": "step2[score]"},
)
INPAINT3 = step(
    3,
    "INPAINT",
    {"image": "init[image]", "mask": "step1[mask]", "preimage": "step2[image]", "score": "step2[score]"},
    {"image": "step3[image]"},
)
REMOVE = {"process": "remove the dog", "pipeline": [RES1, FAST2, INPAINT3, {"result": "[step3[image]]"}]}
REMOVE_TEXT = json.dumps(REMOVE)

# A second GT with two literal arguments, for fractional argument rewards.
RECOLOUR = {
    "process": "make the blue square red",
    "pipeline": [
        step(1, "RES", {"image": "init[image]", "prompt": "blue square"}, {"mask": "step1[mask]"}),
        step(2, "RCM", {"image": "init[image]", "mask": "step1[mask]", "prompt": "red"}, {"image": "step2[image]"}),
        {"result": "[step2[image]]"},
    ],
}


def variant(gt: dict = REMOVE, *, process=None, drop=(), result=None, **steps) -> str:
    """A JSON answer derived from ``gt``: ``s3={"model": "X"}`` updates step 3's fields (``input`` is merged),
    ``drop`` removes steps by number, ``result`` replaces the result."""
    wf = copy.deepcopy(gt)
    if process is not None:
        wf["process"] = process
    pipeline = []
    for item in wf["pipeline"]:
        n = item.get("step")
        if n in drop:
            continue
        change = steps.get(f"s{n}", {})
        for key, value in change.items():
            if key == "input":
                item["input"] = {k: v for k, v in {**item["input"], **value}.items() if v != "DROP"}
            else:
                item[key] = value
        if "result" in item and result is not None:
            item["result"] = result
        pipeline.append(item)
    wf["pipeline"] = pipeline
    return json.dumps(wf)


def conversation(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def all_rewards(completion, workflow=REMOVE_TEXT) -> dict:
    return {
        name: fn(prompts=["p"], completions=[completion], workflow=[workflow])[0] for name, fn in GT_REWARDS.items()
    }


def frac(x: float) -> Fraction:
    return Fraction(x).limit_denominator(1000)


# ----------------------------------------------------------------------------------------------------------------
# Answers: good, partial, broken, adversarial, each with its rewards worked out by hand.

ALIASED = "<think>The dog is the object to remove; segment it, pre-inpaint, then inpaint.</think>\n" + variant(
    s3={"model": "FLUX-INPAINT"}, process="get rid of the dog"
)

CASES = {
    # name: (answer, format, validity, brick F1, edge F1, arguments, exact match)
    "identical": (REMOVE_TEXT, 1, 1, 1, 1, 1, True),
    "alias_and_reasoning": (ALIASED, 1, 1, 1, 1, 1, True),
    "alias_lower_case_in_fence": (
        "Plan:\n```json\n" + variant(s3={"model": "flux-inpaint"}) + "\n```",
        1,
        1,
        1,
        1,
        1,
        True,
    ),
    # The literal is compared case- and space-insensitively, but exact match compares the text as written.
    "literal_case": (variant(s1={"input": {"prompt": "  Dog "}}), 1, 1, 1, 1, 1, False),
    # SOS instead of RES (no prompt): bricks 2/3 each way; edges (init,image,FASTINPAINT,image),
    # (init,image,INPAINT,image), (FASTINPAINT,image,INPAINT,preimage), (FASTINPAINT,score,INPAINT,score) and
    # (INPAINT,image,RESULT) agree: 5 of 8 on both sides; the GT literal (RES,prompt,dog) is missing.
    "one_brick_wrong": (
        variant(s1={"model": "SOS", "input": {"prompt": "DROP"}}),
        1,
        1,
        Fraction(2, 3),
        Fraction(5, 8),
        0,
        False,
    ),
    "wrong_literal": (variant(s1={"input": {"prompt": "cat"}}), 1, 1, 1, 1, 0, False),
    # No INPAINT step, FASTINPAINT's image is the result: bricks P=1, R=2/3 -> 4/5; edges: 3 of the answer's 4 are
    # in the GT's 8 -> P=3/4, R=3/8 -> 1/2.
    "missing_step": (variant(drop=(3,), result="[step2[image]]"), 1, 1, Fraction(4, 5), Fraction(1, 2), 1, False),
    "no_json": ("I would remove the dog with an inpainting model.", 0, 0, 0, 0, 0, False),
    "bad_json": ('{"process": "remove", "pipeline": [{"step": 1, "model": "RES",', 0, 0, 0, 0, 0, False),
    "single_quotes": (REMOVE_TEXT.replace('"dog"', "'dog'"), 0, 0, 0, 0, 0, False),
    "unclosed_think": ("<think>hmm " + REMOVE_TEXT, 0, 0, 0, 0, 0, False),
    # FASTINPAINT's mask is its own output: only that edge changes (7 of 8).
    "self_reference": (variant(s2={"input": {"mask": "step2[mask]"}}), 1, 0, 1, Fraction(7, 8), 1, False),
    # A Mask where an Image is needed: (RES,mask,FASTINPAINT,image) replaces (init,image,FASTINPAINT,image).
    "mask_for_image": (variant(s2={"input": {"image": "step1[mask]"}}), 1, 0, 1, Fraction(7, 8), 1, False),
    # RES reads step 2's image before step 2 has run: (FASTINPAINT,image,RES,image) replaces (init,image,RES,image).
    "later_step": (variant(s1={"input": {"image": "step2[image]"}}), 1, 0, 1, Fraction(7, 8), 1, False),
    # An unknown brick for step 3: bricks 2/3; its 4 input edges and the result edge differ (3 of 8 agree).
    "unknown_brick": (variant(s3={"model": "TELEPORT"}), 1, 0, Fraction(2, 3), Fraction(3, 8), 1, False),
    # A non-existent step number in a reference.
    "missing_reference": (variant(s3={"input": {"preimage": "step9[image]"}}), 1, 0, 1, Fraction(7, 8), 1, False),
}


@pytest.mark.parametrize("name", list(CASES))
def test_gt_rewards_exact(name):
    answer, fmt, valid, brick, edge, args, exact = CASES[name]
    got = all_rewards(answer)
    assert got["format"] == float(fmt)
    assert got["validity"] == float(valid)
    assert frac(got["brick_f1"]) == brick and got["brick_f1"] == pytest.approx(float(brick), abs=1e-12)
    assert frac(got["edge_f1"]) == edge and got["edge_f1"] == pytest.approx(float(edge), abs=1e-12)
    assert got["arguments"] == float(args)
    assert exact_match(try_parse(answer), try_parse(REMOVE_TEXT)) is exact


@pytest.mark.parametrize("name", ["identical", "one_brick_wrong", "missing_step", "no_json", "mask_for_image"])
def test_conversational_completions_score_like_strings(name):
    answer = CASES[name][0]
    as_string = all_rewards(answer)
    assert all_rewards(conversation(answer)) == as_string
    # multimodal chat content: a list of parts
    parts = [
        {"role": "user", "content": "x"},
        {
            "role": "assistant",
            "content": [{"type": "text", "text": answer[:10]}, {"type": "text", "text": answer[10:]}],
        },
    ]
    assert all_rewards(parts) == as_string


def test_completion_text_shapes():
    assert completion_text("abc") == "abc"
    assert completion_text([{"role": "assistant", "content": "xyz"}]) == "xyz"
    parts = [{"type": "image"}, {"type": "text", "text": "t"}]
    assert completion_text([{"role": "assistant", "content": parts}]) == "t"
    assert completion_text([{"role": "assistant"}]) == ""
    assert completion_text([]) == "[]"


def test_huge_answer_scores_zero_quickly():
    """10^5 steps: far above the parser's text bound, rejected before any JSON work."""
    steps = [
        step(i, "RES", {"image": "init[image]", "prompt": "dog"}, {"mask": f"step{i}[mask]"}) for i in range(1, 100_001)
    ]
    text = json.dumps({"process": "x", "pipeline": [*steps, {"result": "[step1[mask]]"}]})
    t0 = time.perf_counter()
    got = all_rewards(text)
    assert time.perf_counter() - t0 < 5
    assert got == {
        "format": 0.0,
        "validity": 0.0,
        "brick_f1": 0.0,
        "edge_f1": 0.0,
        "arguments": 0.0,
        "graded_arguments": 0.0,
    }


def test_graded_arguments_give_part_credit():
    """RECOLOUR's literals are (RES, prompt, "blue square") and (RCM, prompt, "red")."""
    gt = json.dumps(RECOLOUR)

    def graded(answer):
        return rewards.graded_argument_reward(completions=[answer], workflow=[gt])[0]

    def with_prompts(res, rcm):
        return variant(RECOLOUR, s1={"input": {"prompt": res}}, s2={"input": {"prompt": rcm}})

    assert graded(gt) == 1.0
    # the expression with a word too many (F1 2*2/(3+2) = 0.8) and the right colour: (0.8 + 1) / 2
    assert graded(with_prompts("small blue square", "red")) == pytest.approx(0.9)
    assert graded(with_prompts("blue square", "green")) == pytest.approx(0.5)
    assert graded(with_prompts("green circle", "green")) == 0.0
    assert graded("no json") == 0.0
    # an extra literal argument costs like a missing one: three answer literals, two right
    extra = copy.deepcopy(RECOLOUR)
    extra["pipeline"][1]["input"]["style"] = "sketch"
    assert graded(json.dumps(extra)) == pytest.approx(2 / 3)


def test_too_many_steps_parse_but_are_invalid():
    """17 RES steps (the bound is 16): bricks {RES: 17} vs the GT's 3 -> P=1/17, R=1/3 -> F1 = 1/10; edges: 17 x
    (init,image,RES,image) + (RES,image,RESULT) vs the GT's 8, one in common -> P=1/18, R=1/8 -> F1 = 1/13;
    the GT literal (RES, prompt, dog) is reproduced (extra copies cost nothing)."""
    steps = [
        step(i, "RES", {"image": "init[image]", "prompt": "dog"}, {"image": f"step{i}[image]"}) for i in range(1, 18)
    ]
    text = json.dumps({"process": "x", "pipeline": [*steps, {"result": "[step17[image]]"}]})
    got = all_rewards(text)
    assert (got["format"], got["validity"], got["arguments"]) == (1.0, 0.0, 1.0)
    assert frac(got["brick_f1"]) == Fraction(1, 10)
    assert frac(got["edge_f1"]) == Fraction(1, 13)


def test_dependency_edges_of_the_gt():
    assert dependency_edges(try_parse(REMOVE_TEXT)) == Counter(
        {
            ("init", "image", "RES", "image"): 1,
            ("init", "image", "FASTINPAINT", "image"): 1,
            ("RES", "mask", "FASTINPAINT", "mask"): 1,
            ("init", "image", "INPAINT", "image"): 1,
            ("RES", "mask", "INPAINT", "mask"): 1,
            ("FASTINPAINT", "image", "INPAINT", "preimage"): 1,
            ("FASTINPAINT", "score", "INPAINT", "score"): 1,
            ("INPAINT", "image", "RESULT", ""): 1,
        }
    )


def test_argument_reward_fractions():
    wrong_colour = variant(RECOLOUR, s2={"input": {"prompt": "green"}})
    both_wrong = variant(RECOLOUR, s1={"input": {"prompt": "square"}}, s2={"input": {"prompt": "green"}})
    got = argument_reward(
        completions=[json.dumps(RECOLOUR), wrong_colour, both_wrong, "nothing"], workflow=json.dumps(RECOLOUR)
    )
    assert got == [1.0, 0.5, 0.0, 0.0]


def test_argument_reward_without_literals_in_gt():
    gt = {
        "pipeline": [step(1, "SOS", {"image": "init[image]"}, {"image": "step1[image]"}), {"result": "[step1[image]]"}]
    }
    assert argument_reward(completions=[json.dumps(gt), "no json"], workflow=json.dumps(gt)) == [1.0, 0.0]


def test_float_literals_are_rounded():
    gt = {
        "pipeline": [
            step(1, "RESIZE", {"image": "init[image]", "ratio": 0.5}, {"image": "step1[image]"}),
            {"result": "[step1[image]]"},
        ]
    }
    close = variant(gt, s1={"input": {"ratio": 0.50000001}})
    string = variant(gt, s1={"input": {"ratio": "0.5"}})  # the published executor reads numeric strings
    far = variant(gt, s1={"input": {"ratio": 0.51}})
    assert argument_reward(completions=[close, string, far], workflow=gt) == [1.0, 1.0, 0.0]


def test_none_without_gt_and_dict_gts():
    answers = [REMOVE_TEXT, REMOVE_TEXT, CASES["missing_step"][0]]
    golds = [REMOVE, None, REMOVE_TEXT]  # a decoded dict, no GT, a JSON string
    assert brick_f1_reward(prompts=None, completions=answers, workflow=golds) == [1.0, None, pytest.approx(0.8)]
    assert edge_f1_reward(prompts=None, completions=answers, workflow=golds) == [1.0, None, 0.5]
    assert argument_reward(prompts=None, completions=answers, workflow=golds) == [1.0, None, 1.0]
    # a GT-free batch (the column is None for every row, or missing)
    assert brick_f1_reward(completions=answers, workflow=None) == [None, None, None]
    assert edge_f1_reward(completions=answers) == [None, None, None]
    assert argument_reward(completions=answers) == [None, None, None]
    # a GT that does not parse counts as no GT
    assert brick_f1_reward(completions=[REMOVE_TEXT], workflow=["not a workflow"]) == [None]


def test_format_and_validity_ignore_the_gt_and_extra_columns():
    answers = [REMOVE_TEXT, CASES["mask_for_image"][0], "no"]
    kw = {"workflow": [None, REMOVE_TEXT, None], "image": [None] * 3, "trainer_state": object(), "log_metric": print}
    assert format_reward(prompts=["a", "b", "c"], completions=answers, **kw) == [1.0, 1.0, 0.0]
    assert validity_reward(prompts=["a", "b", "c"], completions=answers, **kw) == [1.0, 0.0, 0.0]


def test_validity_allows_init_mask():
    """The Builder may use a user mask (has_mask unknown at reward time)."""
    text = variant(s2={"input": {"mask": "init[mask]"}})
    assert validity_reward(completions=[text]) == [1.0]
    assert validity_reward(completions=[variant(s2={"input": {"mask": "init[box]"}})]) == [0.0]


def test_exact_match():
    gt = try_parse(REMOVE_TEXT)
    assert exact_match(gt, gt)
    assert exact_match(try_parse(ALIASED), gt)
    assert not exact_match(None, gt)
    assert not exact_match(gt, None)
    assert not exact_match(try_parse(variant(result="[step2[image]]")), gt)
    assert not exact_match(try_parse(variant(s1={"output": {"mask": "step1[mask]"}})), gt)  # one fewer output
    assert not exact_match(try_parse(CASES["wrong_literal"][0]), gt)


def test_doctest_of_format_reward():
    finder = doctest.DocTestFinder()
    tests = [t for t in finder.find(rewards) if t.examples]
    assert [t.name for t in tests] == ["lego_edit.builder.rewards.format_reward"]
    runner = doctest.DocTestRunner()
    for t in tests:
        runner.run(t)
    assert runner.summarize(verbose=False) == doctest.TestResults(failed=0, attempted=1)


# ----------------------------------------------------------------------------------------------------------------
# CriticReward with a real Executor and bricks bound to small deterministic implementations.

SIZE = 24
BOX = (slice(6, 14), slice(4, 12))  # rows 6..13, columns 4..11


def res_box(ctx, image, prompt):
    mask = np.zeros(image.shape[:2], np.uint8)
    mask[BOX] = 255
    return {"mask": mask, "image": np.dstack([image[:, :, :3], mask])}


def inpaint_grey(ctx, image, mask, preimage, score):
    out = preimage.copy()
    out[mask > 0] = 128
    return {"image": out}


def rcm_raises(ctx, image, mask, prompt):
    raise RuntimeError("the recolouring model crashed")


def env_sleeps(ctx, image, prompt):
    time.sleep(5)
    return {"image": image}


class FixedCritic:
    """Returns the given scores in order and records what it was shown."""

    def __init__(self, scores):
        self.scores = list(scores)
        self.calls = []

    def score(self, instructions, sources, edited):
        self.calls.append((list(instructions), [s.copy() for s in sources], [e.copy() for e in edited]))
        out, self.scores = self.scores[: len(instructions)], self.scores[len(instructions) :]
        return [CriticScore(s, error=None if s is not None else "unreadable") for s in out]


@pytest.fixture
def executor():
    reg = default_registry(plugins=False)
    reg.bind("RES", res_box, source="test")
    reg.bind("INPAINT", inpaint_grey, source="test")
    reg.bind("RCM", rcm_raises, source="test")
    reg.bind("ENV", env_sleeps, source="test")
    return Executor(reg)


def source_image():
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    return np.dstack([x * 10, y * 10, np.full_like(x, 200)]).astype(np.uint8)


RECOLOUR_TEXT = json.dumps(RECOLOUR)
ENV_TEXT = json.dumps(
    {
        "pipeline": [
            step(1, "ENV", {"image": "init[image]", "prompt": "make it night"}, {"image": "step1[image]"}),
            {"result": "[step1[image]]"},
        ]
    }
)
USES_USER_MASK = variant(s2={"input": {"mask": "init[mask]"}})  # valid for validity_reward, but no mask is given


def test_critic_reward_each_outcome(executor):
    src = source_image()
    critic = FixedCritic([0.75, None, 0.25])
    reward = CriticReward(executor, critic, seconds=0.2)
    completions = [
        REMOVE_TEXT,
        "no json",
        RECOLOUR_TEXT,
        ENV_TEXT,
        conversation(ALIASED),
        USES_USER_MASK,
        CASES["mask_for_image"][0],
        REMOVE_TEXT,
    ]
    n = len(completions)
    images = [Image.fromarray(src)] + [src] * (n - 1)  # PIL and arrays both accepted
    texts = [f"instruction {i}" for i in range(n)]
    t0 = time.perf_counter()
    got = reward(prompts=["p"] * n, completions=completions, image=images, instruction=texts)
    elapsed = time.perf_counter() - t0
    assert got == [
        0.75,
        INVALID_PENALTY,
        FAILED_PENALTY,
        FAILED_PENALTY,
        FAILED_PENALTY,
        INVALID_PENALTY,
        INVALID_PENALTY,
        0.25,
    ]
    assert elapsed < 3, "the sleeping brick must be cut off by the 0.2 s limit"
    assert reward.stats == Counter({"executed": 3, "invalid": 3, "failed": 2})
    # one critic call, for the three executed workflows only, in order
    assert len(critic.calls) == 1
    instructions, sources, edited = critic.calls[0]
    assert instructions == ["instruction 0", "instruction 4", "instruction 7"]
    for s in sources:
        assert np.array_equal(s, src)
    pre = fastinpaint(None, src, res_box(None, src, "dog")["mask"])["image"]
    expected = pre.copy()
    expected[BOX] = 128
    for e in edited:
        assert np.array_equal(e, expected)


def test_critic_reward_broadcasts_one_image_and_instruction(executor):
    src = source_image()
    critic = FixedCritic([0.5, 1.0])
    got = CriticReward(executor, critic, seconds=1)(
        completions=[REMOVE_TEXT, ALIASED], image=src, instruction="remove the dog"
    )
    assert got == [0.5, 1.0]
    assert critic.calls[0][0] == ["remove the dog", "remove the dog"]


def test_critic_reward_without_valid_answers_never_calls_the_critic(executor):
    critic = FixedCritic([])
    got = CriticReward(executor, critic)(completions=["", "{}", RECOLOUR_TEXT], image=source_image(), instruction="x")
    assert got == [INVALID_PENALTY, INVALID_PENALTY, FAILED_PENALTY]
    assert critic.calls == []


def test_critic_reward_timeout_restores_the_alarm(executor):
    import signal

    before = signal.getsignal(signal.SIGALRM)
    got = CriticReward(executor, FixedCritic([]), seconds=0.2)(
        completions=[ENV_TEXT], image=source_image(), instruction="night"
    )
    assert got == [FAILED_PENALTY]
    assert signal.getsignal(signal.SIGALRM) is before
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_critic_reward_bad_image_is_a_failure_not_a_crash(executor):
    got = CriticReward(executor, FixedCritic([]), seconds=1)(completions=[REMOVE_TEXT], image=[None], instruction=["x"])
    assert got == [FAILED_PENALTY]


def test_execution_reward_is_the_share_of_the_error_removed(executor, tmp_path):
    from lego_edit.builder.rewards import ExecutionReward
    from lego_edit.imageio import save_image

    src = source_image()
    removed = fastinpaint(None, src, res_box(None, src, "dog")["mask"])["image"]
    removed[BOX] = 128  # what REMOVE_TEXT gives with these bricks
    save_image(tmp_path / "right.png", removed)
    save_image(tmp_path / "unchanged.png", src)
    reward = ExecutionReward(executor, seconds=0.2)
    completions = [REMOVE_TEXT, "no json", RECOLOUR_TEXT, ENV_TEXT, REMOVE_TEXT, ALIASED]
    targets = [str(tmp_path / "right.png")] * 3 + [str(tmp_path / "right.png"), str(tmp_path / "unchanged.png"), None]
    got = reward(completions=completions, image=[Image.fromarray(src)] + [src] * 5, target=targets)
    # the exact edit removes all the error; an answer that does not run edits nothing; an edit where the target
    # asks for none makes things worse (clipped at -1); a row without a target gets no reward
    assert got == [1.0, 0.0, 0.0, 0.0, -1.0, None]
    assert reward.stats == Counter({"executed": 3, "invalid": 1, "failed": 2})


def test_gated_execution_reward_speaks_only_where_the_bricks_succeed_on_the_gt(executor, tmp_path):
    """Where the GT workflow itself, run by the same bricks, misses its target, every answer's execution term is
    None (a no-op would out-score the GT there); where the GT succeeds the term is the ungated one."""
    from lego_edit.builder.rewards import ExecutionReward
    from lego_edit.imageio import save_image

    src = source_image()
    removed = fastinpaint(None, src, res_box(None, src, "dog")["mask"])["image"]
    removed[BOX] = 128
    save_image(tmp_path / "right.png", removed)
    far = src.copy()
    far[:, :] = 0  # a target no brick here reaches: the GT's own run misses it
    save_image(tmp_path / "far.png", far)
    gate = ExecutionReward(executor, seconds=0.2, gate=True)
    completions = [REMOVE_TEXT, "no json", REMOVE_TEXT, "no json", REMOVE_TEXT]
    targets = [str(tmp_path / "right.png")] * 2 + [str(tmp_path / "far.png")] * 2 + [str(tmp_path / "right.png")]
    gold = [REMOVE_TEXT] * 4 + [None]  # the last row has no GT workflow: nothing to gate on
    got = gate(completions=completions, image=src, target=targets, workflow=gold)
    assert got == [1.0, 0.0, None, None, 1.0]
    assert gate.gated == 2
    assert gate.stats == Counter({"executed": 3, "invalid": 2})  # the GT's runs are not counted as answers
    plain = ExecutionReward(executor, seconds=0.2)
    assert plain(completions=completions, image=src, target=targets, workflow=gold)[2:4] != [None, None]


def test_batch_execution_runs_each_distinct_answer_once(executor):
    from lego_edit.builder.rewards import BatchExecution

    calls = []
    res = executor.registry.implementation("RES")
    executor.registry.bind("RES", lambda ctx, **kw: calls.append(1) or res(ctx, **kw), source="test")
    run = BatchExecution(executor)
    src = source_image()
    first = run.run([REMOVE_TEXT, REMOVE_TEXT, conversation(REMOVE_TEXT)], src)
    again = run.run([REMOVE_TEXT], src.copy())
    assert len(calls) == 1 and [s for s, _ in first + again] == ["executed"] * 4
    assert all(np.array_equal(o, first[0][1]) for _, o in first + again)
