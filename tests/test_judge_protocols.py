"""The benchmarks' published judge protocols, read from stand-in checkouts in the published layouts: loading,
answer parsing the published way, and, against a real OpenAI-compatible server on loopback, the prompts and images
sent in the published order, the answer cache (a second run sends nothing) and transport retries."""

from __future__ import annotations

import base64
import io
import json
import math
import subprocess
import sys

import numpy as np
import pytest
from judge_fixtures import EDITED, GEDIT_PQ, GEDIT_SC, INSTRUCTION, SOURCE, endpoint_critic_dir, imgedit_stand_in
from openai_server import recording_proxy
from PIL import Image

from lego_edit.evaluation.judge import ParseFailure
from lego_edit.evaluation.judging import EvaluationJudgeConfig, load_evaluation_judge
from lego_edit.evaluation.protocols import (
    NOT_PUBLISHED,
    ProtocolLayoutError,
    load_gedit_protocol,
    load_imgedit_protocol,
    parse_imgedit_answer,
    parse_viescore_answer,
    protocol_file,
)


# ---------------------------------------------------------------- loading the user's checkout
def test_prompts_are_read_from_the_published_layouts(checkouts):
    step1x, imgedit = checkouts
    vie = step1x / "GEdit-Bench" / "viescore" / "vie_prompts.py"
    # the checkout, its benchmark folder, or the file itself
    for path in (step1x, step1x / "GEdit-Bench", vie):
        protocol = load_gedit_protocol(path)
        assert (protocol.sc_prompt, protocol.pq_prompt, protocol.source) == (GEDIT_SC, GEDIT_PQ, str(vie))
    prompts = imgedit / "Benchmark" / "Basic" / "prompts.json"
    for path in (imgedit, imgedit / "Benchmark" / "Basic", prompts):
        assert load_imgedit_protocol(path).source == str(prompts)
    assert protocol_file("gedit", step1x) == vie and protocol_file("imgedit", imgedit) == prompts
    protocol = load_imgedit_protocol(imgedit)
    # the raw type picks the prompt; "hybrid" (the reported name of compose) and "alter" (adjust's old name) too
    assert protocol.prompt("compose", "X") == imgedit_stand_in("compose").replace("<edit_prompt>", "X")
    assert protocol.prompt("hybrid", "X") == protocol.prompt("compose", "X")
    assert protocol.prompt("alter", "X") == protocol.prompt("adjust", "X")


def test_a_checkout_without_the_prompt_files_is_refused_with_its_path(tmp_path, checkouts):
    with pytest.raises(ProtocolLayoutError, match="GEdit-Bench/viescore/vie_prompts.py"):
        load_gedit_protocol(tmp_path)
    with pytest.raises(ProtocolLayoutError, match="Benchmark/Basic/prompts.json"):
        load_imgedit_protocol(tmp_path)
    vie = tmp_path / "viescore" / "vie_prompts.py"
    vie.parent.mkdir()
    vie.write_text('_context_no_delimit = "c"\n_prompts_0shot_rule_PQ = "p"\n')
    with pytest.raises(ProtocolLayoutError, match="_prompts_0shot_tie_rule_SC"):
        load_gedit_protocol(tmp_path)
    prompts = json.loads((checkouts[1] / "Benchmark/Basic/prompts.json").read_text())
    broken = tmp_path / "prompts.json"
    broken.write_text(json.dumps({k: v for k, v in prompts.items() if k != "action"}))
    with pytest.raises(ProtocolLayoutError, match="action"):
        load_imgedit_protocol(broken)
    broken.write_text(json.dumps({**prompts, "add": "no placeholder"}))
    with pytest.raises(ProtocolLayoutError, match="<edit_prompt>"):
        load_imgedit_protocol(broken)


