"""Test helpers: a tiny VLM overfit in seconds, and a real `transformers serve` for it on loopback.

Reuse from another test module (e.g. the judge backend's):

    from openai_server import served_vlm  # noqa: F401  (a session fixture)

or call ``overfit_vlm`` / ``serve`` directly for a model of your own (a critic answering yes/no).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch

from lego_edit.models import vlm
from lego_edit.models.tokenizer import train_tokenizer

# Small enough to train in about a second; head_dim 16.
TINY = vlm.VLMConfig(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=128)


def solid(rgb, box=None, size=64) -> np.ndarray:
    """A flat-colour test image, optionally with a white square at ``box`` = (y0, y1, x0, x1)."""
    img = np.zeros((size, size, 3), np.uint8)
    img[...] = rgb
    if box is not None:
        y0, y1, x0, x1 = box
        img[y0:y1, x0:x1] = 255
    return img


# Two images that differ only in pixels, one question, two answers: a model that answers both right
# can only have told them apart by looking.
RED, BLUE = solid((220, 30, 30)), solid((30, 30, 220), box=(20, 40, 20, 40))
EXAMPLES = [
    ([RED], "what is it?", '{"color":"red","shape":"square"}'),
    ([BLUE], "what is it?", '{"color":"blue","shape":"circle"}'),
]


def train_steps(
    model, processor, examples, steps: int = 60, lr: float = 3e-3, seed: int = 0, messages=None
) -> list[float]:
    """Plain next-token training on the answers only, full batch; returns the losses. ``messages`` (one
    conversation per example) replaces the default turn of images before the text."""
    msgs = messages or [vlm.chat(text, len(imgs)) for imgs, text, _ in examples]
    full = [m + [{"role": "assistant", "content": ans}] for m, (_, _, ans) in zip(msgs, examples)]
    texts = [processor.apply_chat_template(f, tokenize=False) for f in full]
    flat = [vlm.to_pil(im) for imgs, _, _ in examples for im in imgs]
    batch = processor(text=texts, images=flat or None, padding=True, padding_side="left", return_tensors="pt")
    labels = batch["input_ids"].clone()
    for r, (m, (imgs, _, _)) in enumerate(zip(msgs, examples)):
        prompt = processor.apply_chat_template(m, tokenize=False, add_generation_prompt=True)
        n_prompt = len(processor(text=[prompt], images=[vlm.to_pil(i) for i in imgs] or None)["input_ids"][0])
        n_pad = int((batch["attention_mask"][r] == 0).sum())
        labels[r, : n_pad + n_prompt] = -100  # loss on the answer and its <|im_end|> only
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    losses = []
    for _ in range(steps):
        loss = model(**batch.to(model.device), labels=labels.to(model.device)).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    model.eval()
    return losses


def overfit_vlm(
    examples=EXAMPLES,
    out_dir: str | Path | None = None,
    cfg: vlm.VLMConfig = TINY,
    steps: int = 60,
    extra_texts: tuple[str, ...] = ("yes", "no"),
    messages=None,
    vocab_size: int = 400,
):
    """A tiny VLM whose tokenizer and weights are fit to ``examples``; saved to ``out_dir`` if given."""
    texts = [t for _, q, a in examples for t in (q, a)] + list(extra_texts)
    tok = train_tokenizer(texts, vocab_size=vocab_size, min_frequency=1)
    model, processor = vlm.build_tiny_vlm(cfg, tok)
    train_steps(model, processor, examples, steps=steps, messages=messages)
    if out_dir is not None:
        vlm.save_vlm(model, processor, out_dir)
    return model, processor


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    base_url: str  # ends in /v1, as the openai client wants
    model: str  # the name requests must give: the model directory exactly as passed to `serve`
    log: Path
    startup_s: float


@contextlib.contextmanager
def serve(model_dir: str | Path, timeout: float = 90.0):
    """Run ``transformers serve MODEL_DIR`` on a free loopback port until the block ends."""
    port, model = free_port(), str(model_dir)
    log = Path(tempfile.mkstemp(prefix="serve_", suffix=".log")[1])
    # Offline: a wrong model name must fail at once instead of trying the Hub.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "transformers.cli.transformers",
        "serve",
        model,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--device",
        "cpu",
    ]
    t0 = time.monotonic()
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            if time.monotonic() - t0 > timeout:
                raise TimeoutError(f"server not healthy after {timeout} s:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.2)
        yield Server(f"http://127.0.0.1:{port}/v1", model, log, time.monotonic() - t0)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def served_vlm(tmp_path_factory):
    """(Server, model_dir) for the overfit tiny VLM of ``EXAMPLES``, served for the whole session."""
    model_dir = tmp_path_factory.mktemp("served_vlm") / "model"
    overfit_vlm(EXAMPLES, model_dir)
    with serve(model_dir) as server:
        yield server, model_dir


@dataclass
class RecordingProxy:
    """A loopback HTTP proxy in front of a real server: records each chat request's JSON body, and can answer the
    first ``fail_first`` of them with HTTP 503 (a transport failure the client must retry)."""

    upstream: str  # the server's base URL, ending in /v1
    fail_first: int = 0
    delay_s: float = 0.0  # added before each chat request is forwarded (a slower endpoint)
    base_url: str = ""  # the proxy's own, set once it listens
    requests: list = field(default_factory=list)
    failed: int = 0

    @property
    def chat_requests(self) -> list[dict]:
        return [body for path, body in self.requests if path.endswith("/chat/completions")]


@contextlib.contextmanager
def recording_proxy(upstream: str, fail_first: int = 0, delay_s: float = 0.0):
    """Yield a RecordingProxy whose ``base_url`` forwards to ``upstream`` (both loopback)."""
    state = RecordingProxy(upstream, fail_first, delay_s=delay_s)
    lock = threading.Lock()
    origin = upstream[: upstream.index("/v1")]

    class Handler(BaseHTTPRequestHandler):
        def _forward(self, body: bytes | None):
            with lock:
                if body is not None:
                    state.requests.append((self.path, json.loads(body)))
                fail = body is not None and state.failed < state.fail_first
                state.failed += fail
            if fail:
                self._reply(503, b'{"error": "injected"}', "application/json")
                return
            if body is not None and state.delay_s:
                time.sleep(state.delay_s)
            req = urllib.request.Request(
                origin + self.path, data=body, method=self.command, headers={"Content-Type": "application/json"}
            )
            try:
                with urllib.request.urlopen(req, timeout=120) as r:
                    self._reply(r.status, r.read(), r.headers.get("Content-Type", "application/json"))
            except urllib.error.HTTPError as e:
                self._reply(e.code, e.read(), "application/json")

        def _reply(self, status: int, data: bytes, content_type: str):
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            self._forward(None)

        def do_POST(self):
            self._forward(self.rfile.read(int(self.headers.get("Content-Length", 0))))

        def log_message(self, *args):  # quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.base_url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
