"""What every API dialect adapter provides, and what the request path asks of it.

A *dialect* is one provider API family as clients speak it (OpenAI, Anthropic, later
Gemini, Bedrock): its error shape, its rate-limit headers, its model listing. A *surface*
is one operation of a dialect (``POST /v1/chat/completions``): which fields spendgate may
change in a request, where usage lives in its response, how its stream is metered. The
pipeline holds a surface and calls these methods; it never branches on which dialect it
is. Pure: no IO.

Adding a dialect is adding a module: a `DialectAdapter` subclass, its `SurfaceSpec`
subclasses and stream meters, registered in `spendgate.dialects`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, ClassVar, Protocol, TypeVar

import orjson

from spendgate.dialects.hidden import NO_HIDDEN_INPUT, HiddenInput
from spendgate.domain import tokens
from spendgate.domain.ledger import Surface
from spendgate.domain.models import Dialect, ModelRoute
from spendgate.domain.output_tokens import GeneratedText
from spendgate.domain.usage import Usage
from spendgate.errors import GatewayError, InvalidRequest, RateLimited, RateWindow
from spendgate.upstream.framing import Framing
from spendgate.upstream.sse import SseEvent

T = TypeVar("T")

# ---------------------------------------------------------------------------- dialects


class DialectAdapter(ABC):
    """Errors, rate-limit headers and model listings in one dialect's own shape."""

    dialect: ClassVar[Dialect]
    # The dialect's error ``type`` per error class (the nearest class in the MRO wins).
    error_types: ClassVar[Mapping[type[GatewayError], str]] = {}
    # Statuses that differ from `GatewayError.status` in this dialect.
    statuses: ClassVar[Mapping[type[GatewayError], int]] = {}
    request_id_header: ClassVar[str] = "x-request-id"

    @abstractmethod
    def owns(self, path: str, headers: Mapping[str, str]) -> bool:
        """Whether a request to ``path`` speaks this dialect (for errors raised before a
        surface is known: unknown routes, the model listing)."""

    def error_status(self, error: GatewayError) -> int:
        return _nearest(self.statuses, type(error), error.status)

    def error_type(self, error: GatewayError) -> str:
        return _nearest(self.error_types, type(error), "api_error")

    @abstractmethod
    def error_body(self, error: GatewayError, request_id: str | None) -> dict[str, Any]:
        """The error response's body."""

    def error_headers(self, error: GatewayError, request_id: str | None) -> dict[str, str]:
        headers = error.headers()
        if isinstance(error, RateLimited) and error.window is not None:
            headers.update(self.rate_headers([error.window]))
        if request_id:
            headers["x-spendgate-request-id"] = request_id
            headers[self.request_id_header] = request_id
        return headers

    @abstractmethod
    def rate_headers(self, windows: Iterable[RateWindow]) -> dict[str, str]:
        """The dialect's rate-limit headers, one set per kind of window given."""

    @abstractmethod
    def model_list(self, routes: Sequence[ModelRoute], aliases: Mapping[str, str]) -> Any:
        """The body of ``GET /v1/models``: the caller's models, then its aliases (name ->
        the model each means), in this dialect's own listing shape."""

    def model_entry(self, listing: Any, name: str) -> Any | None:
        """The body of ``GET /v1/models/{name}``: that model's entry in `model_list`'s
        ``listing`` (None: not there, to the caller a model that does not exist)."""
        return next((entry for entry in listing["data"] if entry["id"] == name), None)


def _nearest(table: Mapping[type[GatewayError], T], kind: type, default: T) -> T:
    for klass in kind.__mro__:
        if klass in table:
            return table[klass]
    return default


# ---------------------------------------------------------------------------- streams


class Action(Enum):
    """What the relay does with one upstream event (see `StreamMeter.feed`).

    * ``FORWARD``: send the event to the client now;
    * ``DROP``: never send it (the usage chunk spendgate asked for but the client did not);
    * ``HOLD``: the terminal event (``[DONE]``, ``message_stop``, ``response.completed``):
      sent only after the ledger row is durable, so a client never sees the end of a
      response whose spend could still be lost;
    * ``RELEASE``: an event after one held as the end, which was not the end after all (a
      Gemini chunk after one whose candidates all said ``finishReason``): what is held is
      sent now, as if forwarded, and this event is held in its place.
    """

    FORWARD = "forward"
    DROP = "drop"
    HOLD = "hold"
    RELEASE = "release"


