"""Judge answer parsing, retry-then-unscored, and benchmark aggregation with hand-computed numbers.

``chat`` here is a scripted test double standing in for the VLM backend.
"""

import json
import math

import numpy as np
import pandas as pd
import pytest

from lego_edit.evaluation.benchmarks import GEDIT_TASK_TYPES, IMGEDIT_TYPES
from lego_edit.evaluation.judge import (
    PQ_PROMPT,
    ImgEditJudge,
    ParseFailure,
    VIEScoreJudge,
    aggregate_gedit,
    aggregate_imgedit,
    imgedit_prompt,
    parse_scores,
    to_markdown,
)
from lego_edit.evaluation.published import PUBLISHED_SCORES, published_table


class ScriptedChat:
    """Returns the scripted answers in order (an Exception instance is raised) and records every call."""

    def __init__(self, *answers):
        self.answers, self.calls = list(answers), []

    def __call__(self, messages, images):
        self.calls.append((messages, [np.array(i) for i in images]))
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


SRC = np.zeros((48, 64, 3), np.uint8)
EDITED = np.full((30, 20, 3), 200, np.uint8)


# ---------------------------------------------------------------- parsing
@pytest.mark.parametrize(
    "text, expected",
    [
        ('{"score": [7, 8], "reasoning": "fine"}', [7, 8]),
        ('```json\n{"score": [7, 8], "reasoning": "fine"}\n```', [7, 8]),
        (
            'Sure! Here is my evaluation:\n{"score": [3, 10], "reasoning": "a {brace} inside"}\nHope this helps.',
            [3, 10],
        ),
        ('{"score": ["6", " 9 "], "reasoning": "strings"}', [6, 9]),
        ('<think>maybe {"score": [1, 1]}</think>{"score": [5, 6]}', [5, 6]),
        ('{"score": [4, 5,], "reasoning": "trailing comma",}', [4, 5]),
        ("{'score': [2, 3], 'reasoning': 'python dict'}", [2, 3]),
        ('{"Scores": [0, 10]}', [0, 10]),
        ('{"score": [7.5, 8]}', [7.5, 8]),
        ('{"score": [3, 4], "reasoning": "the \\"cup}\\" is gone"}', [3, 4]),
        ('{"note": "no score here"} then {"score": [1, 2]}', [1, 2]),
    ],
)
def test_parse_scores_accepts_common_forms(text, expected):
    assert parse_scores(text, 2, 0, 10) == expected


def test_parse_scores_reads_imgedit_labelled_lines():
    text = (
        "Brief reasoning: object added, slight halo.\nPrompt Compliance: 4\n"
        "Visual Naturalness: 3\n**Physical & Detail Coherence:** 3"
    )
    assert parse_scores(text, 3, 1, 5) == [4, 3, 3]


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"score": [7, 11]}', r"outside \[0, 10\]"),
        ('{"score": [-1, 5]}', "outside"),
        ('{"score": [7]}', "expected 2 scores, got 1"),
        ('{"score": [7, 8, 9]}', "expected 2 scores"),
        ('{"score": [7, "high"]}', "not a number"),
        ('{"score": [true, 8]}', "not a number"),
        ('{"score": [NaN, 8]}', "not a number|outside"),
        ('{"reasoning": "forgot the scores"}', "no JSON object"),
        ("I cannot evaluate these images.", "no JSON object"),
        ("", "empty or non-text answer"),
        ("{{{{ ]]]", "no JSON object"),
    ],
)
def test_parse_scores_rejects(text, message):
    with pytest.raises(ParseFailure, match=message):
        parse_scores(text, 2, 0, 10)