def test_protocol_modules_stay_light():
    """config checks import the protocol finders when the Snakefile is parsed: no torch there."""
    modules = ["protocols", "judging", "judge_cache", "judge_report", "published"]
    code = (
        "import sys, lego_edit.config_checks, " + ", ".join(f"lego_edit.evaluation.{m}" for m in modules) + "; "
        "bad = [m for m in ('torch', 'snakemake') if m in sys.modules]; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------- answers read the published way
@pytest.mark.parametrize(
    "text, expected",
    [
        ('||V^=^V|| {"score": [6, 8], "reasoning": "r"} ||V^=^V||', [6, 8]),
        ('Here: {"score": [7, 5, 9],\n "reasoning": "three scores: VIEScore takes the min of any list"}', [7, 5, 9]),
        ('{"score": 4, "reasoning": "a bare number"}', [4]),
        ("{score: 3, reasoning: 1}", [3]),  # unquoted keys and a bare score: VIEScore's repair
        ("[6, 2]", [6, 2]),
        ("7", [7]),
    ],
)
def test_viescore_answers(text, expected):
    assert parse_viescore_answer(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", "no scores here", "[6, 2, 1]", "12", '{"reasoning": "none"}', '{"score": ["high"]}', '{"score": [-1, 5]}'],
)
def test_unreadable_viescore_answers(text):
    with pytest.raises(ParseFailure):
        parse_viescore_answer(text)


def test_imgedit_answers():
    assert parse_imgedit_answer(
        "Brief reasoning: fine: good\nPrompt Compliance: 2\nVisual Naturalness: 5\nPhysical & Detail Integrity: 5"
    ) == [2, 5, 5]
    assert parse_imgedit_answer("Style Fidelity: 4\nContent Preservation: 3") == [4, 3]  # whatever lines there are
    for text in ("Prompt Compliance: 4/5", "Prompt Compliance: ²", "score 4", ""):
        with pytest.raises(ParseFailure):
            parse_imgedit_answer(text)


# ---------------------------------------------------------------- against a real server on loopback
def _image(part: dict) -> tuple[str, tuple[int, int]]:
    head, data = part["image_url"]["url"].split(",", 1)
    return head, Image.open(io.BytesIO(base64.b64decode(data))).size


def _judge(tmp_path, base_url, model, set_name, protocol=None, cache="cache.sqlite", **cfg):
    critic_dir = endpoint_critic_dir(tmp_path / "critic", "http://127.0.0.1:9/v1", "reward-critic")
    cfg = EvaluationJudgeConfig(
        base_url=base_url,
        model=model,
        max_tokens=64,
        concurrency=2,
        cache=str(tmp_path / cache) if cache else None,
        **cfg,
    )
    return load_evaluation_judge(cfg, critic_dir, set_name, protocol)


def test_gedit_protocol_sends_the_checkout_prompts_in_the_published_order(served_judge, checkouts, tmp_path):
    step1x, _ = checkouts
    smaller = EDITED[::2, ::2]  # an edit of another size: the published scorer resizes it to the source's
    with recording_proxy(served_judge.base_url) as proxy:
        judge = _judge(tmp_path, proxy.base_url, served_judge.model, "gedit", step1x)
        assert judge.protocol_published and str(step1x) in judge.protocol and not judge.is_reward_model
        [score] = judge.scorer.gedit_scores([INSTRUCTION], [SOURCE], [smaller])
        sc_request, pq_request = proxy.chat_requests
    # SC: the text, then the source and the edit, both JPEG at the source's size; PQ: the text, then the edit
    sc = sc_request["messages"][0]["content"]
    assert [p["type"] for p in sc] == ["text", "image_url", "image_url"]
    assert sc[0]["text"] == GEDIT_SC.replace("<instruction>", INSTRUCTION)
    assert [_image(p) for p in sc[1:]] == [("data:image/jpeg;base64", (64, 48))] * 2
    pq = pq_request["messages"][0]["content"]
    assert [p["type"] for p in pq] == ["text", "image_url"] and pq[0]["text"] == GEDIT_PQ
    assert _image(pq[1]) == ("data:image/jpeg;base64", (64, 48))
    assert len(sc_request["messages"]) == 1 and "temperature" not in sc_request and sc_request["max_tokens"] == 64
    # the answers read the published way: SC = min(7, 5, 9), PQ = min(8, 6), O = sqrt(SC * PQ)
    assert (score.sc, score.pq, score.error) == (5.0, 6.0, None)
    assert score.score == pytest.approx(math.sqrt(30.0) / 10)


def test_imgedit_protocol_sends_the_type_prompt_then_source_then_edit(served_judge, checkouts, tmp_path):
    _, imgedit = checkouts
    with recording_proxy(served_judge.base_url) as proxy:
        judge = _judge(tmp_path, proxy.base_url, served_judge.model, "imgedit", imgedit)
        assert judge.scorer.imgedit_scores([INSTRUCTION], ["compose"], [SOURCE], [EDITED]) == [4.0]
        [request] = proxy.chat_requests
    content = request["messages"][0]["content"]
    assert [p["type"] for p in content] == ["text", "image_url", "image_url"]
    assert content[0]["text"] == imgedit_stand_in("compose").replace("<edit_prompt>", INSTRUCTION)
    sent = [
        np.asarray(Image.open(io.BytesIO(base64.b64decode(p["image_url"]["url"].split(",", 1)[1]))))
        for p in content[1:]
    ]
    np.testing.assert_array_equal(sent[0], SOURCE)  # lossless: the pixels of the files the published code sends
    np.testing.assert_array_equal(sent[1], EDITED)
    # 2/5/5 averaged as step1_get_avgscore.py does (4.0); the project's own rubric would cap the 5s at 2


def test_a_second_run_makes_no_request(served_judge, checkouts, tmp_path):
    step1x, imgedit = checkouts
    with recording_proxy(served_judge.base_url) as proxy:
        first = _judge(tmp_path, proxy.base_url, served_judge.model, "gedit", step1x)
        scores = first.scorer.gedit_scores([INSTRUCTION, INSTRUCTION], [SOURCE, SOURCE], [EDITED, EDITED])
        imgedit_judge = _judge(tmp_path, proxy.base_url, served_judge.model, "imgedit", imgedit)
        assert imgedit_judge.scorer.imgedit_scores([INSTRUCTION], ["compose"], [SOURCE], [EDITED]) == [4.0]
        # two identical items: the second may be answered from the cache, or both sent at once (concurrency 2)
        sent = len(proxy.chat_requests)
        assert 3 <= sent <= 5 and first.scorer.chat.sent + imgedit_judge.scorer.chat.sent == sent
        first.close()
        imgedit_judge.close()
        # a rerun (new objects, the same cache file): nothing reaches the server, the same figures come back
        again = _judge(tmp_path, proxy.base_url, served_judge.model, "gedit", step1x)
        assert again.scorer.gedit_scores([INSTRUCTION, INSTRUCTION], [SOURCE, SOURCE], [EDITED, EDITED]) == scores
        again_imgedit = _judge(tmp_path, proxy.base_url, served_judge.model, "imgedit", imgedit)
        assert again_imgedit.scorer.imgedit_scores([INSTRUCTION], ["compose"], [SOURCE], [EDITED]) == [4.0]
        assert len(proxy.chat_requests) == sent
        assert (again.scorer.chat.sent, again.scorer.chat.hits) == (0, 4)
        # another judge model is another key: it asks again
        other = _judge(tmp_path, proxy.base_url, served_judge.model, "imgedit", imgedit, max_retries=1)
        other.scorer.chat.model = "another-judge"
        other.scorer.imgedit_scores([INSTRUCTION], ["compose"], [SOURCE], [EDITED])
        assert len(proxy.chat_requests) == sent + 1


def test_transport_failures_are_retried_with_backoff(served_judge, checkouts, tmp_path):
    step1x, _ = checkouts
    with recording_proxy(served_judge.base_url, fail_first=2) as proxy:
        judge = _judge(tmp_path, proxy.base_url, served_judge.model, "gedit", step1x, cache=None, max_retries=2)
        judge.scorer.backend.backoff_s = 0.05
        [score] = judge.scorer.gedit_scores([INSTRUCTION], [SOURCE], [EDITED])
        assert score.sc == 5.0 and proxy.failed == 2 and len(proxy.chat_requests) == 4
    with recording_proxy(served_judge.base_url, fail_first=100) as proxy:
        judge = _judge(tmp_path, proxy.base_url, served_judge.model, "gedit", step1x, cache=None, max_retries=1)
        judge.scorer.backend.backoff_s = 0.01
        [score] = judge.scorer.gedit_scores([INSTRUCTION], [SOURCE], [EDITED])
        # both rounds of SC and PQ, each tried twice, all refused: unscored, never a guessed score
        assert score.score is None and score.sc is None and "503" in score.error and len(proxy.chat_requests) == 8


def test_without_a_checkout_the_judge_says_so(served_judge, tmp_path):
    judge = _judge(tmp_path, served_judge.base_url, served_judge.model, "gedit")
    assert (judge.protocol, judge.protocol_published, judge.scorer.gedit_protocol) == (NOT_PUBLISHED, False, None)
    assert judge.row_labels()["judge_protocol"] == NOT_PUBLISHED
