"""Who judges the evaluation tables: ``evaluation.judge`` (an OpenAI-compatible endpoint), or, when it is left
empty, the run's critic, which is also stage 3's reward model.

A table scored by the model that stage 3 optimised measures the stage-3 row by what it was trained to please, so
every chunk job records the judge's identity and whether it is the reward model (the same endpoint and model, or
the local critic folder stage 3 used), and the report warns on such a table. The identities are compared, never
the objects: two configs naming the same endpoint and model are the same judge.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, fields
from pathlib import Path
from urllib.parse import urlsplit

from .protocols import NOT_PUBLISHED, load_protocol

log = logging.getLogger(__name__)
BENCHMARK_SETS = ("gedit", "imgedit")


@dataclass
class EvaluationJudgeConfig:
    """The judge of the evaluation tables: an OpenAI-compatible endpoint (empty: the run's critic judges).

    It should not be the stage-3 reward model; when it is (left empty, or the same endpoint and model as
    bricks.critic), the report warns on every table it judged."""

    base_url: str = field(
        default="",
        metadata={"help": "Endpoint, e.g. https://api.openai.com/v1; empty: the run's critic (bricks.critic) judges."},
    )
    model: str = field(
        default="",
        metadata={
            "help": "Model the endpoint serves (gpt-4.1 judged the published "
            "GEdit-Bench rows, gpt-4o the ImgEdit ones)."
        },
    )
    api_key_env: str = field(default="OPENAI_API_KEY", metadata={"help": "Environment variable with the key."})
    concurrency: int = field(default=8, metadata={"help": "Judge requests in flight at a time."})
    timeout: float = field(default=120.0, metadata={"help": "Seconds per request before it counts as failed."})
    max_retries: int = field(
        default=3,
        metadata={
            "help": "Retries of a request that failed in transport (connection, time-out, HTTP 408/409/429/5xx), with "
            "exponential backoff and jitter; under the project's own prompts also the re-asks of an unreadable "
            "answer. An item still unscored after them is counted, never given a score."
        },
    )
    max_tokens: int = field(default=1400, metadata={"help": "Answer length limit (VIEScore's published value)."})
    temperature: float | None = field(
        default=None,
        metadata={
            "help": "Sampling temperature; null sends none (the server's default, as both published scorers do)."
        },
    )
    cache: str | None = field(
        default="results/eval/judge_cache.sqlite",
        metadata={
            "help": "sqlite file of the judge's answers, keyed by (images, prompt, model): a rerun or a second table "
            "reuses them; null: no cache."
        },
    )

    def __post_init__(self):
        if bool(self.base_url) != bool(self.model):
            raise ValueError(
                "evaluation.judge: set both base_url and model (an endpoint judge), or neither (the "
                f"run's critic); got base_url={self.base_url!r}, model={self.model!r}"
            )
        if self.concurrency < 1 or self.max_retries < 0 or self.timeout <= 0 or self.max_tokens < 1:
            raise ValueError("evaluation.judge: concurrency and max_tokens must be >= 1, max_retries >= 0, timeout > 0")

    @classmethod
    def from_dict(cls, values: dict | None) -> EvaluationJudgeConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values or {}) - known)
        if unknown:
            raise ValueError(f"evaluation.judge: unknown key(s) {unknown}; known: {sorted(known)}")
        return cls(**(values or {}))


@dataclass
class ProtocolPaths:
    """Local checkouts of the benchmarks' evaluation code, whose published judge prompts are read at run time.

    Null: the project's own wording is used, and the tables say "not the published protocol"."""

    gedit: str | None = field(
        default=None,
        metadata={"help": "A checkout of stepfun-ai/Step1X-Edit (or its GEdit-Bench folder): VIEScore's prompts."},
    )
    imgedit: str | None = field(
        default=None,
        metadata={
            "help": "A checkout of PKU-YuanGroup/ImgEdit (or its Benchmark/Basic folder): the per-type prompts.json."
        },
    )


@dataclass(frozen=True)
class JudgeIdentity:
    """An endpoint model (``base_url`` set) or a local critic folder (``model`` is its path)."""

    model: str
    base_url: str = ""

    @property
    def is_endpoint(self) -> bool:
        return bool(self.base_url)

    @property
    def label(self) -> str:
        return f"{self.model} at {self.base_url}" if self.is_endpoint else f"local critic {self.model}"

    def same_as(self, other: JudgeIdentity) -> bool:
        return self.model == other.model and _endpoint(self.base_url) == _endpoint(other.base_url)


def _endpoint(url: str) -> tuple[str, str, str]:
    """A URL compared by scheme, host:port (case-insensitive) and path without a trailing slash."""
    parts = urlsplit(url.strip())
    return parts.scheme.lower(), parts.netloc.lower(), parts.path.rstrip("/")


def reward_model_identity(critic_dir: str | Path) -> JudgeIdentity:
    """The critic that stage 3 optimised: the endpoint its folder's critic.json names, or the folder itself."""
    from ..models.critic import CRITIC_SPEC

    spec = Path(critic_dir) / CRITIC_SPEC
    if spec.is_file():
        values = json.loads(spec.read_text())
        return JudgeIdentity(values.get("model", ""), values.get("base_url", ""))
    return JudgeIdentity(str(critic_dir))  # as the rule names it (results/bricks/critic): tables stay portable


def judge_identity(cfg: EvaluationJudgeConfig, critic_dir: str | Path) -> JudgeIdentity:
    return JudgeIdentity(cfg.model, cfg.base_url) if cfg.base_url else reward_model_identity(critic_dir)


@dataclass
class EvaluationJudge:
    """The scorer of one evaluation set, who it is, and under which protocol it judges."""

    scorer: object  # a Critic: score(); an endpoint one also gedit_scores() and imgedit_scores()
    identity: JudgeIdentity
    reward_model: JudgeIdentity
    protocol: str = NOT_PUBLISHED
    protocol_published: bool = False

    @property
    def is_reward_model(self) -> bool:
        return self.identity.same_as(self.reward_model)

    def row_labels(self) -> dict:
        """What every row of a chunk records about its judge (the report reads these)."""
        return {
            "judge": self.identity.label,
            "judge_model": self.identity.model if self.identity.is_endpoint else "",
            "judge_protocol": self.protocol,
            "judge_protocol_published": self.protocol_published,
            "judge_is_reward_model": self.is_reward_model,
            "reward_model": self.reward_model.label,
        }

    def close(self) -> None:
        cache = getattr(getattr(self.scorer, "chat", None), "cache", None)
        if cache is not None:
            cache.close()


def load_evaluation_judge(
    cfg: EvaluationJudgeConfig,
    critic_dir: str | Path,
    set_name: str,
    protocol_path: str | None = None,
    reward_critic=None,
) -> EvaluationJudge:
    """The judge of ``set_name``: the configured endpoint, else the run's critic (``reward_critic`` if already
    loaded); an endpoint judge gets the answer cache and, for a benchmark with a checkout, its published protocol."""
    from ..models.critic import CRITIC_SPEC, OpenAICritic, OpenAICriticConfig, load_critic_dir
    from .judge_cache import JudgeCache

    reward = reward_model_identity(critic_dir)
    identity = judge_identity(cfg, critic_dir)
    protocol = load_protocol(set_name, protocol_path) if set_name in BENCHMARK_SETS else None
    if identity.is_endpoint:
        if cfg.base_url:
            endpoint = OpenAICriticConfig(
                base_url=cfg.base_url,
                model=cfg.model,
                api_key_env=cfg.api_key_env,
                timeout=cfg.timeout,
                max_retries=cfg.max_retries,
                concurrency=cfg.concurrency,
            )
            sampling = {"max_tokens": cfg.max_tokens, "temperature": cfg.temperature}
        else:  # the run's endpoint critic, asked as stage 3 asked it
            spec = json.loads((Path(critic_dir) / CRITIC_SPEC).read_text())
            endpoint = OpenAICriticConfig(**{k: v for k, v in spec.items() if k != "backend"})
            sampling = {}
        cache = JudgeCache(cfg.cache) if cfg.cache else None
        scorer = OpenAICritic(
            endpoint,
            cache=cache,
            gedit_protocol=protocol if set_name == "gedit" else None,
            imgedit_protocol=protocol if set_name == "imgedit" else None,
            **sampling,
        )
    else:
        if protocol is not None:
            log.warning(
                "%s: a local critic reads no prompt, so the published protocol at %s is not used",
                set_name,
                protocol.source,
            )
            protocol = None
        scorer = reward_critic if reward_critic is not None else load_critic_dir(critic_dir)
    judge = EvaluationJudge(
        scorer, identity, reward, protocol.label if protocol else NOT_PUBLISHED, protocol is not None
    )
    log.info(
        "%s judged by %s (%s)%s",
        set_name,
        identity.label,
        judge.protocol,
        ": the stage-3 reward model" if judge.is_reward_model else "",
    )
    return judge
