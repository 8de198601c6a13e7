"""The critic (judge) that scores an edit: (instruction, source image, edited image) -> score in [0, 1].

Backends behind one interface:
  * ``local`` with architecture ``film`` (default): a small CNN conditioned on the instruction's words by FiLM
    (``film_critic``), trained here to rank edits; the score is sigmoid(logit).
  * ``local`` with architecture ``vlm``: a small VLM of the Builder's architecture fine-tuned on the critic
    shards; the score is P("yes") / (P("yes") + P("no")) for "is the second image the first edited as instructed?".
  * ``openai``: a large VLM behind an OpenAI-compatible endpoint, asked VIEScore-style for semantic
    consistency (SC) and perceptual quality (PQ), 0-10 each; the score is sqrt(SC*PQ) / 10. An answer that
    stays unreadable after retries gives None (unscored), never an invented number.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from ..bricks.vlm_prompts import CRITIC_CHOICES, CRITIC_PROMPT, critic_images
from ..workflow.values import rgb

log = logging.getLogger(__name__)


@dataclass
class CriticScore:
    score: float | None  # in [0, 1]; None = unscored
    sc: float | None = None  # semantic consistency 0-10 (judge backends)
    pq: float | None = None  # perceptual quality 0-10 (judge backends)
    error: str | None = None


class Critic(Protocol):
    def score(
        self, instructions: list[str], sources: list[np.ndarray], edited: list[np.ndarray]
    ) -> list[CriticScore]: ...


def critic_messages(instruction: str) -> list[dict]:
    from .vlm import chat

    return chat(CRITIC_PROMPT.format(instruction=instruction), 3)


class LocalCritic:
    def __init__(self, path: str | None = None, device: str | None = None, batch_size: int = 32, model=None):
        from .vlm import load_vlm

        self.model, self.processor = model if model is not None else load_vlm(path, device=device)
        self.batch_size = batch_size

    def score(self, instructions, sources, edited) -> list[CriticScore]:
        from .vlm import score_choices

        probs = score_choices(
            self.model,
            self.processor,
            [critic_messages(t) for t in instructions],
            [critic_images(s, e) for s, e in zip(sources, edited)],
            CRITIC_CHOICES,
            normalize=True,
            batch_size=self.batch_size,
        )
        return [CriticScore(p[CRITIC_CHOICES[0]]) for p in probs]


class FilmCriticScorer:
    """The FiLM CNN critic behind the Critic interface (batched, no gradients). Given several models (an ensemble
    of differently seeded critics), the score is the sigmoid of their mean logit."""

    def __init__(self, path: str | None = None, device: str | None = None, batch_size: int = 256, model=None):
        from .film_critic import FilmCritic, film_critic_members

        if model is not None:
            self.models = list(model) if isinstance(model, list | tuple) else [model]
        else:
            members = film_critic_members(path)
            if not members:
                raise FileNotFoundError(
                    f"{path}: no FiLM critic (film_critic.json, or member-<k>/ folders holding one)"
                )
            self.models = [FilmCritic.from_pretrained(m, device=device) for m in members]
        self.batch_size = batch_size

    def score(self, instructions, sources, edited) -> list[CriticScore]:
        import torch

        out: list[CriticScore] = []
        with torch.no_grad():
            for m in self.models:
                m.eval()
            for i in range(0, len(instructions), self.batch_size):
                j = slice(i, i + self.batch_size)
                logits = torch.stack([m.logits(instructions[j], sources[j], edited[j]).cpu() for m in self.models])
                out.extend(CriticScore(float(p)) for p in torch.sigmoid(logits.mean(0)).tolist())
        return out


@dataclass
class OpenAICriticConfig:
    """An OpenAI-compatible judge endpoint (base URL, model, API key variable)."""

    base_url: str = ""
    model: str = ""
    api_key_env: str = "OPENAI_API_KEY"
    timeout: float = 120.0
    max_retries: int = 2
    concurrency: int = 4
    extra: dict = field(default_factory=dict)


class OpenAICritic:
    """The endpoint judge: VIEScore-style SC/PQ in the project's wording (``score``), GEdit-Bench and ImgEdit-Bench
    scoring (``gedit_scores``, ``imgedit_scores``) under their published protocols when given, else in the
    project's wording. ``concurrency`` requests in flight; transport failures retried with backoff by the backend;
    with a ``cache`` (``JudgeCache``) an answer already given for the same images, prompt and model is reused."""

    def __init__(
        self,
        cfg: OpenAICriticConfig,
        *,
        max_tokens: int = 512,
        temperature: float | None = 0.0,
        cache=None,
        gedit_protocol=None,
        imgedit_protocol=None,
    ):
        from ..builder.backends import OpenAIChatBackend
        from ..evaluation.judge import VIEScoreJudge
        from ..evaluation.judge_cache import CachedChat

        self.backend = OpenAIChatBackend(
            cfg.base_url,
            cfg.model,
            api_key_env=cfg.api_key_env,
            timeout=cfg.timeout,
            max_retries=cfg.max_retries,
            max_tokens=max_tokens,
            temperature=temperature,
            concurrency=cfg.concurrency,
        )
        self.chat = self.backend.chat if cache is None else CachedChat(self.backend.chat, cache, cfg.model)
        self.judge = VIEScoreJudge(self.chat, max_retries=cfg.max_retries)
        self.gedit_protocol, self.imgedit_protocol = gedit_protocol, imgedit_protocol

    def _map(self, fn, *columns) -> list:
        """``fn`` over the rows, ``concurrency`` judge requests in flight (each retried by the backend), in order."""
        rows = list(zip(*columns))
        results = map_in_order(fn, rows, self.backend.concurrency, f"judge {self.backend.model}")
        if hasattr(self.chat, "sent"):
            log.info(
                "judge %s: %d requests sent, %d answers from the cache so far",
                self.backend.model,
                self.chat.sent,
                self.chat.hits,
            )
        return results

    def score(self, instructions, sources, edited) -> list[CriticScore]:
        return self._vie_scores(self.judge.score, instructions, sources, edited)

    def gedit_scores(self, instructions, sources, edited) -> list[CriticScore]:
        """GEdit-Bench's SC, PQ and O: under the published VIEScore protocol when given, else as ``score``."""
        if self.gedit_protocol is None:
            return self.score(instructions, sources, edited)
        return self._vie_scores(
            lambda t, s, e: self.gedit_protocol.score(self.chat, t, s, e), instructions, sources, edited
        )

    def _vie_scores(self, judge, instructions, sources, edited) -> list[CriticScore]:
        def one(t, s, e):
            r = judge(t, rgb(s)[:, :, :3], rgb(e)[:, :, :3])
            return CriticScore(r.overall / 10 if r.ok else None, r.sc, r.pq, r.error)

        return self._map(one, instructions, sources, edited)

    def imgedit_scores(self, instructions, edit_types, sources, edited) -> list[float | None]:
        """ImgEdit-Bench's per-type rubric, the sample's mean score: the published prompts when given, else three 1-5
        scores in the project's wording; None where the answer stayed unreadable."""
        from ..evaluation.judge import ImgEditJudge

        if self.imgedit_protocol is not None:
            judge = lambda t, k, s, e: self.imgedit_protocol.score(self.chat, t, k, s, e)  # noqa: E731
        else:
            judge = ImgEditJudge(self.chat, max_retries=self.judge.max_retries).score

        def one(t, k, s, e):
            r = judge(t, k, rgb(s)[:, :, :3], rgb(e)[:, :, :3])
            return r.score if r.ok else None

        return self._map(one, instructions, edit_types, sources, edited)