class StreamMeter(Protocol):
    """Reads a relayed stream event by event: finds the provider's usage, remembers what
    was generated (for an estimate when usage never comes), and tells the relay what to do
    with each event."""

    served_model: str | None
    upstream_error: str | None
    finished: bool
    usage_problem: str | None  # why the usage seen could not be believed (after `usage`)

    def feed(self, event: SseEvent) -> Action: ...

    def usage(self) -> Usage | None: ...

    generated: GeneratedText  # what the stream generated, in bounded memory

    def error_event(self, code: str, message: str) -> bytes: ...

    def cut_events(self, usage: Usage) -> bytes:
        """The dialect's clean ending for a stream spendgate stops at the output ceiling."""
        ...


class MeterBase:
    """What every stream meter keeps: the model that served, an upstream error, whether the
    terminal event came, the last usage object seen and the generated text's pieces; and
    why the usage could not be believed (``usage_problem``, once `usage` found one)."""

    def __init__(self) -> None:
        self.served_model: str | None = None
        self.upstream_error: str | None = None
        self.finished = False
        self.usage_problem: str | None = None
        self._usage: dict[str, Any] | None = None
        self.generated = GeneratedText()

    def _vetted(
        self, problem: Callable[[Mapping[str, Any]], str | None]
    ) -> Mapping[str, Any] | None:
        """The last usage object seen, if it can be believed (else None, and why)."""
        if self._usage is None:
            return None
        self.usage_problem = problem(self._usage)
        return None if self.usage_problem else self._usage


def count_problem(
    usage: Mapping[str, Any],
    required: Sequence[str],
    nested: Mapping[str, Sequence[str]],
    optional: Sequence[str] = (),
) -> str | None:
    """Why a provider's usage object cannot be believed, or None: a required count is
    missing, or a count is not a non-negative integer (a negative, a string, a float)."""
    for name in required:
        if usage.get(name) is None:
            return f"usage without {name}"
    checks = [(name, usage.get(name)) for name in (*required, *optional)]
    for parent, names in nested.items():
        inner = usage.get(parent)
        if isinstance(inner, Mapping):
            checks += [(f"{parent}.{name}", inner.get(name)) for name in names]
    for name, value in checks:
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            return f"usage {name} is {value!r}, not a count"
    return None


def sse_event(data: dict[str, Any], event: str | None = None) -> bytes:
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + orjson.dumps(data) + b"\n\n"


def load_object(data: bytes) -> dict[str, Any] | None:
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def error_text(error: object) -> str:
    if isinstance(error, dict):
        parts = [str(error.get(k)) for k in ("type", "code", "message") if error.get(k)]
        return ": ".join(parts)[:500] or "error"
    return str(error)[:500]


# ---------------------------------------------------------------------------- surfaces


@dataclass(frozen=True, slots=True)
class Prepared:
    body: bytes  # what goes upstream
    stream: bool
    client_wants_usage: bool
    framing: Framing | None = None  # the request's own stream framing (None: the provider's)


