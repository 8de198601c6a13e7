"""An on-disk cache of a judge's answers, so that a rerun or a second table reuses them instead of paying again.

The key is a SHA-256 over the model name, the conversation (texts, roles, image placeholders), the bytes of each
image as sent (pixels of an array, or the encoded bytes of an ``EncodedImage``) and the attempt number of a
repeated request. The store is one sqlite file: each answer is written in its own transaction, so an interrupted
run leaves only whole entries, and the chunk jobs of one run (processes, or threads of one) can share the file.
Only answers are cached, never failures: a request that failed is sent again by the next run. Keep the file on a
local or lock-capable file system (sqlite's locking is unreliable on some network mounts).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

KEY_VERSION = 1  # bump when the key's recipe changes, so old entries are never read under a new meaning


def _image_bytes(image: Any) -> bytes:
    from ..builder.backends import EncodedImage

    if isinstance(image, EncodedImage):
        return f"encoded:{image.mime}:".encode() + image.data
    arr = np.ascontiguousarray(np.asarray(image))
    return f"array:{arr.dtype.str}:{arr.shape}:".encode() + arr.tobytes()


def request_key(model: str, messages: list[dict], images: Sequence[Any], attempt: int = 0) -> str:
    """The cache key of one judge request."""
    digest = hashlib.sha256()
    head = {"version": KEY_VERSION, "model": model, "messages": messages, "attempt": attempt}
    digest.update(json.dumps(head, sort_keys=True, ensure_ascii=False).encode("utf-8"))
    for image in images:
        data = _image_bytes(image)
        digest.update(len(data).to_bytes(8, "little"))  # lengths keep two images from reading as one
        digest.update(data)
    return digest.hexdigest()


class JudgeCache:
    """Answers by request key in a sqlite file (created on first use)."""

    def __init__(self, path: str | Path, timeout_s: float = 120.0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # One connection shared by the worker threads of a concurrent judge, used under a lock; other processes
        # wait up to timeout_s for sqlite's file lock.
        self._conn = sqlite3.connect(self.path, timeout=timeout_s, check_same_thread=False)
        self._lock = threading.Lock()
        with self._lock, self._conn:
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, model TEXT NOT NULL, "
                "answer TEXT NOT NULL, created REAL NOT NULL)"
            )

    def get(self, key: str) -> str | None:
        with self._lock:
            row = self._conn.execute("SELECT answer FROM answers WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def put(self, key: str, model: str, answer: str) -> None:
        with self._lock, self._conn:  # one transaction: the entry is written whole or not at all
            self._conn.execute(
                "INSERT OR IGNORE INTO answers (key, model, answer, created) VALUES (?, ?, ?, ?)",
                (key, model, answer, time.time()),
            )

    def __len__(self) -> int:
        with self._lock:
            return self._conn.execute("SELECT COUNT(*) FROM answers").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class CachedChat:
    """A judge ``chat(messages, images)`` that answers from the cache when it can and stores every new answer.

    ``sent`` counts the requests that went to the endpoint, ``hits`` the answers that came from the cache.
    """

    def __init__(self, chat: Callable[..., str], cache: JudgeCache, model: str):
        self.chat, self.cache, self.model = chat, cache, model
        self.sent = self.hits = 0
        self._count = threading.Lock()

    def __call__(self, messages: list[dict], images: Sequence[Any], attempt: int = 0) -> str:
        key = request_key(self.model, messages, images, attempt)
        answer = self.cache.get(key)
        if answer is not None:
            with self._count:
                self.hits += 1
            return answer
        with self._count:
            self.sent += 1
        answer = self.chat(messages, images, attempt) if attempt else self.chat(messages, images)
        if isinstance(answer, str) and answer.strip():  # an empty answer may be a glitch: ask again next run
            self.cache.put(key, self.model, answer)
        return answer