# ---------------------------------------------------------------- VIEScore judge
def test_viescore_scores_and_resizes_to_source():
    chat = ScriptedChat('{"score": [7, 9], "reasoning": "ok"}', '{"score": [8, 6], "reasoning": "ok"}')
    r = VIEScoreJudge(chat).score("make it red", SRC, EDITED)
    assert r.ok and r.error is None
    assert (r.sc, r.pq) == (7, 6) and r.overall == pytest.approx(math.sqrt(42))
    assert r.sc_scores == [7, 9] and r.pq_scores == [8, 6] and len(r.raw_answers) == 2
    (sc_msgs, sc_imgs), (pq_msgs, pq_imgs) = chat.calls
    assert [i.shape for i in sc_imgs] == [(48, 64, 3), (48, 64, 3)]  # edited resized to the source size
    assert [i.shape for i in pq_imgs] == [(48, 64, 3)]
    content = sc_msgs[0]["content"]
    assert [p["type"] for p in content] == ["image", "image", "text"] and "make it red" in content[-1]["text"]
    assert pq_msgs[0]["content"][-1]["text"] == PQ_PROMPT


def test_viescore_retries_with_the_reason_then_scores():
    chat = ScriptedChat("I think it is good", '{"score": [5, 5]}', '{"score": [9, 4]}')
    r = VIEScoreJudge(chat, max_retries=1).score("x", SRC, SRC)
    assert r.ok and (r.sc, r.pq, r.overall) == (5, 4, math.sqrt(20))
    assert r.raw_answers == ["I think it is good", '{"score": [5, 5]}', '{"score": [9, 4]}']
    retry = chat.calls[1][0]
    assert [m["role"] for m in retry] == ["user", "assistant", "user"]
    assert retry[1]["content"] == "I think it is good" and "could not be read" in retry[2]["content"][0]["text"]
    assert len(chat.calls[1][1]) == 2  # the images go with the retry


def test_viescore_unscored_after_retries_never_invents_a_score():
    chat = ScriptedChat("nope", '{"score": [12, 3]}', "still nope")
    r = VIEScoreJudge(chat, max_retries=2).score("x", SRC, SRC)
    assert not r.ok and (r.sc, r.pq, r.overall) == (None, None, None)
    assert "unscored" in r.error and "SC" in r.error and len(chat.calls) == 3  # PQ not asked
    assert r.raw_answers == ["nope", '{"score": [12, 3]}', "still nope"]


def test_viescore_pq_failure_and_backend_errors():
    chat = ScriptedChat('{"score": [6, 7]}', ConnectionError("server down"), "garbage")
    r = VIEScoreJudge(chat, max_retries=1).score("x", SRC, SRC)
    assert not r.ok and r.sc is None and r.sc_scores == [6, 7]
    assert "PQ" in r.error and "no JSON object" in r.error
    chat = ScriptedChat(TimeoutError("slow"), TimeoutError("slow"))
    r = VIEScoreJudge(chat, max_retries=1).score("x", SRC, SRC)
    assert not r.ok and "TimeoutError" in r.error


# ---------------------------------------------------------------- ImgEdit judge
def test_imgedit_prompt_is_per_type():
    p = imgedit_prompt("compose", "remove the cup and brighten")
    assert "multi-step" in p and "remove the cup and brighten" in p and "Instruction compliance" in p
    assert "Mask precision" in imgedit_prompt("extract", "x")
    assert imgedit_prompt("alter", "x") == imgedit_prompt("adjust", "x")
    with pytest.raises(ValueError, match="unknown ImgEdit edit type"):
        imgedit_prompt("teleport", "x")


def test_imgedit_judge_mean_and_cap():
    r = ImgEditJudge(ScriptedChat('{"score": [4, 3, 2]}')).score("add a cat", "add", SRC, EDITED)
    assert r.ok and r.scores == [4, 3, 2] and r.score == 3 and not r.capped
    r = ImgEditJudge(ScriptedChat('{"score": [2, 5, 1]}')).score("add a cat", "add", SRC, EDITED)
    assert r.ok and r.scores == [2, 2, 1] and r.score == pytest.approx(5 / 3) and r.capped
    chat = ScriptedChat('{"score": [2, 5, 1]}', "Prompt Compliance: 3\nVisual Naturalness: 3\nPhysical: 2")
    r = ImgEditJudge(chat, cap="reject").score("add a cat", "add", SRC, EDITED)
    assert r.ok and r.scores == [3, 3, 2] and not r.capped and len(chat.calls) == 2
    assert "exceed score 1" in chat.calls[1][0][2]["content"][0]["text"]
    assert [i.shape for i in chat.calls[0][1]] == [(48, 64, 3), (30, 20, 3)]