PROGRESS_LOG_S = 30.0


def map_in_order(fn, rows: list[tuple], concurrency: int, label: str = "judge") -> list:
    """``fn(*row)`` for every row with up to ``concurrency`` calls in flight; results in row order. Progress goes
    to a tqdm bar on a terminal, and to the log every ``PROGRESS_LOG_S`` seconds and at the end (a job's log has no
    terminal; a short batch, such as one GRPO step's rewards, logs one line)."""
    from concurrent.futures import ThreadPoolExecutor, as_completed

    from tqdm.auto import tqdm

    results: list = [None] * len(rows)
    start = last_log = time.monotonic()
    with tqdm(total=len(rows), desc=label, unit="item", disable=None, mininterval=2) as bar:

        def done(count: int) -> None:
            nonlocal last_log
            bar.update(1)
            now = time.monotonic()
            if count == len(rows) or now - last_log >= PROGRESS_LOG_S:
                last_log = now
                log.info("%s: %d/%d items (%.2f items/s)", label, count, len(rows), count / max(now - start, 1e-9))

        if concurrency == 1 or len(rows) < 2:
            for i, row in enumerate(rows):
                results[i] = fn(*row)
                done(i + 1)
            return results
        with ThreadPoolExecutor(concurrency) as pool:
            futures = {pool.submit(fn, *row): i for i, row in enumerate(rows)}
            for count, future in enumerate(as_completed(futures), 1):
                results[futures[future]] = future.result()
                done(count)
    return results


def load_critic(spec: dict, device: str | None = None) -> Critic:
    """``{"backend": "local", "path": ...}`` or ``{"backend": "openai", "base_url": ..., "model": ...}``."""
    backend = spec.get("backend", "local")
    if backend == "local":
        return load_critic_dir(spec["path"], device=device)
    if backend == "openai":
        return OpenAICritic(OpenAICriticConfig(**{k: v for k, v in spec.items() if k != "backend"}))
    raise ValueError(f"unknown critic backend {backend!r} (use local or openai)")


CRITIC_SPEC = "critic.json"  # in a critic folder: an endpoint to use instead of local weights


def load_critic_dir(path, device: str | None = None) -> Critic:
    """The critic a pipeline run trained or configured: local weights, or the endpoint critic.json names."""
    import json
    from pathlib import Path

    from .film_critic import is_film_critic

    spec = Path(path) / CRITIC_SPEC
    if spec.is_file():
        return load_critic(json.loads(spec.read_text()), device=device)
    if is_film_critic(path):
        return FilmCriticScorer(str(path), device=device)
    return LocalCritic(str(path), device=device)
