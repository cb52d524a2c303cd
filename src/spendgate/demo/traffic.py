"""Synthetic traffic over real HTTP: every member of the cast runs its sessions against the
gateway, in the wire format of the client it imitates (`spendgate.demo.calls`).

Clients behave as the official SDKs do with spendgate's refusals: a ``429`` that carries
``x-should-retry: true`` and ``retry-after-ms`` is sent again after that wait (at most
``MAX_RETRIES`` times, numbered in ``x-stainless-retry-count``); a refusal marked
``x-should-retry: false`` (budget exhausted, loop detected) is not retried.

The story is counted, not timed: after `stop_sending` the sessions of a key that plays a
chapter (`spendgate.demo.scenario.Workload.chapter`) go on until spendgate has refused that
key as often as the chapter needs; everyone else stops. `abort` stops them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import aiohttp

from spendgate.demo.calls import Request, build_request, retried
from spendgate.demo.scenario import Person

MAX_RETRIES = 2  # the official SDKs' default
REFUSED = frozenset({402, 413, 429})  # spendgate's budget, cap, rate-limit and loop refusals


@dataclass(slots=True)
class TrafficStats:
    sent: int = 0
    failed: int = 0  # answered with an error status other than a refusal, or no answer at all
    last_failure: str | None = None
    refused: int = 0  # refused by spendgate before the call: budget, limit, loop
    retried: int = 0  # refusals the client sat out (retry-after) and sent again
    in_flight: int = 0
    cut: int = 0  # calls in flight when `abort` cancelled them
    refused_by_key: dict[str, int] = field(default_factory=dict)  # key name -> refusals


@dataclass(slots=True)
class Traffic:
    """Runs every session of the cast until `stop_sending`, then lets calls in flight end."""

    base_url: str
    cast: Sequence[tuple[Person, str]]
    speed: float = 1.0
    seed: int = 7
    stats: TrafficStats = field(default_factory=TrafficStats)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)  # the deadline: no new sends
    _halt: asyncio.Event = field(default_factory=asyncio.Event)  # abort: not even the story's
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _http: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            timeout=aiohttp.ClientTimeout(total=120),
        )
        number = 0
        for person, secret in self.cast:
            for session in range(person.workload.sessions):
                number += 1
                rng = random.Random(self.seed * 1_000 + number)
                name = f"{person.key_name}/{session}"
                self._tasks.append(asyncio.create_task(self._session(person, secret, rng, name)))

    def stop_sending(self) -> None:
        """No new sends, except from the keys whose chapter of the story is still open."""
        self._stop.set()

    def open_chapters(self) -> list[str]:
        """The keys whose chapter has not yet had its refusals, in cast order."""
        return [
            person.key_name
            for person, _ in self.cast
            if self.stats.refused_by_key.get(person.key_name, 0) < person.workload.chapter
        ]

    def _sending(self, person: Person) -> bool:
        if self._halt.is_set():
            return False
        return not self._stop.is_set() or person.key_name in self.open_chapters()

    async def drain(self, timeout_s: float) -> None:
        """Stop sending; wait for the calls in flight and the open chapters (at most
        ``timeout_s``), then cancel."""
        self.stop_sending()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=timeout_s)
            if pending:
                await self.abort()

    async def abort(self) -> None:
        """Cancel every session now: calls in flight are cut, as a client would on Ctrl-C."""
        self.stop_sending()
        self._halt.set()
        self.stats.cut += self.stats.in_flight
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def close(self) -> None:
        await self.abort()
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def _session(self, person: Person, secret: str, rng: random.Random, name: str) -> None:
        workload = person.workload
        weights = [call.weight for call in workload.calls]
        stuck = None
        if workload.stuck:  # every session of the key sends this one request, unchanged
            stuck_rng = random.Random(person.key_name)
            stuck = build_request(workload.calls[0], secret, stuck_rng, speed=self.speed)
        await self._pause(person, rng.uniform(0, workload.pause_s) / self.speed)
        while self._sending(person):
            batch = []
            for _ in range(workload.burst):
                call = rng.choices(workload.calls, weights)[0]
                batch.append(
                    stuck or build_request(call, secret, rng, speed=self.speed, session=name)
                )
            await asyncio.gather(*(self._send(person, request) for request in batch))
            await self._pause(person, rng.expovariate(1 / workload.pause_s) / self.speed)

    async def _pause(self, person: Person, seconds: float, *, retry: bool = False) -> None:
        """Sleep, cut short when this session is to stop: at the deadline, or (for a key
        whose chapter is still open, or sitting out a refusal of its chapter) at `abort`."""
        story = person.workload.chapter if retry else person.key_name in self.open_chapters()
        stop = self._halt if story else self._stop
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)

    async def _send(self, person: Person, request: Request) -> None:
        for attempt in range(MAX_RETRIES + 1):
            answer = await self._post(retried(request, attempt) if attempt else request)
            if answer is None:
                return
            status, wait_s = answer
            if status in REFUSED:
                self.stats.refused += 1
                refused = self.stats.refused_by_key
                refused[person.key_name] = refused.get(person.key_name, 0) + 1
            elif status >= 400:
                self._failed(f"{request.path}: HTTP {status}")
            if wait_s is None or attempt == MAX_RETRIES:
                return
            await self._pause(person, wait_s, retry=True)
            if self._halt.is_set() or (self._stop.is_set() and not person.workload.chapter):
                return  # no new sends after the deadline, but a chapter's retries (the
                # rate-limit chapter ends with the refused requests served on a retry)
            self.stats.retried += 1

    async def _post(self, request: Request) -> tuple[int, float | None] | None:
        """The status and, for a refusal to retry, the wait; None when no answer came."""
        assert self._http is not None, "start() first"
        url = self.base_url + request.path
        self.stats.in_flight += 1
        try:
            async with self._http.post(url, data=request.body, headers=request.headers) as reply:
                await reply.read()  # a stream is read to its end, as an SDK would
                status, headers = reply.status, reply.headers
        except (aiohttp.ClientError, TimeoutError) as exc:
            self._failed(f"{request.path}: {type(exc).__name__}")
            return None
        finally:
            self.stats.in_flight -= 1
        self.stats.sent += 1
        wait_ms = headers.get("retry-after-ms", "")
        if status == 429 and headers.get("x-should-retry") == "true" and wait_ms.isdigit():
            return status, int(wait_ms) / 1000
        return status, None

    def _failed(self, what: str) -> None:
        self.stats.failed += 1
        self.stats.last_failure = what