def test_imgedit_judge_unscored():
    r = ImgEditJudge(ScriptedChat("?", '{"score": [0, 1, 1]}'), max_retries=1).score("x", "style", SRC, SRC)
    assert not r.ok and r.score is None and r.scores is None and "outside [1, 5]" in r.error
    with pytest.raises(ValueError, match="cap"):
        ImgEditJudge(ScriptedChat(), cap="ignore")
    with pytest.raises(ValueError, match="max_retries"):
        VIEScoreJudge(ScriptedChat(), max_retries=-1)


# ---------------------------------------------------------------- aggregation
def _gedit_rows():
    # key, task_type, language, sc, pq, ok, intersection_exist  (O: 6, 4, -, 9, 1)
    rows = [
        ("A", "background_change", "en", 4, 9, True, True),
        ("B", "background_change", "en", 8, 2, True, False),
        ("C", "background_change", "en", None, None, False, True),
        ("D", "color_alter", "en", 9, 9, True, True),
        ("E", "background_change", "cn", 1, 1, True, False),
    ]
    return pd.DataFrame(rows, columns=["key", "task_type", "language", "sc", "pq", "ok", "intersection_exist"])


def _row(t, subset, lang, task):
    return t[(t.subset == subset) & (t.language == lang) & (t.task_type == task)].iloc[0]


def test_aggregate_gedit_hand_computed():
    t = aggregate_gedit(_gedit_rows())
    assert list(t.columns) == [
        "subset",
        "language",
        "task_type",
        "sc",
        "pq",
        "overall",
        "n_scored",
        "n_total",
        "coverage",
        "n_types",
    ]
    assert len(t) == 2 * 2 * 12  # subsets x languages x (11 types + average)
    assert list(t[(t.subset == "fullset") & (t.language == "en")].task_type) == [*GEDIT_TASK_TYPES, "average"]
    bg = _row(t, "fullset", "en", "background_change")
    assert (bg.sc, bg.pq, bg.overall, bg.n_scored, bg.n_total) == (6, 5.5, 5, 2, 3)
    assert bg.coverage == pytest.approx(2 / 3) and pd.isna(bg.n_types)
    avg = _row(t, "fullset", "en", "average")
    assert (avg.sc, avg.pq, avg.overall, avg.n_types, avg.n_scored, avg.n_total) == (7.5, 7.25, 7, 2, 3, 4)
    assert avg.coverage == 0.75
    empty = _row(t, "fullset", "en", "tone_transfer")
    assert empty.n_total == 0 and np.isnan(empty.sc) and np.isnan(empty.coverage)
    inter = _row(t, "intersection", "en", "background_change")
    assert (inter.sc, inter.pq, inter.overall, inter.n_scored, inter.n_total, inter.coverage) == (4, 9, 6, 1, 2, 0.5)
    iavg = _row(t, "intersection", "en", "average")
    assert (iavg.sc, iavg.pq, iavg.overall, iavg.n_types) == (6.5, 9, 7.5, 2)
    assert iavg.coverage == pytest.approx(2 / 3)
    cn = _row(t, "fullset", "cn", "average")
    assert (cn.sc, cn.pq, cn.overall, cn.n_types, cn.coverage) == (1, 1, 1, 1, 1)
    cn_inter = _row(t, "intersection", "cn", "average")
    assert cn_inter.n_total == 0 and cn_inter.n_types == 0 and np.isnan(cn_inter.overall)


def test_aggregate_gedit_ok_column_is_authoritative_and_output_is_writable(tmp_path):
    df = _gedit_rows()
    df.loc[0, "ok"] = False  # a row with numbers but marked unscored stays out of the means
    bg = _row(aggregate_gedit(df), "fullset", "en", "background_change")
    assert (bg.sc, bg.n_scored) == (8, 1)
    t = aggregate_gedit(df.drop(columns=["ok"]))  # without ok, scored = sc and pq present
    assert _row(t, "fullset", "en", "background_change").n_scored == 2
    t.to_parquet(tmp_path / "t.parquet")
    t.to_csv(tmp_path / "t.csv", index=False)
    md = to_markdown(t.head(3))
    assert md.splitlines()[0].startswith("| subset | language | task_type | sc |") and "n/a" in md


