"""OpenAIChatBackend against a real `transformers serve` on loopback, and LocalVLMBackend beside it."""

from __future__ import annotations

import openai_server
import pytest
from openai_server import BLUE, EXAMPLES, RED, free_port, solid

from lego_edit.builder.backends import (
    BackendError,
    GenerationBackend,
    GenerationRequest,
    LocalVLMBackend,
    OpenAIChatBackend,
    unwrap,
)

served_vlm = openai_server.served_vlm  # the session fixture: the overfit tiny VLM behind `transformers serve`
QUESTION = EXAMPLES[0][1]
REQUESTS = [
    GenerationRequest("hello there"),  # text only
    GenerationRequest(QUESTION, [RED]),
    GenerationRequest(QUESTION, [BLUE]),
    GenerationRequest("compare them", [RED, BLUE]),  # two images in one prompt
    GenerationRequest(QUESTION, [BLUE], system="you answer in JSON"),
]


@pytest.fixture(scope="module")
def remote(served_vlm):
    server, _ = served_vlm
    return OpenAIChatBackend(server.base_url, server.model, max_tokens=24, temperature=0.0)


@pytest.fixture(scope="module")
def local(served_vlm):
    _, model_dir = served_vlm
    return LocalVLMBackend(model_dir, device="cpu", max_new_tokens=24)


def test_both_are_backends(remote, local):
    assert isinstance(remote, GenerationBackend) and isinstance(local, GenerationBackend)


def test_the_image_reaches_the_server(remote):
    out = unwrap(remote.generate(REQUESTS[1:3]))
    assert out == [EXAMPLES[0][2], EXAMPLES[1][2]]


def test_text_two_images_and_system(remote):
    out = remote.generate(REQUESTS)
    assert all(isinstance(o, str) for o in out), out


def test_server_equals_local_greedy(remote, local):
    # Same saved model, same chat template, lossless PNG images, greedy: the same text.
    assert unwrap(remote.generate(REQUESTS)) == unwrap(local.generate(REQUESTS))


def test_max_tokens_is_respected(served_vlm, local):
    server, model_dir = served_vlm
    short = OpenAIChatBackend(server.base_url, server.model, max_tokens=3)
    local3 = LocalVLMBackend((local.model, local.processor), max_new_tokens=3)
    assert unwrap(short.generate(REQUESTS)) == unwrap(local3.generate(REQUESTS))


def test_seeded_requests_repeat(served_vlm):
    server, _ = served_vlm
    # The saved generation_config has do_sample false, so `transformers serve` decodes greedily whatever
    # the temperature; the seed is still sent and must not break anything.
    seeded = OpenAIChatBackend(server.base_url, server.model, max_tokens=16, temperature=0.0, seed=7)
    assert "stop" not in seeded.params and "n" not in seeded.params
    assert unwrap(seeded.generate(REQUESTS)) == unwrap(seeded.generate(REQUESTS))


def test_concurrent_requests_keep_order(served_vlm, remote):
    server, _ = served_vlm
    parallel = OpenAIChatBackend(server.base_url, server.model, max_tokens=24, concurrency=3)
    assert parallel.generate(REQUESTS) == remote.generate(REQUESTS)


def test_wrong_model_name_is_a_clear_error(served_vlm):
    server, _ = served_vlm
    bad = OpenAIChatBackend(server.base_url, "no-such-model", max_tokens=4, backoff_s=0.01)
    out = bad.generate([GenerationRequest("hi"), GenerationRequest(QUESTION, [RED])])
    assert all(isinstance(o, BackendError) for o in out)
    err = out[1]
    assert err.index == 1 and not err.retryable and err.attempts == 1  # not retried: retrying cannot help
    assert "HTTP 400" in str(err) and "no-such-model" in str(err) and server.model in str(err)
    with pytest.raises(BackendError, match="request 0"):
        unwrap(out)


def test_unreachable_server_is_retried_then_reported():
    dead = OpenAIChatBackend(f"http://127.0.0.1:{free_port()}/v1", "m", max_retries=2, backoff_s=0.01, timeout=2)
    (err,) = dead.generate([GenerationRequest("hi")])
    assert isinstance(err, BackendError) and err.retryable and err.attempts == 3
    assert "APIConnectionError" in str(err)


def test_bad_image_fails_only_its_request(remote):
    out = remote.generate([GenerationRequest(QUESTION, [solid((1, 2, 3))[..., :2]]), REQUESTS[1]])
    assert isinstance(out[0], BackendError) and "HxWx3" in str(out[0])
    assert out[1] == EXAMPLES[0][2]
