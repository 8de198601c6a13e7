"""Judge requests per second against an OpenAI-compatible server on loopback, at concurrency 1 and 8.

The client is the evaluation's endpoint judge (``OpenAICritic.score``, no cache): the project's VIEScore prompts,
both images as data URLs, ``concurrency`` requests in flight, transport failures retried. Every request it sends
is counted; each concurrency scores the same ``--items`` items. The server is one of:

  serve  (default) ``transformers serve`` on a tiny VLM built from config with untrained weights, so every answer
         runs to ``--max-tokens`` tokens: the figure includes the server's own compute on this machine's CPUs
  stub   a stdlib HTTP server that answers each chat request after ``--stub-latency-ms``: what the client's
         concurrency alone buys against an endpoint whose latency does not grow with load (a hosted API)

Prints, per concurrency: requests, seconds, requests/s; then the speed-up of the highest concurrency over 1.

    python benchmarks/judge_throughput.py --server serve --items 16
    python benchmarks/judge_throughput.py --server stub --items 64 --stub-latency-ms 200
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

from lego_edit.models.critic import OpenAICritic, OpenAICriticConfig


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_model(out_dir: Path) -> Path:
    """A tiny Qwen2.5-VL (untrained weights) with a tokenizer trained on a few judge-like texts."""
    from lego_edit.models import vlm
    from lego_edit.models.tokenizer import train_tokenizer

    texts = ["Judge the edit of the first image into the second.", '{"score": [7, 8], "reasoning": "fine"}']
    tok = train_tokenizer(texts * 4, vocab_size=400, min_frequency=1)
    cfg = vlm.VLMConfig(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=128)
    model, processor = vlm.build_tiny_vlm(cfg, tok)
    vlm.save_vlm(model, processor, out_dir)
    return out_dir


@contextlib.contextmanager
def transformers_serve(model_dir: Path, timeout_s: float = 120.0):
    """``transformers serve MODEL_DIR`` on a free loopback port (CPU, offline) until the block ends."""
    port, log = _free_port(), tempfile.NamedTemporaryFile(prefix="serve_", suffix=".log", delete=False)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "transformers.cli.transformers",
            "serve",
            str(model_dir),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--device",
            "cpu",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        start = time.monotonic()
        while True:
            if proc.poll() is not None or time.monotonic() - start > timeout_s:
                raise RuntimeError(f"server did not start; see {log.name}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1):
                    break
            except OSError:
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}/v1", str(model_dir)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@contextlib.contextmanager
def stub_server(latency_s: float):
    """A minimal OpenAI-compatible chat endpoint answering a fixed judge answer after ``latency_s``."""
    answer = json.dumps(
        {
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": '{"score": [7, 8], "reasoning": "stub"}'},
                }
            ],
            "id": "stub",
            "object": "chat.completion",
            "created": 0,
            "model": "stub",
        }
    ).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            time.sleep(latency_s)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", "stub"
    finally:
        server.shutdown()
        server.server_close()


class CountingChat:
    def __init__(self, chat):
        self.chat, self.requests, self._lock = chat, 0, threading.Lock()

    def __call__(self, messages, images, attempt=0):
        with self._lock:
            self.requests += 1
        return self.chat(messages, images)


def measure(base_url: str, model: str, concurrency: int, items: int, max_tokens: int) -> tuple[int, float]:
    critic = OpenAICritic(
        OpenAICriticConfig(base_url=base_url, model=model, concurrency=concurrency, max_retries=0, timeout=300.0),
        max_tokens=max_tokens,
    )
    counter = CountingChat(critic.judge.chat)
    critic.judge.chat = counter
    rng = np.random.default_rng(0)
    sources = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(items)]
    edited = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(items)]
    start = time.perf_counter()
    critic.score([f"make item {i} blue" for i in range(items)], sources, edited)
    return counter.requests, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", choices=["serve", "stub"], default="serve")
    parser.add_argument("--items", type=int, default=16)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--max-tokens", type=int, default=16, help="answer length (serve: every answer runs to it)")
    parser.add_argument("--stub-latency-ms", type=float, default=200.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = (
            transformers_serve(tiny_model(Path(tmp) / "model"))
            if args.server == "serve"
            else stub_server(args.stub_latency_ms / 1000)
        )
        with server as (base_url, model):
            measure(base_url, model, 1, 2, args.max_tokens)  # warm-up: the server's first request loads the model
            rates = {}
            print(f"server: {args.server}, items: {args.items}, max_tokens: {args.max_tokens}, CPUs: {os.cpu_count()}")
            for concurrency in args.concurrency:
                requests, seconds = measure(base_url, model, concurrency, args.items, args.max_tokens)
                rates[concurrency] = requests / seconds
                print(
                    f"concurrency {concurrency:>2}: {requests} requests in {seconds:.2f} s = "
                    f"{rates[concurrency]:.2f} requests/s"
                )
            top = max(args.concurrency)
            if 1 in rates and top != 1:
                print(f"speed-up {top} vs 1: {rates[top] / rates[1]:.2f}x")


if __name__ == "__main__":
    main()
