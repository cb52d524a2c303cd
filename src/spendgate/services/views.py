"""The services a running gateway and a CLI workspace both offer over their storage and
budgets (`spendgate.gateway.Gateway`, `spendgate.cli.common.Workspace`). Built on each
use, cheap; their modules are imported when first asked for, so a command that does not
use them does not import them (docs/benchmarks.md, "CLI start")."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from spendgate.clock import Clock
    from spendgate.config.schema import Config
    from spendgate.domain.budgets import BudgetBook
    from spendgate.domain.models import ModelTable
    from spendgate.domain.roles import Principal
    from spendgate.services.audit import AdminActions, AuditService
    from spendgate.services.budgets import BudgetService
    from spendgate.services.loops import LoopService
    from spendgate.services.tokens import TokenService
    from spendgate.storage import Storage


class ServiceViews:
    """Mixed into a class that has ``config``, ``storage``, ``budgets``, ``models`` and
    ``clock`` (attributes, or properties as the gateway's snapshot gives them)."""

    storage: Storage
    clock: Clock

    if TYPE_CHECKING:

        @property
        def config(self) -> Config: ...

        @property
        def budgets(self) -> BudgetBook: ...

        @property
        def models(self) -> ModelTable: ...

    @property
    def budget_service(self) -> BudgetService:
        from spendgate.domain.budget_state import model_prices
        from spendgate.services.budgets import BudgetService

        return BudgetService(
            self.storage,
            self.budgets,
            self.clock,
            models=model_prices(self.models),
            min_output=self.config.budget_settings.min_output_tokens,
        )

    @property
    def loop_service(self) -> LoopService:
        from spendgate.services.loops import LoopService

        return LoopService(self.storage, self.budgets, self.clock)

    @property
    def token_service(self) -> TokenService:
        from spendgate.services.tokens import TokenService

        return TokenService(self.storage, self.config, self.clock)

    @property
    def audit_service(self) -> AuditService:
        from spendgate.services.audit import AuditService

        return AuditService(self.storage, self.clock)

    def actions(self, principal: Principal) -> AdminActions:
        """Admin changes as ``principal``: checked against its role and team, and audited."""
        from spendgate.services.audit import AdminActions

        return AdminActions(self, principal)
