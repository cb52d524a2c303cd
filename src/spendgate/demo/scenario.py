"""The demo's world: one org, four teams, twenty people and four services, what each sends,
and the budgets and limits the gateway holds them to.

The shape follows the seed: a handful of heavy users on the strongest models (coding agents
on Claude Opus, Codex and notebooks on GPT-4o) drive most of the bill, while most people
and services make many small, cheap calls. Three things go wrong, as they do: a developer
on Claude Opus all day runs through her daily budget, a batch indexer sends bursts, and an
agent gets stuck repeating one request. Those three are chapters of the story, driven by
request counts: the keys that play them keep sending after the deadline until spendgate
has refused each as often as its chapter needs (`Workload.chapter`), so a slow machine
shows the same story, only later. Nothing here does IO except `issue_keys`.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import Any

from spendgate.config import Config, parse_config
from spendgate.services.keys import KeyService, KeySpec

ORG = "acme"
TEAMS = ("ml", "web", "platform", "data")
OPENAI_MODELS = ("gpt-4o-mini", "gpt-4o", "gpt-4.1-mini", "text-embedding-3-small")
ANTHROPIC_MODELS = ("claude-sonnet-4-6", "claude-haiku-4-5", "claude-opus-4-1")
# Provider secrets for the simulator: injected, never read from the real environment.
PROVIDER_ENV = {
    "DEMO_OPENAI_API_KEY": "sk-demo-openai",
    "DEMO_ANTHROPIC_API_KEY": "sk-ant-demo",
}


class Api(Enum):
    CHAT = "/v1/chat/completions"
    RESPONSES = "/v1/responses"
    MESSAGES = "/v1/messages"
    EMBEDDINGS = "/v1/embeddings"


@dataclass(frozen=True, slots=True)
class CallSpec:
    """One kind of request a workload sends; token counts are drawn from the ranges."""

    api: Api
    model: str
    stream: bool
    prompt: tuple[int, int]  # input tokens written into the request
    output: tuple[int, int] = (1, 1)  # tokens the simulated provider generates
    cached: float = 0.0  # share of the prompt the provider reads from its prompt cache
    weight: int = 1


@dataclass(frozen=True, slots=True)
class Workload:
    calls: tuple[CallSpec, ...]
    pause_s: float  # mean pause between two calls of one session
    sessions: int = 1  # sessions running side by side (agents, tabs, workers)
    burst: int = 1  # calls a session sends at once (a batch job)
    stuck: bool = False  # the session sends one request over and over (an agent in a loop)
    # A chapter of the story: refusals of this key the demo waits for. Its sessions keep
    # sending past the deadline until spendgate has refused the key this many times.
    chapter: int = 0


@dataclass(frozen=True, slots=True)
class Person:
    """The holder of one key: a developer (``user`` set) or a service (``user`` None)."""

    key_name: str
    user: str | None
    team: str
    service: str
    workload: Workload
    heavy: bool = False


# ---------------------------------------------------------------------------- workloads

AGENT_OPUS = Workload(
    calls=(
        CallSpec(Api.MESSAGES, "claude-opus-4-1", True, (12_000, 40_000), (300, 900), 0.85),
        CallSpec(Api.MESSAGES, "claude-haiku-4-5", True, (2_000, 6_000), (50, 200), 0.5),
    ),
    pause_s=1.0,
    sessions=2,
)
AGENT_OPUS_ALL_DAY = Workload(  # one long Claude Code session on Opus, all day
    calls=(CallSpec(Api.MESSAGES, "claude-opus-4-1", True, (12_000, 20_000), (300, 900), 0.85),),
    pause_s=0.6,
    chapter=1,  # clamped, then refused
)
CODEX_4O = Workload(
    calls=(CallSpec(Api.RESPONSES, "gpt-4o", True, (10_000, 30_000), (300, 800), 0.6),),
    pause_s=0.8,
    sessions=2,
)
NOTEBOOK_4O = Workload(
    calls=(
        CallSpec(Api.CHAT, "gpt-4o", False, (6_000, 20_000), (200, 700), weight=3),
        CallSpec(Api.EMBEDDINGS, "text-embedding-3-small", False, (2_000, 8_000)),
    ),
    pause_s=0.8,
    sessions=2,
)
AGENT_SONNET = Workload(
    calls=(CallSpec(Api.MESSAGES, "claude-sonnet-4-6", True, (4_000, 12_000), (150, 500), 0.8),),
    pause_s=2.0,
)
CODEX_MINI = Workload(
    calls=(CallSpec(Api.RESPONSES, "gpt-4.1-mini", True, (3_000, 10_000), (100, 400), 0.5),),
    pause_s=1.5,
)
NOTEBOOK_MINI = Workload(
    calls=(
        CallSpec(Api.CHAT, "gpt-4.1-mini", False, (1_000, 4_000), (100, 300), weight=2),
        CallSpec(Api.EMBEDDINGS, "text-embedding-3-small", False, (500, 3_000)),
    ),
    pause_s=1.5,
)
CHAT_MINI = Workload(
    calls=(CallSpec(Api.CHAT, "gpt-4o-mini", True, (200, 1_500), (30, 200)),),
    pause_s=1.5,
)
AGENT_HAIKU = Workload(
    calls=(CallSpec(Api.MESSAGES, "claude-haiku-4-5", True, (500, 3_000), (40, 250), 0.4),),
    pause_s=1.5,
)
REVIEW_BOT = Workload(
    calls=(CallSpec(Api.MESSAGES, "claude-sonnet-4-6", False, (2_000, 6_000), (100, 300)),),
    pause_s=2.5,
)
SUPPORT_CHAT = Workload(
    calls=(CallSpec(Api.CHAT, "gpt-4o-mini", True, (300, 1_200), (40, 160)),),
    pause_s=0.4,
    sessions=6,
)
SEARCH_INDEXER = Workload(  # a batch job: eight documents at once, then a pause
    calls=(CallSpec(Api.EMBEDDINGS, "text-embedding-3-small", False, (2_000, 8_000)),),
    pause_s=2.0,
    burst=8,
    chapter=1,  # a burst meets the rate limit
)
STUCK_AGENT = Workload(  # two sub-agents re-sending the same tool result, again and again
    calls=(CallSpec(Api.MESSAGES, "claude-haiku-4-5", False, (2_000, 4_000), (40, 120)),),
    pause_s=0.5,
    sessions=2,
    stuck=True,
    chapter=1,  # loop detection stops it
)


def _dev(user: str, team: str, service: str, workload: Workload, heavy: bool = False) -> Person:
    return Person(f"{user}-{service}", user, team, service, workload, heavy)


def _service(name: str, team: str, workload: Workload) -> Person:
    return Person(name, None, team, name, workload)


CAST: tuple[Person, ...] = (
    # The few who drive the bill: agents and notebooks on the strongest models.
    _dev("dana", "ml", "claude-code", AGENT_OPUS_ALL_DAY, heavy=True),
    _dev("raj", "platform", "codex", CODEX_4O, heavy=True),
    _dev("tomas", "web", "claude-code", AGENT_OPUS, heavy=True),
    _dev("mei", "data", "notebook", NOTEBOOK_4O, heavy=True),
    # Regular users of mid-priced models.
    _dev("lena", "ml", "claude-code", AGENT_SONNET),
    _dev("omar", "web", "claude-code", AGENT_SONNET),
    _dev("ines", "platform", "codex", CODEX_MINI),
    _dev("kofi", "data", "notebook", NOTEBOOK_MINI),
    _dev("sven", "ml", "codex", CODEX_MINI),
    # Everyone else: small, cheap calls.
    _dev("ana", "web", "chat", CHAT_MINI),
    _dev("ben", "web", "claude-code", AGENT_HAIKU),
    _dev("chloe", "ml", "notebook", NOTEBOOK_MINI),
    _dev("dev", "platform", "chat", CHAT_MINI),
    _dev("eli", "data", "chat", CHAT_MINI),
    _dev("farah", "ml", "claude-code", AGENT_HAIKU),
    _dev("gus", "platform", "claude-code", AGENT_HAIKU),
    _dev("hana", "data", "chat", CHAT_MINI),
    _dev("ivan", "web", "chat", CHAT_MINI),
    _dev("jun", "ml", "chat", CHAT_MINI),
    _dev("kai", "data", "claude-code", AGENT_HAIKU),
    # Services: keys with no user behind them.
    _service("review-bot", "platform", REVIEW_BOT),
    _service("support-chat", "web", SUPPORT_CHAT),
    _service("search-indexer", "data", SEARCH_INDEXER),
    _service("triage-agent", "platform", STUCK_AGENT),
)

HEAVY_USERS = frozenset(p.user for p in CAST if p.heavy and p.user)
GUEST = KeySpec(name="you", user="you", service="your-client", team="web")


# ---------------------------------------------------------------------------- guards

BUDGETED_USER = "dana"
# Dana's Opus requests cost about $0.08-0.13 each; at full pace she sends one every ~3.5 s.
# Each needs $0.50-0.70 of room before it is sent (its input priced at the dearest input
# rate, the cache-write one, with the token count's upper-bound margin; plus 256 output
# tokens), and Claude Code asks for 32,000 output tokens ($2.40 more). So her budget is
# about one request's room plus what the requests of the first half of the run cost (at
# least one): every request is clamped, the ceilings shrink as she spends, and then she is
# refused (her 4th or 5th request in a 20 s run, 12-16 s in on an idle machine). It is
# counted in requests: a slow machine sends fewer by the deadline, and her session then
# goes on (`Workload.chapter`) until she has been refused.
BUDGET_BASE_USD = Decimal("0.60")  # about one request's room
BUDGET_USD_PER_REQUEST = Decimal("0.12")
SECONDS_PER_REQUEST = 3.5  # hers, at speed 1 on an idle machine


def afforded_requests(duration_s: float, speed: float) -> int:
    """How many of Dana's requests her budget is sized for: those of the run's first half."""
    return max(1, round(duration_s * speed / SECONDS_PER_REQUEST / 2))


def budget_usd(duration_s: float, speed: float) -> Decimal:
    """Dana's daily Opus budget: about one request's room plus `afforded_requests`."""
    requests = afforded_requests(duration_s, speed)
    return (BUDGET_BASE_USD + BUDGET_USD_PER_REQUEST * requests).quantize(Decimal("0.01"))


def guards_data(duration_s: float, speed: float) -> dict[str, Any]:
    """Budgets, limits and runaway protection, as the YAML would have them."""
    return {
        "budgets": [
            {
                "name": "dana-opus-daily",
                "scope": "user",
                "match": BUDGETED_USER,
                "models": ["claude-opus-*"],
                "limit_usd": str(budget_usd(duration_s, speed)),
                "period": "daily",
            },
            {"name": "acme-monthly", "scope": "org", "match": ORG, "limit_usd": "25000"},
        ],
        "limits": [
            {
                "name": "embeddings-per-key",
                "scope": "key",
                "models": ["text-embedding-*"],
                "requests": "4/second",
            },
            {
                "name": "tokens-per-user",
                "scope": "user",
                "tokens": "150000/minute",
                "shadow": True,
            },
        ],
        "runaway": {"loop_max_repeats": 3, "loop_window_s": 60},
    }


# ---------------------------------------------------------------------------- config


def demo_config_data(
    sim_url: str, db_path: Path, *, duration_s: float = 20.0, speed: float = 1.0
) -> dict[str, Any]:
    """The gateway's config for the demo, as the YAML would have it."""
    return {**base_config_data(sim_url, db_path), **guards_data(duration_s, speed)}


