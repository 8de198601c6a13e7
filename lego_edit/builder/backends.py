"""Where the Builder's (or a judge's) text comes from: a local VLM, or an OpenAI-compatible endpoint.

Both take a batch of ``GenerationRequest`` and return one item per request, in order: the generated
text, or a ``BackendError`` for a request that failed after retries. Returning the error instead of
raising lets a batch caller (batch editing, judge scoring) record that item's failure and go on;
``unwrap`` turns the list into plain strings, raising the first error, for callers that want all or nothing.
"""

from __future__ import annotations

import base64
import io
import os
import random
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class GenerationRequest:
    """One prompt: images (RGB uint8 arrays or PIL images, in order), optional system text, user text.

    The images come before the text in the user turn (Qwen's order, and the order both backends send).
    """

    user: str
    images: Sequence[Any] = field(default=())
    system: str | None = None


class BackendError(RuntimeError):
    """A request that still failed after retries; ``index`` is its position in the batch."""

    def __init__(self, message: str, index: int | None = None, retryable: bool = False, attempts: int = 1):
        super().__init__(message if index is None else f"request {index}: {message}")
        self.index = index
        self.retryable = retryable  # the last failure was transient (a later run may succeed)
        self.attempts = attempts


@runtime_checkable
class GenerationBackend(Protocol):
    def generate(self, requests: Sequence[GenerationRequest]) -> list[str | BackendError]: ...


def unwrap(results: Sequence[str | BackendError]) -> list[str]:
    """The texts, or raise the first ``BackendError`` among them."""
    for r in results:
        if isinstance(r, BackendError):
            raise r
    return list(results)  # type: ignore[arg-type]


def _pil(image) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB") if image.mode != "RGB" else image
    arr = np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 uint8 array, got {arr.dtype} {arr.shape}")
    return Image.fromarray(arr, "RGB")


def png_data_url(image) -> str:
    """A base64 PNG data URL: lossless, so the server sees the very pixels the local backend sees."""
    buf = io.BytesIO()
    _pil(image).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


@dataclass(frozen=True)
class EncodedImage:
    """An image already encoded the way a protocol sends it (e.g. a published scorer's JPEG), sent as it is."""

    data: bytes
    mime: str = "image/png"


def image_data_url(image) -> str:
    """The data URL of an ``EncodedImage`` as encoded, or of an array / PIL image as lossless PNG."""
    if isinstance(image, EncodedImage):
        return f"data:{image.mime};base64," + base64.b64encode(image.data).decode("ascii")
    return png_data_url(image)


class LocalVLMBackend:
    """Generation with a local VLM (``lego_edit.models.vlm.generate``), batched.

    ``model`` is a checkpoint path / hub id (loaded with ``load_vlm``, plus ``adapter`` if given), or a
    ``(model, processor)`` pair already in memory.
    """

    def __init__(
        self,
        model: str | Path | tuple,
        *,
        adapter: str | Path | None = None,
        device: str | None = None,
        dtype: str | None = None,
        max_new_tokens: int = 512,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int = 0,
        batch_size: int = 16,
    ):
        from ..models import vlm  # torch and transformers load only when a local backend is made

        self._vlm = vlm
        if isinstance(model, tuple):
            if adapter is not None:
                raise ValueError("adapter applies only when the model is loaded from a path")
            self.model, self.processor = model
        else:
            self.model, self.processor = vlm.load_vlm(model, device=device, dtype=dtype, adapter=adapter)
        self.kwargs = dict(
            max_new_tokens=max_new_tokens,
            do_sample=do_sample,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
            batch_size=batch_size,
        )

    def generate(self, requests: Sequence[GenerationRequest]) -> list[str | BackendError]:
        # Local failures (bad inputs, out of memory) are not per-request and not transient: they raise.
        messages = [self._vlm.chat(r.user, len(r.images), system=r.system) for r in requests]
        images = [[_pil(im) for im in r.images] for r in requests]
        return list(self._vlm.generate(self.model, self.processor, messages, images, **self.kwargs))


