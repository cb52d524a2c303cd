"""Background responses (``background: true``) and the ``/v1/responses/{id}`` endpoints.

* ``POST /v1/responses`` with ``background: true`` (``store`` must not be false) answers
  at once with the response ``queued``, ``background: true``, ``usage: null``. A job then
  keeps it queued for ``x-sim-background-ms`` (default ``SimulatorOptions.background_ms``,
  20 ms), ``in_progress`` while it generates (one streamed event per
  ``x-sim-chunk-delay-ms``), and ends ``completed`` or ``incomplete`` with its usage.
  With ``stream: true`` the POST streams the job's events (``response.created`` with
  status ``queued``, ``response.queued``, ``response.in_progress``, ...); the job goes on
  if the client goes away.
* ``GET /v1/responses/{id}``: the stored response as it is now (404 for an unknown id);
  ``?stream=true&starting_after=N`` replays a background response's events after
  sequence number N and follows it to the end.
* ``POST /v1/responses/{id}/cancel``: a running job stops: status ``cancelled``, billed
  (and reported in ``usage``) for its input and the output generated so far; nothing at
  all while it was still queued. Cancelling a finished response returns it unchanged;
  a response not created in the background is a 400.
* ``DELETE /v1/responses/{id}``: forget it (a running job stops).

The record of the creating POST follows the job: ``response_status``, ``output_tokens``
and ``billed`` settle when it ends; a GET's record carries the ``usage_reported`` it sent.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

from . import records
from .responses_state import remember
from .store import StoredResponse
from .streaming import stream_events
from .wire import responses_error_event

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from aiohttp import web

    from .context import Call
    from .openai_responses import ResponseAnswer
    from .streaming import Event


class Job:
    """One background response being generated."""

    def __init__(self, call: Call, answer: ResponseAnswer, stored: StoredResponse) -> None:
        self.call = call
        self.answer = answer
        self.stored = stored
        self.events: list[Event] = list(answer.opening())
        self.generated = 0
        self.started = False
        self.done = False
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        faults, options = self.call.faults, self.call.options
        queued_ms = options.background_ms if faults.background_ms is None else faults.background_ms
        await asyncio.sleep(queued_ms / 1000.0)
        self.started = True
        self._set_status("in_progress", self.answer.snapshot("in_progress", []))
        delay = self.call.chunk_delay_s
        for event in self.answer.progress():
            if delay:
                await asyncio.sleep(delay)
            self.generated += event.tokens
            self._append(event)
        self._finish(self.answer.final_status, self.answer.final())

    def _append(self, event: Event) -> None:
        self.events.append(event)
        self._changed.set()
        self._changed = asyncio.Event()

    def _set_status(self, status: str, payload: dict[str, Any]) -> None:
        self.stored.payload = payload
        self.call.record.response_status = status

    def _finish(self, status: str, payload: dict[str, Any]) -> None:
        self._set_status(status, payload)
        self.done = True
        self._changed.set()

    def cancel(self) -> dict[str, Any]:
        """Stop the job; the cancelled response, billed for what was generated."""
        if self.done:
            return self.stored.payload
        self.stop()
        answer, record = self.answer, self.call.record
        usage = answer.partial_usage(self.generated) if self.started else None
        output = answer.output(self.generated, "in_progress") if self.started else []
        record.output_tokens = self.generated
        if not self.started:
            record.input_tokens = record.cached_input_tokens = 0
            record.cache_write_input_tokens = record.context_input_tokens = 0
        self.stored.context_tokens = record.input_tokens + self.generated
        self._finish("cancelled", answer.snapshot("cancelled", output, usage))
        return self.stored.payload

    def stop(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()

    async def follow(self, start: int = 0) -> AsyncIterator[Event]:
        """The job's events from index ``start`` on, as they are produced."""
        index = max(0, start)
        while True:
            while index < len(self.events):
                yield self.events[index]
                index += 1
            if self.done:
                return
            await self._changed.wait()


async def start_job(call: Call, answer: ResponseAnswer) -> web.StreamResponse:
    """Store the queued response, start its job, answer (or stream) at once."""
    stored = remember(call, answer, answer.snapshot("queued", []))
    if stored is None:  # refused by validation: background needs store
        return call.error(400, "Background mode requires 'store' to be true.")
    job = Job(call, answer, stored)
    stored.job = job
    job.start()
    if call.streaming:
        return await stream_events(call, job.follow(), responses_error_event, paced=False)
    call.record.finish(records.OK)
    return call.json(stored.payload)


def _lookup(call: Call) -> StoredResponse | web.Response:
    response_id = call.request.match_info["response_id"]
    stored = call.store.response(response_id)
    if stored is None:
        message = f"No response found with id '{response_id}'."
        return call.error(404, message, param="response_id")
    call.record.response_id = response_id
    call.record.response_status = stored.status
    return stored


def _starting_after(call: Call) -> int | None:
    raw = call.request.query.get("starting_after", "-1")
    with contextlib.suppress(ValueError):
        return int(raw)
    return None


async def _stream_stored(call: Call, stored: StoredResponse) -> web.StreamResponse:
    after = _starting_after(call)
    if stored.job is None or after is None:
        message = "Only background responses can be streamed, from an integer starting_after."
        return call.error(400, message, param="stream")
    return await stream_events(
        call, stored.job.follow(after + 1), responses_error_event, paced=False
    )


async def retrieve(call: Call) -> web.StreamResponse:
    stored = _lookup(call)
    if not isinstance(stored, StoredResponse):
        return stored
    if call.request.query.get("stream", "").lower() == "true":
        return await _stream_stored(call, stored)
    call.record.usage_reported = stored.payload.get("usage")
    call.record.finish(records.OK)
    return call.json(stored.payload)


async def cancel(call: Call) -> web.StreamResponse:
    stored = _lookup(call)
    if not isinstance(stored, StoredResponse):
        return stored
    if stored.job is None:
        message = "Only responses created with background=true can be cancelled."
        return call.error(400, message, param="response_id")
    payload = stored.job.cancel()
    call.record.response_status = stored.status
    call.record.usage_reported = payload.get("usage")
    call.record.finish(records.OK)
    return call.json(payload)


async def delete(call: Call) -> web.StreamResponse:
    stored = _lookup(call)
    if not isinstance(stored, StoredResponse):
        return stored
    if stored.job is not None:
        stored.job.stop()
    call.store.delete_response(stored.id)
    call.record.finish(records.OK)
    return call.json({"id": stored.id, "object": "response", "deleted": True})