def base_config_data(sim_url: str, db_path: Path) -> dict[str, Any]:
    """Providers (the simulator), models, prices and the org: no guards, no routing."""
    models: dict[str, Any] = {name: {"provider": "openai"} for name in OPENAI_MODELS}
    models.update({name: {"provider": "anthropic"} for name in ANTHROPIC_MODELS})
    return {
        "server": {"host": "127.0.0.1", "drain_timeout_s": 5},
        "storage": {"url": f"sqlite:///{db_path.resolve()}"},
        "providers": {
            "openai": {
                "kind": "openai",
                "base_url": f"{sim_url}/v1",
                "api_key_env": "DEMO_OPENAI_API_KEY",
            },
            "anthropic": {
                "kind": "anthropic",
                "base_url": sim_url,
                "api_key_env": "DEMO_ANTHROPIC_API_KEY",
            },
        },
        "models": models,
        "pricing": {"builtin_catalog": True},
        "orgs": {ORG: {"teams": list(TEAMS)}},
    }


def demo_config(
    sim_url: str, db_path: Path, *, duration_s: float = 20.0, speed: float = 1.0
) -> Config:
    data = demo_config_data(sim_url, db_path, duration_s=duration_s, speed=speed)
    return parse_config(data, "spendgate demo")


async def issue_keys(keys: KeyService) -> list[tuple[Person, str]]:
    """One key per member of the cast, through the same service as ``spendgate keys create``."""
    issued = []
    for person in CAST:
        spec = KeySpec(
            name=person.key_name,
            user=person.user,
            service=person.service,
            team=person.team,
            tags=("demo",),
        )
        issued.append((person, (await keys.create(spec)).secret))
    return issued