@dataclass(frozen=True)
class SurfaceSpec:
    """One operation of a dialect. Subclasses override the hooks their API needs; the
    defaults fit a surface that is neither streamed nor billed (token counting)."""

    surface: Surface
    adapter: DialectAdapter
    path: str
    streams: bool = False
    billed: bool = False
    ceiling_fields: tuple[str, ...] = ()  # where the request states its output ceiling
    # The model is named in the path (``{model}`` in `path`, Gemini), not in the body.
    model_in_path: bool = False
    # The gateway key may come as ``?key=`` (Gemini's REST clients); it never goes upstream.
    key_in_query: bool = False

    @property
    def dialect(self) -> Dialect:
        return self.adapter.dialect

    @property
    def routes(self) -> tuple[str, ...]:
        """The gateway paths this surface is served on (aiohttp route patterns)."""
        return (self.path,)

    def upstream_path(self, request_path: str) -> str:
        """The path to ask the provider on (``{model}``: the upstream model's place)."""
        return self.path

    def framing_for(self, query: Mapping[str, str]) -> Framing | None:
        """How the answer's stream is framed when the query chooses it (None: the
        provider's usual framing)."""
        return None

    def asks_stream(self, body: Mapping[str, Any]) -> bool:
        """Whether the request asks for a streamed answer (the body's ``stream`` by
        default; a surface that always streams says so whatever the body holds)."""
        return self.streams and body.get("stream") is True

    # -- the request -----------------------------------------------------------------

    def input_counter(self, model: str, body: Mapping[str, Any]) -> tokens.TokenCount:
        """The request's input tokens, exact or an upper bound (see `spendgate.domain.tokens`)."""
        return tokens.TokenCount(tokens=0, exact=True)

    def check(self, body: Mapping[str, Any]) -> None:
        """Refuse, before anything is decided, a body whose money-deciding fields the
        gateway and the provider could read differently: ``stream`` that is not a boolean
        (a lenient server streams on ``"true"``), an output ceiling that is not a positive
        integer (0 falls through to the other field on servers that read ``a or b``), two
        ceiling fields that disagree (a server may honour either). `InvalidRequest`, in the
        dialect's own shape."""
        stream = body.get("stream")
        if stream is not None and not isinstance(stream, bool):
            raise InvalidRequest("'stream' must be true or false.", param="stream")
        found: dict[str, int] = {}
        for name in self.ceiling_fields:
            value = body.get(name)
            if value is None:
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InvalidRequest(f"'{name}' must be a positive integer.", param=name)
            found[name] = value
        if len(set(found.values())) > 1:
            shown = " and ".join(f"'{name}': {value}" for name, value in found.items())
            raise InvalidRequest(
                f"The request sets {shown}: providers differ in which one they honour, so "
                "spendgate cannot price it. Send one of them (or the same value in both).",
                param=next(iter(found)),
            )
        self.choices(body)

    def choices(self, body: Mapping[str, Any]) -> int:
        """How many answers the request asks for (each up to the output ceiling)."""
        return 1

    def requested_output(self, body: Mapping[str, Any]) -> tuple[int | None, int]:
        """The output ceiling per choice the request states (None: none), and its choices.
        The body has passed `check`: every ceiling field it sets holds the same value."""
        ceiling = next(
            (body[name] for name in self.ceiling_fields if body.get(name) is not None), None
        )
        return ceiling, self.choices(body)

    def hidden_input(self, body: Mapping[str, Any]) -> HiddenInput:
        """What the provider may bill that the body does not show (`dialects.hidden`)."""
        return NO_HIDDEN_INPUT

    def service_tiers(
        self, body: Mapping[str, Any], account_default: str | None
    ) -> tuple[str | None, ...]:
        """The service tiers the provider may serve the request in (None: standard);
        ``account_default``: the tier the provider account runs requests in when they do
        not choose one (`providers.*.default_service_tier`)."""
        return (account_default,)

    def end_turn(self, raw: bytes) -> bytes:
        """A stream event (or a whole answer) that says the output stopped at its ceiling,
        told as the end of the turn, for a coding agent whose ceiling a budget lowered
        (`spendgate.dialects.agents`). By default: unchanged."""
        return raw

    def end_turn_waits(self, raw: bytes) -> bool:
        """Whether a stream event's telling depends on how the stream ends (an item left
        incomplete, before the terminal event that says why): the relay keeps it back and
        tells it with the stream's end, in `end_turn_all`. By default: none does."""
        return False

    def end_turn_all(self, events: Sequence[bytes]) -> bytes:
        """The stream's last events (those kept back, spendgate's own, the held terminal
        event), each told by `end_turn`."""
        return b"".join(self.end_turn(event) for event in events)

    def cache_writes(self, body: Mapping[str, Any]) -> tuple[bool, bool]:
        """Whether the request can be billed for writing its input to the provider's cache,
        at the 5-minute rate and at the 1-hour rate. By default: whichever the model's
        price has (a provider that caches by itself may write any request)."""
        return True, True

    def may_hold_audio(self, body: Mapping[str, Any]) -> bool:
        """Whether the input may hold audio billed at the model's audio input rate."""
        return False

    def min_ceiling(self, body: Mapping[str, Any]) -> int:
        """The lowest output ceiling the upstream accepts for this body."""
        return 1

    def ceiling_targets(self, body: Mapping[str, Any], *, legacy_field: bool) -> list[str]:
        """Where to write the output ceiling: every field the request set (so that whichever
        the provider honours holds the same value), else the surface's usual field."""
        present = [name for name in self.ceiling_fields if body.get(name) is not None]
        return present or [self.ceiling_fields[0]]

    def set_ceiling(self, body: dict[str, Any], ceiling: int, *, legacy_field: bool) -> None:
        for name in self.ceiling_targets(body, legacy_field=legacy_field):
            body[name] = ceiling

    def adjust_stream(self, body: dict[str, Any]) -> bool:
        """Changes a streamed request needs so that its usage can be metered; returns
        whether the client itself asked for the usage."""
        return True

    def prepare(
        self,
        body: dict[str, Any],
        upstream_model: str,
        *,
        ceiling: int | None = None,
        legacy_field: bool = False,
    ) -> Prepared:
        """The body that goes upstream: the body as spendgate parsed and priced it, with the
        fields spendgate must set (the model, the output ceiling, stream usage), serialized
        again. Never the client's bytes as they came: a body holding a key twice (``model``,
        ``max_tokens``) means what its parser makes of it, and a provider's parser that
        keeps the first where orjson keeps the last would serve a model or a ceiling that
        was never priced or allowed. Serializing costs a tenth of parsing (orjson: 0.1 µs
        for a short chat, 7 µs for 60 KB)."""
        stream = self.asks_stream(body)
        if not self.model_in_path and body.get("model") != upstream_model:
            body["model"] = upstream_model
        if ceiling is not None and self.ceiling_fields:
            self.set_ceiling(body, ceiling, legacy_field=legacy_field)
        client_wants_usage = True
        if stream:
            client_wants_usage = self.adjust_stream(body)
        return Prepared(
            body=orjson.dumps(body), stream=stream, client_wants_usage=client_wants_usage
        )

    # -- the response ----------------------------------------------------------------

    def meter(self, prepared: Prepared, body: Mapping[str, Any]) -> StreamMeter:
        """The meter of one streamed answer (only surfaces that stream have one)."""
        raise TypeError(f"{self.surface.value} does not stream")

    def parse_usage(self, usage: Mapping[str, Any]) -> Usage:
        """The provider's ``usage`` object in normal form (it has passed `usage_problem`)."""
        return Usage()

    def usage_problem(self, usage: Mapping[str, Any]) -> str | None:
        """Why the provider's ``usage`` object cannot be believed, or None."""
        return None

    def usage_of(self, response: Mapping[str, Any]) -> tuple[Usage | None, str | None]:
        """Usage of a non-streamed response, or None and why it has none to believe (a free
        surface reports an empty one)."""
        if not self.billed:
            return Usage(), None
        raw = response.get("usage")
        if not isinstance(raw, dict):
            return None, "no usage in the response"
        problem = self.usage_problem(raw)
        if problem:
            return None, problem
        return self.billed_as(self.parse_usage(raw), response), None

    def billed_as(self, usage: Usage, response: Mapping[str, Any]) -> Usage:
        """``usage`` with what the answer says beyond its usage object (the service tier,
        tool calls), where a dialect reports those elsewhere."""
        return usage

    def tier_reported(self, headers: Mapping[str, str]) -> str | None:
        """The service tier an answer's headers say served it, where a provider says so
        only there (Gemini); by default None."""
        return None

    def served_in(self, usage: Usage, body: Mapping[str, Any], reported: str | None) -> Usage:
        """``usage`` in the tier that served it, given the body and `tier_reported`, where
        its usage object does not say; by default unchanged."""
        return usage

    def response_text(self, response: Mapping[str, Any]) -> str:
        """The generated text of a non-streamed response, for estimating its output."""
        return ""

    def estimate(self, model: str, body: Mapping[str, Any], output_tokens: int) -> Usage:
        """An upper-bound estimate, marked as such, for when the provider reported nothing;
        ``output_tokens``: those of the text it generated, as the model counts them."""
        if not self.billed:
            return Usage(estimated=True)
        input_tokens = self.input_counter(model, body).tokens
        audio = input_tokens if self.may_hold_audio(body) else 0  # all of it, at most
        return Usage(
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            estimated=True,
            audio_input_tokens=audio,
        )
