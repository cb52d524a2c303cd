"""Relaying a server-sent-event stream: byte for byte, event by event, metered as it goes,
guarded against outrunning its reserved output ceiling, settled on every path."""

from __future__ import annotations

import asyncio
import re
from functools import partial

from aiohttp import web

from spendgate.dialects import Prepared
from spendgate.dialects.base import Action, StreamMeter
from spendgate.domain.ledger import LedgerRow
from spendgate.domain.output_tokens import GeneratedText
from spendgate.domain.usage import Usage
from spendgate.gateway import Gateway
from spendgate.pipeline.exchange import Exchange, cut_short
from spendgate.pipeline.outcome import answer_and_record, client_headers, record
from spendgate.pipeline.usage_check import believed, capped, compaction_cut_short
from spendgate.upstream.client import Broken, ReadTimeout, UpstreamResponse
from spendgate.upstream.framing import Framing
from spendgate.upstream.sse import EventTooLarge

_EVENT_END = re.compile(rb"\r?\n\r?\n")


class OutputGuard:
    """Notices when a stream has produced more output than its reservation covers.

    It counts with ``o200k_base`` and no safety factor: for Claude and Gemini that count is
    at or below the provider's own, so the guard cuts only streams that have really passed
    the ceiling (an upstream ignoring ``max_tokens``), never a well-behaved one early.
    No ``o200k_base`` token is shorter than a byte, so nothing is counted (and no tokenizer
    loaded) while the stream's text is at most ``limit`` bytes; past that, pieces are
    counted one by one as they arrive (cheap, `GeneratedText.running`), and a whole recount
    confirms before cutting.
    """

    def __init__(self, limit: int, generated: GeneratedText) -> None:
        self.limit = limit
        self.generated = generated
        self.counted = 0

    def over(self) -> bool:
        generated = self.generated
        if generated.running is None:
            if generated.utf8_bytes <= self.limit:
                return False
            generated.guarded()  # counted from here on
        running = generated.running or 0
        if running <= self.limit:
            return False
        self.counted = generated.recount()
        return self.counted > self.limit


class _Relay:
    """Moves one SSE stream from upstream to client, event by event, metering as it goes."""

    def __init__(
        self, exchange: Exchange, meter: StreamMeter, framing: Framing, max_event_bytes: int
    ) -> None:
        self.exchange = exchange
        self.meter = meter
        self.splitter = framing.splitter(max_event_bytes)
        self.held: list[bytes] = []
        self.waiting: list[bytes] = []  # kept back until the end is known (`told`)
        self.disconnected = False
        self.broken: str | None = None
        self.cut = False
        ticket = exchange.ticket
        self.limit = ticket.ceiling * ticket.plan.worst.choices if ticket else None
        self.guard = OutputGuard(self.limit, meter.generated) if self.limit is not None else None
        self.end_turn = exchange.ends_turn_at_clamp

    def told(self, raw: bytes) -> bytes:
        """The stream's last events as the client gets them, after those kept back: a
        clamped agent's ceiling stop is the end of its turn (`spendgate.dialects.agents`)."""
        raw = b"".join(self.waiting) + raw
        if not self.end_turn or not raw:
            return raw
        events = [event + b"\n\n" for event in _EVENT_END.split(raw) if event.strip()]
        return self.exchange.spec.end_turn_all(events)

    def sort(self, chunk: bytes | None) -> bytes:
        """What to send the client now of ``chunk`` (None: the stream's end)."""
        out: list[bytes] = []
        events = self.splitter.feed(chunk) if chunk is not None else self.splitter.flush()
        for event in events:
            action = self.meter.feed(event)
            if action is Action.FORWARD:
                if not self._forward(event.raw, out):
                    break
            elif action is Action.HOLD:
                self.held.append(event.raw)
            elif action is Action.RELEASE:
                released, self.held = self.held, [event.raw]
                if not all(self._forward(raw, out) for raw in released):
                    break
        return b"".join(out)

    def _forward(self, raw: bytes, out: list[bytes]) -> bool:
        """Add an event to what the client gets now; False (and `cut`) when the stream
        has passed its reserved ceiling instead."""
        if self.guard is not None and self.guard.over():
            self.cut = True
            return False
        if not self.end_turn:
            out.append(raw)
        elif self.exchange.spec.end_turn_waits(raw):
            self.waiting.append(raw)
        else:
            out.append(self.exchange.spec.end_turn(raw))
        return True

    def usage(self) -> tuple[Usage, str | None]:
        """The usage to charge, and what was wrong with the provider's (None: believed,
        or the stream was cut short, which is no fault of the provider's)."""
        reported = self.meter.usage()
        if self.meter.finished:
            generated = self.meter.generated
            return believed(self.exchange, reported, self.meter.usage_problem, generated)
        estimate = self.exchange.estimate(self.meter.generated)
        usage = compaction_cut_short(cut_short(reported, estimate), reported, self.exchange)
        return capped(usage, self.exchange), None


