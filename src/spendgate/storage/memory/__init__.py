"""The in-memory backend (``memory://``): every role in one process's memory, for tests
and for replaying a ledger under a candidate policy. Nothing survives the process, and
nothing is shared with another one: a deployment uses SQLite (or the scale backends).

Both settlement halves happen in one step (no await between them), like one transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from spendgate.clock import Clock, to_ms
from spendgate.domain.ledger import LedgerRow
from spendgate.domain.settlement import lapsed_row, row_amounts
from spendgate.storage.admin import AdminStores
from spendgate.storage.base import EXPIRE_BATCH
from spendgate.storage.memory.admin import MemoryAdmin
from spendgate.storage.memory.alerts import MemoryAlerts
from spendgate.storage.memory.counters import MemoryCounters
from spendgate.storage.memory.keys import MemoryKeys
from spendgate.storage.memory.ledger import MemoryLedger
from spendgate.storage.memory.state import State
from spendgate.storage.plans import check_amounts
from spendgate.storage.stores import Storage

__all__ = ["MemoryCounters", "MemoryKeys", "MemoryLedger", "memory_storage"]


class _Joint:
    def __init__(self, state: State, ledger: MemoryLedger, counters: MemoryCounters) -> None:
        self._state = state
        self._ledger = ledger
        self._counters = counters

    async def settle(self, reservation_id: str, amounts: Sequence[int], row: LedgerRow) -> bool:
        self._state.require()
        held = self._counters.held(reservation_id)
        if held is None:
            return False
        check_amounts(reservation_id, held, amounts)
        if not self._ledger.add(row):
            in_force = self._ledger.get(row.request_id)
            assert in_force is not None
            amounts = row_amounts([c[3] for c in held], in_force)
        return self._counters.take(reservation_id, amounts)

    async def sweep(self, now: datetime) -> list[LedgerRow]:
        self._state.require()
        done: list[LedgerRow] = []
        for item in self._counters.expired(to_ms(now), EXPIRE_BATCH * 1_000_000):
            row = lapsed_row(item.template, item.worst, item.ceiling)
            in_force = row if self._ledger.add(row) else self._ledger.get(row.request_id) or row
            amounts = row_amounts([c[3] for c in item.counters], in_force)
            if self._counters.take(item.reservation_id, amounts):
                done.append(in_force)
        return done


def memory_storage(clock: Clock) -> Storage:
    state = State()
    ledger = MemoryLedger(state)
    counters = MemoryCounters(state, clock)
    admin = MemoryAdmin(state)
    return Storage(
        MemoryKeys(state, clock),
        ledger,
        counters,
        parts=[state],
        joint=_Joint(state, ledger, counters),
        admin=AdminStores(admin, admin),
        alerts=MemoryAlerts(state, clock),
    )
