"""A reservation whose COMMIT reached PostgreSQL while its answer was lost, after its caller
had gone (a client that disconnected while the gateway reserved): nobody hears that it
was admitted, so nobody settles it. It must be released at the next lease renewal, not
renewed by its owner for ever (a budget held reserved with nothing in flight).

The connection is cut for real: the store talks to the server through a TCP relay of the
test's own, which forwards the reservation's ``COMMIT`` to the server, holds the server's
answer, and closes the connection once the caller is cancelled."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from budget_samples import budget, one, plan, ref
from pg_databases import throwaway_database
from storage_samples import NOW

from spendgate.clock import ManualClock
from spendgate.errors import StorageError
from spendgate.storage import open_storage


class CommitCutter:
    """Relays connections to PostgreSQL; once armed, the first connection that sends a
    ``COMMIT`` has it forwarded and the server's answer held until `cut` closes it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.armed = False
        self.committing = asyncio.Event()
        self._cut = asyncio.Event()
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()

    def cut(self) -> None:
        self._cut.set()

    async def _relay(
        self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter
    ) -> None:
        server_in, server_out = await asyncio.open_connection("127.0.0.1", self.port)
        held = asyncio.Event()

        async def upward() -> None:
            while data := await client_in.read(65536):
                if self.armed and not self.committing.is_set() and b"COMMIT" in data.upper():
                    self.armed = False
                    held.set()
                    self.committing.set()
                server_out.write(data)
                await server_out.drain()

        async def downward() -> None:
            while data := await server_in.read(65536):
                if held.is_set():
                    await self._cut.wait()
                    return  # the answer to the COMMIT never reaches the store
                client_out.write(data)
                await client_out.drain()

        tasks = [asyncio.ensure_future(upward()), asyncio.ensure_future(downward())]
        with contextlib.suppress(ConnectionError):
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
        for writer in (client_out, server_out):
            writer.close()


@pytest.fixture
async def database() -> AsyncIterator[str]:
    with throwaway_database() as url:
        yield url


async def test_an_abandoned_reservation_committed_unheard_is_released_at_renewal(
    database: str,
) -> None:
    clock = ManualClock(NOW)
    address, name = database.rsplit("/", 1)
    cutter = CommitCutter(int(address.rsplit(":", 1)[1]))
    relayed = f"{address.rsplit(':', 1)[0]}:{await cutter.start()}/{name}"
    store, witness = open_storage(relayed, clock=clock), open_storage(database, clock=clock)
    await store.open()
    await witness.open()
    try:
        team = ref(budget("team", limit=10**12), NOW)
        reservation = plan([team], NOW, owner="gw-1")
        cutter.armed = True
        caller = asyncio.ensure_future(store.reserve(reservation))
        await asyncio.wait_for(cutter.committing.wait(), 10)
        for _ in range(200):  # the COMMIT took effect on the server
            if await witness.counter_store.holding(reservation.reservation_id) is not None:
                break
            await asyncio.sleep(0.05)
        assert (await one(witness, team, NOW)).reserved > 0

        caller.cancel()  # the client went away: nobody will hear the answer
        with pytest.raises(asyncio.CancelledError):
            await caller
        cutter.cut()  # and the answer is lost with the connection

        for _ in range(200):  # the next renewals that reach the server release it
            with contextlib.suppress(StorageError):  # a pool connection found cut
                await store.renew_leases("gw-1", NOW + timedelta(seconds=30))
            if await witness.counter_store.holding(reservation.reservation_id) is None:
                break
            await asyncio.sleep(0.05)
        assert await witness.counter_store.holding(reservation.reservation_id) is None
        state = await one(witness, team, NOW)
        assert (state.spent, state.reserved) == (0, 0)
    finally:
        await store.close()
        await witness.close()
        await cutter.close()
