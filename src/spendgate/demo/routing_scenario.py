"""The routing chapter's world: the seed's story told twice on one ledger.

Before, the model called ``default`` is the strongest one (Claude Opus on the Anthropic API,
GPT-4o on OpenAI's), and two heavy Claude Code users have pinned Opus by name; shadow aliases
try the cheaper default on the side. After, one line changed: ``default`` is Claude Sonnet /
GPT-4o-mini, a rewrite rule moves team ml's Opus requests to Sonnet, and a shadow rule shows
what the same would save for team web. The same cast sends the same requests both times
(their token counts drawn once), so the difference in spend is the routing's doing.
Pure: no IO.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path
from typing import Any

from spendgate.config import Config, parse_config
from spendgate.demo.scenario import CAST, ORG, Api, CallSpec, Person, base_config_data

ALIAS = "default"
STRONG = {"anthropic": "claude-opus-4-1", "openai": "gpt-4o"}
CHEAP = {"anthropic": "claude-sonnet-4-6", "openai": "gpt-4o-mini"}
PINNED_USERS = ("dana", "tomas")  # Claude Code pinned to Opus by name
PINNED_MODEL = "claude-opus-4-1"
REWRITTEN_TEAM = "ml"  # the rewrite rule's team (dana's)
SHADOWED_TEAM = "web"  # the shadow rewrite rule's team (tomas's)
WINDOW_S = 3.0  # each session sends what it would in this many seconds of the main chapter
SPEED = 25.0  # provider pacing: a few tens of milliseconds per call


class Phase(Enum):
    BEFORE = "before"
    AFTER = "after"


def _alias(name: str, to: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "kind": "alias", "alias": ALIAS, "to": to, **extra}


def _rewrite(name: str, team: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "kind": "rewrite",
        "scope": "team",
        "match": team,
        "models": ["claude-opus-*"],
        "to": CHEAP["anthropic"],
        **extra,
    }


def routing_rules(phase: Phase) -> list[dict[str, Any]]:
    """``routing.rules`` for one phase; the alias rules keep their names, only ``to``
    changes. The shadow aliases are scoped to the org, which makes them more specific than
    the enforced ones, so the shadow walk picks them."""
    if phase is Phase.BEFORE:
        return [
            _alias("default-anthropic", STRONG["anthropic"]),
            _alias("default-openai", STRONG["openai"]),
            _alias("try-sonnet", CHEAP["anthropic"], scope="org", match=ORG, shadow=True),
            _alias("try-4o-mini", CHEAP["openai"], scope="org", match=ORG, shadow=True),
        ]
    return [
        _alias("default-anthropic", CHEAP["anthropic"]),
        _alias("default-openai", CHEAP["openai"]),
        _rewrite(f"{REWRITTEN_TEAM}-no-opus", REWRITTEN_TEAM),
        _rewrite(f"{SHADOWED_TEAM}-no-opus", SHADOWED_TEAM, shadow=True),
    ]


def routing_config_data(sim_url: str, db_path: Path, phase: Phase) -> dict[str, Any]:
    """The chapter's gateway config: the demo's providers and models, no guards (the same
    requests must be served both times), and this phase's routing rules."""
    return {**base_config_data(sim_url, db_path), "routing": {"rules": routing_rules(phase)}}


def routing_config(sim_url: str, db_path: Path, phase: Phase) -> Config:
    return parse_config(routing_config_data(sim_url, db_path, phase), "spendgate demo")


def _asked(person: Person, call: CallSpec) -> CallSpec:
    """What the chapter's client asks for: embeddings and pinned Opus by name, the rest
    ``default`` (whatever the gateway makes of it)."""
    if call.api is Api.EMBEDDINGS:
        return call
    if person.user in PINNED_USERS and call.model == PINNED_MODEL:
        return call
    return replace(call, model=ALIAS)


@dataclass(frozen=True, slots=True)
class ChapterCall:
    person: Person
    call: CallSpec
    seed: int  # draws the request's token counts and text, the same in both phases


def chapter_calls(seed: int) -> list[ChapterCall]:
    """Every call of the chapter: each session of the cast (the stuck agent aside) sends as
    many as it would in `WINDOW_S` seconds of the main chapter."""
    rng = random.Random(seed)
    calls = []
    for person in CAST:
        workload = person.workload
        if workload.stuck:
            continue
        weights = [call.weight for call in workload.calls]
        rounds = max(1, round(WINDOW_S / workload.pause_s)) * workload.sessions
        for _ in range(rounds * workload.burst):
            call = rng.choices(workload.calls, weights)[0]
            calls.append(ChapterCall(person, _asked(person, call), rng.getrandbits(32)))
    return calls