def test_aggregate_gedit_rejects_bad_input():
    with pytest.raises(ValueError, match=r"missing column\(s\) \['intersection_exist'\]"):
        aggregate_gedit(_gedit_rows().drop(columns=["intersection_exist"]))
    with pytest.raises(ValueError, match="unknown task types"):
        aggregate_gedit(_gedit_rows().assign(task_type="teleport"))


def test_aggregate_imgedit_hand_computed():
    df = pd.DataFrame(
        {
            "key": list("abcdef"),
            "task_type": ["add", "add", "add", "compose", "style", "hybrid"],
            "score": [3, 4, None, 2, 5, 3],
            "ok": [True, True, False, True, True, False],
        }
    )
    t = aggregate_imgedit(df)
    assert list(t.task_type) == [*IMGEDIT_TYPES, "overall"]
    add = t[t.task_type == "add"].iloc[0]
    assert (add.score, add.n_scored, add.n_total) == (3.5, 2, 3) and add.coverage == pytest.approx(2 / 3)
    hybrid = t[t.task_type == "hybrid"].iloc[0]
    assert (hybrid.score, hybrid.n_scored, hybrid.n_total, hybrid.coverage) == (2, 1, 2, 0.5)
    overall = t[t.task_type == "overall"].iloc[0]
    assert overall.score == pytest.approx((3.5 + 2 + 5) / 3)
    assert (overall.n_types, overall.n_scored, overall.n_total) == (3, 4, 6)
    assert overall.coverage == pytest.approx(4 / 6)
    assert t[t.task_type == "remove"].iloc[0].n_total == 0
    with pytest.raises(ValueError, match="unknown edit types"):
        aggregate_imgedit(df.assign(task_type="teleport"))


def test_published_scores():
    img = published_table("imgedit")
    lego = img[(img.model == "Lego-Edit") & (img.task_type != "overall")]
    assert list(lego.task_type) == list(IMGEDIT_TYPES)
    overall = img[(img.model == "Lego-Edit") & (img.task_type == "overall")].score.item()
    assert overall == 3.50 and lego.score.mean() == pytest.approx(overall, abs=0.01)
    assert img[img.model == "Qwen-Image-Edit"].score.item() == 4.27
    ged = published_table("gedit_en")
    row = ged[ged.model == "Lego-Edit"].iloc[0]
    assert (row.sc, row.pq, row.overall, bool(row.verified)) == (5.99, 7.45, 6.64, False)
    assert "unverified" in row.source and ged[ged.model != "Lego-Edit"].verified.all()
    assert len(PUBLISHED_SCORES["gedit_en"]) == 6
    with pytest.raises(ValueError):
        published_table("nope")


def test_endpoint_critic_sends_concurrency_requests_at_a_time_in_order():
    """OpenAICritic.score and imgedit_scores keep `concurrency` judge requests in flight and return in order."""
    import threading
    import time

    from lego_edit.models.critic import OpenAICritic, OpenAICriticConfig

    lock, state = threading.Lock(), {"now": 0, "most": 0}

    def chat(messages, images):
        with lock:
            state["now"] += 1
            state["most"] = max(state["most"], state["now"])
        time.sleep(0.05)
        with lock:
            state["now"] -= 1
        score = 10 if "make it 7" in messages[0]["content"][-1]["text"] else 7  # SC follows the instruction
        return json.dumps({"score": [score, score], "reasoning": "r"})

    critic = OpenAICritic(OpenAICriticConfig(base_url="http://127.0.0.1:9/v1", model="judge", concurrency=3))
    critic.judge = VIEScoreJudge(chat, max_retries=0)
    texts = [f"make it {i}" for i in range(9)]
    scores = critic.score(texts, [SRC] * 9, [SRC] * 9)
    assert state["most"] == 3 and state["now"] == 0
    assert [s.sc for s in scores] == [10 if i == 7 else 7 for i in range(9)]  # in the order asked
    critic.backend.concurrency = 1
    state["most"] = 0
    assert [s.sc for s in critic.score(texts[:3], [SRC] * 3, [SRC] * 3)] == [7, 7, 7] and state["most"] == 1
