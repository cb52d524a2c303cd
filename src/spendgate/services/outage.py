"""The outage allowance: what requests no budget or limit applies to may cost, in all,
while storage fails (``storage.outage_allowance_usd``; 0, the default, fails closed).

A request that reaches a provider first leaves a durable trace (a lease, see
`spendgate.pipeline.trace`). When storage cannot take it, the request is refused with a
503, unless this allowance, counted in worst-case nano-dollars by this process alone,
still has room: then it goes ahead untraced, and its row waits in the spool
(`spendgate.storage.spool`) if storage still fails when it ends. Budgets and limits cannot
be checked without storage, so a request any of them applies to is always refused. The
allowance fills up once per outage: the first trace storage takes again empties it.
"""

from __future__ import annotations

import logging

log = logging.getLogger("spendgate.storage")


class OutageAllowance:
    def __init__(self, limit_nanos: int) -> None:
        self.limit_nanos = limit_nanos
        self.used_nanos = 0
        self.passed = 0  # requests let through, this outage

    def take(self, worst_nanos: int) -> bool:
        """Let a request whose worst case is ``worst_nanos`` through untraced, if room."""
        if self.used_nanos + worst_nanos > self.limit_nanos:
            return False
        if self.passed == 0:
            log.error(
                "storage fails: requests without a budget pass on the outage allowance",
                extra={"allowance_nanos": self.limit_nanos},
            )
        self.used_nanos += worst_nanos
        self.passed += 1
        return True

    def recovered(self) -> None:
        """Storage took a trace again: the next outage starts with the whole allowance."""
        if self.passed:
            log.warning(
                "storage answers again; requests passed on the outage allowance",
                extra={"passed": self.passed, "worst_nanos": self.used_nanos},
            )
        self.used_nanos = 0
        self.passed = 0