async def relay_stream(
    gateway: Gateway,
    request: web.Request,
    exchange: Exchange,
    prepared: Prepared,
    upstream: UpstreamResponse,
) -> web.StreamResponse:
    response = web.StreamResponse(
        status=upstream.status, headers=client_headers(exchange, upstream)
    )
    meter = exchange.spec.meter(prepared, exchange.body)
    framing = prepared.framing or exchange.provider.framing
    relay = _Relay(exchange, meter, framing, gateway.config.server.max_upstream_event_bytes)
    clock = gateway.clock
    asked = clock.monotonic()
    try:
        await response.prepare(request)
        asked = clock.monotonic()  # time waiting for the provider's next chunk is its own
        async for chunk in upstream.chunks():
            exchange.upstream_s += clock.monotonic() - asked
            out = relay.sort(chunk)
            if out:
                await response.write(out)
            if relay.cut:
                upstream.close()  # stop paying for output nobody will be charged for
                break
            asked = clock.monotonic()
        else:
            exchange.upstream_s += clock.monotonic() - asked
            out = relay.sort(None)  # an event the stream closed in, before its blank line
            if out:
                await response.write(out)
    except asyncio.CancelledError:
        relay.disconnected = True
        upstream.close()
        await record(gateway, relay.exchange, _stream_row(gateway, relay))
        raise
    except ConnectionResetError:  # aiohttp.ClientConnectionResetError too (a subclass)
        relay.disconnected = True
        upstream.close()
    except (ReadTimeout, Broken, EventTooLarge) as failure:
        exchange.upstream_s += clock.monotonic() - asked
        relay.broken = str(failure)
        upstream.close()
    ended = relay.meter.finished or relay.cut or relay.disconnected
    if not ended and relay.broken is None and relay.meter.upstream_error is None:
        # (after the provider's own error event the stream ends there: nothing to add)
        relay.broken = "upstream ended the stream without its terminal event"
    row = _stream_row(gateway, relay)
    if relay.disconnected:
        await record(gateway, relay.exchange, row)
    else:
        await answer_and_record(
            gateway, relay.exchange, row, partial(_finish_stream, response, relay, row)
        )
    return response


def _stream_row(gateway: Gateway, relay: _Relay) -> LedgerRow:
    error = relay.broken or relay.meter.upstream_error
    if relay.cut:
        error = f"stream ended by spendgate at the reserved output ceiling ({relay.limit} tokens)"
    if relay.disconnected:
        error = "client disconnected mid-stream"
    usage, problem = relay.usage()
    return relay.exchange.row(
        now=gateway.clock.monotonic(),
        usage=usage,
        status=200,
        served_model=relay.meter.served_model,
        client_disconnected=relay.disconnected,
        error=error,
        usage_problem=problem,
    )


async def _finish_stream(response: web.StreamResponse, relay: _Relay, row: LedgerRow) -> None:
    tail = b""
    if relay.cut:
        usage = Usage(input_tokens=row.input_tokens, output_tokens=row.output_tokens)
        tail += relay.meter.cut_events(usage)
        relay.held.clear()
    elif relay.broken is not None and relay.meter.upstream_error is None:
        tail += relay.meter.error_event(
            "upstream_error",
            f"The upstream provider's stream broke off ({relay.broken}); what was generated "
            "so far has been metered.",
        )
    tail = relay.told(tail + b"".join(relay.held))
    try:
        if tail:
            await response.write(tail)
        await response.write_eof()
    except ConnectionResetError:  # aiohttp.ClientConnectionResetError too (a subclass)
        pass