class OpenAIChatBackend:
    """Chat completions from an OpenAI-compatible server (OpenAI, vLLM, ``transformers serve``).

    Images go as base64 PNG data URLs. ``stop`` and ``n`` are never sent: ``transformers serve``
    answers ``stop`` with HTTP 500 (and breaks the connection for the next call) and ignores ``n``.
    Connection errors, timeouts, HTTP 408/409/429 and 5xx are retried with exponential backoff and
    jitter; other errors (a wrong model name, a bad request) fail the request at once.
    ``concurrency`` > 1 sends that many requests at a time (vLLM and hosted APIs batch them).
    Note: ``transformers serve`` samples at ``temperature > 0`` only if the served model's
    ``generation_config.json`` has ``do_sample: true``; otherwise it decodes greedily.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key_env: str = "OPENAI_API_KEY",
        timeout: float = 60.0,
        max_retries: int = 3,
        max_tokens: int = 512,
        temperature: float | None = 0.0,
        seed: int | None = None,
        top_p: float | None = None,
        concurrency: int = 1,
        backoff_s: float = 1.0,
    ):
        import openai  # the client is only needed by this backend

        if concurrency < 1 or max_retries < 0:
            raise ValueError("concurrency must be >= 1 and max_retries >= 0")
        self._openai = openai
        # Local servers need no key, but the client insists on one.
        self.client = openai.OpenAI(
            base_url=base_url, api_key=os.environ.get(api_key_env) or "EMPTY", timeout=timeout, max_retries=0
        )  # retries are ours, so we know which happen
        self.model, self.max_retries, self.backoff_s, self.concurrency = model, max_retries, backoff_s, concurrency
        self._rng = random.Random()  # jitter only; the caller's global RNG stays untouched
        # temperature None sends none: the server's default, as the published benchmark scorers leave it.
        self.params: dict[str, Any] = {"max_tokens": max_tokens}
        if temperature is not None:
            self.params["temperature"] = temperature
        if seed is not None:
            self.params["seed"] = seed
        if top_p is not None:
            self.params["top_p"] = top_p

    @staticmethod
    def messages(request: GenerationRequest) -> list[dict]:
        """The OpenAI chat messages of a request."""
        out: list[dict] = [{"role": "system", "content": request.system}] if request.system is not None else []
        if request.images:
            parts: list[dict] = [{"type": "image_url", "image_url": {"url": png_data_url(im)}} for im in request.images]
            out.append({"role": "user", "content": parts + [{"type": "text", "text": request.user}]})
        else:
            out.append({"role": "user", "content": request.user})
        return out

    def generate(self, requests: Sequence[GenerationRequest]) -> list[str | BackendError]:
        if self.concurrency == 1 or len(requests) < 2:
            return [self._one(i, r) for i, r in enumerate(requests)]
        with ThreadPoolExecutor(self.concurrency) as pool:
            return list(pool.map(self._one, range(len(requests)), requests))

    def stream(self, requests: Sequence[GenerationRequest]) -> Iterator[tuple[int, str | BackendError]]:
        """(index, answer or error) as each request finishes, ``concurrency`` in flight: a caller that journals
        each answer the moment it arrives loses none of them when the job is killed midway."""
        if self.concurrency == 1:
            for i, r in enumerate(requests):
                yield i, self._one(i, r)
            return
        with ThreadPoolExecutor(self.concurrency) as pool:
            pending = {pool.submit(self._one, i, r): i for i, r in enumerate(requests)}
            try:
                for done in as_completed(pending):
                    yield pending[done], done.result()
            finally:  # a caller that stops early (an exception, a kill) sends nothing more
                for f in pending:
                    f.cancel()

    def _transient(self, e: Exception) -> bool:
        o = self._openai
        if isinstance(e, o.APIConnectionError | o.RateLimitError):  # APITimeoutError is an APIConnectionError
            return True
        return isinstance(e, o.APIStatusError) and (e.status_code in (408, 409) or e.status_code >= 500)

    def _describe(self, e: Exception) -> str:
        if isinstance(e, self._openai.APIStatusError):
            # `transformers serve` puts its reason in {"detail": ...}, which the client's message leaves out.
            body = e.body if e.body is not None else e.response.text
            msg = f"HTTP {e.status_code} from {self.client.base_url}: {body}"
            if e.status_code in (400, 404):
                msg += self._model_hint()
            return msg
        return f"{type(e).__name__}: {e}"

    def _model_hint(self) -> str:
        try:
            served = [m.id for m in self.client.models.list()]
        except Exception:  # listing is a courtesy; many endpoints restrict it
            return ""
        return "" if self.model in served else f" (model {self.model!r} is not among the served models {served})"

    def chat(self, messages: list[dict], images: Sequence[Any], attempt: int = 0) -> str:
        """Any conversation whose ``{"type": "image"}`` parts stand, in order, for ``images`` (arrays, PIL images or
        ``EncodedImage``; the judge's calling convention, multi-turn retries included). Raises BackendError on
        failure. ``attempt`` numbers a repeat of the same request; every call is sent, so it matters only to a
        cache in front of this method (``lego_edit.evaluation.judge_cache``)."""
        queue = list(images)
        converted = []
        for m in messages:
            content = m["content"]
            if isinstance(content, list):
                parts = []
                for part in content:
                    if part.get("type") == "image":
                        if not queue:
                            raise BackendError("more image placeholders than images")
                        parts.append({"type": "image_url", "image_url": {"url": image_data_url(queue.pop(0))}})
                    else:
                        parts.append({"type": "text", "text": part.get("text", "")})
                content = parts
            converted.append({"role": m["role"], "content": content})
        result = self._send(0, converted)
        if isinstance(result, BackendError):
            raise result
        return result

    def _one(self, index: int, request: GenerationRequest) -> str | BackendError:
        try:
            messages = self.messages(request)
        except (ValueError, OSError) as e:
            return BackendError(f"cannot encode the request's images: {e}", index)
        return self._send(index, messages)

    def _send(self, index: int, messages: list[dict]) -> str | BackendError:
        attempt = 0
        while True:
            attempt += 1
            try:
                resp = self.client.chat.completions.create(model=self.model, messages=messages, **self.params)
            except self._openai.OpenAIError as e:
                transient = self._transient(e)
                if not transient or attempt > self.max_retries:
                    tail = f" (after {attempt} attempts)" if attempt > 1 else ""
                    return BackendError(self._describe(e) + tail, index, retryable=transient, attempts=attempt)
                # Full jitter keeps concurrent workers from retrying in lockstep.
                time.sleep(self._rng.uniform(0, self.backoff_s * 2 ** (attempt - 1)))
                continue
            if not resp.choices:
                return BackendError("the server returned no choices", index, attempts=attempt)
            return resp.choices[0].message.content or ""
