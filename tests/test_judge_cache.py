"""The judge's answer cache: what its key depends on, persistence across runs, failures never cached, and
concurrent use from threads and processes."""

from __future__ import annotations

import subprocess
import sys
import threading

import numpy as np
import pytest

from lego_edit.builder.backends import EncodedImage
from lego_edit.evaluation.judge_cache import CachedChat, JudgeCache, request_key

MESSAGES = [{"role": "user", "content": [{"type": "text", "text": "rate it"}, {"type": "image"}]}]
IMAGE = np.zeros((4, 4, 3), np.uint8)


def test_the_key_is_images_prompt_model_and_attempt():
    key = request_key("judge", MESSAGES, [IMAGE])
    assert key == request_key("judge", [dict(m) for m in MESSAGES], [IMAGE.copy()])
    other_pixels = IMAGE.copy()
    other_pixels[0, 0, 0] = 1
    other_text = [{"role": "user", "content": [{"type": "text", "text": "rate it!"}, {"type": "image"}]}]
    different = [
        request_key("judge", MESSAGES, [other_pixels]),
        request_key("judge", other_text, [IMAGE]),
        request_key("other", MESSAGES, [IMAGE]),
        request_key("judge", MESSAGES, [IMAGE], attempt=1),
        request_key("judge", MESSAGES, [IMAGE, IMAGE]),
        request_key("judge", MESSAGES, [IMAGE[:2]]),
        request_key("judge", MESSAGES, [EncodedImage(b"\xff\xd8", "image/jpeg")]),
        request_key("judge", MESSAGES, [EncodedImage(b"\xff\xd8", "image/png")]),
    ]
    assert len({key, *different}) == len(different) + 1


class CountingChat:
    def __init__(self, *answers):
        self.answers, self.calls = list(answers), 0

    def __call__(self, messages, images, attempt=0):
        self.calls += 1
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def test_answers_persist_and_failures_are_asked_again(tmp_path):
    path = tmp_path / "results" / "eval" / "judge.sqlite"
    chat = CountingChat(ConnectionError("down"), "", '{"score": [7, 8]}')
    cached = CachedChat(chat, JudgeCache(path), "judge")
    with pytest.raises(ConnectionError):
        cached(MESSAGES, [IMAGE])
    assert cached(MESSAGES, [IMAGE]) == ""  # an empty answer is returned, not kept
    assert cached(MESSAGES, [IMAGE]) == '{"score": [7, 8]}'
    assert cached(MESSAGES, [IMAGE]) == '{"score": [7, 8]}' and (chat.calls, cached.sent, cached.hits) == (3, 3, 1)
    cached.cache.close()
    rerun = CachedChat(CountingChat(), JudgeCache(path), "judge")  # a new run: it must not call at all
    assert rerun(MESSAGES, [IMAGE]) == '{"score": [7, 8]}' and (rerun.sent, rerun.hits, len(rerun.cache)) == (0, 1, 1)
    assert rerun.chat.calls == 0


def test_threads_and_processes_share_one_file(tmp_path):
    path = tmp_path / "judge.sqlite"
    cache = JudgeCache(path)

    def fill(start):
        for i in range(start, start + 50):
            cache.put(f"k{i}", "judge", f"answer {i}")

    threads = [threading.Thread(target=fill, args=(50 * t,)) for t in range(4)]
    code = (
        "import sys; from lego_edit.evaluation.judge_cache import JudgeCache; c = JudgeCache(sys.argv[1]); "
        "[c.put(f'p{i}', 'judge', str(i)) for i in range(100)]"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, str(path)]) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    assert len(cache) == 300 and cache.get("k199") == "answer 199" and cache.get("p99") == "99"
