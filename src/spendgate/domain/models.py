"""The model table: which models exist, which API dialect serves each, where it is deployed
and what it costs. Built once from the config and the price book; pure lookups after that.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum, StrEnum

from spendgate.domain.identity import ApiKey
from spendgate.domain.pricing import Price
from spendgate.errors import ModelNotFound, ModelNotPriced, PermissionDenied, WrongDialect


class Dialect(Enum):
    """The API a model is spoken to in (each has an adapter in `spendgate.dialects`)."""

    OPENAI = "openai"
    ANTHROPIC = "anthropic"
    GEMINI = "gemini"

    __hash__ = object.__hash__  # (as `spendgate.domain.budgets.Unit`'s)


class ProviderKind(StrEnum):
    """How a provider is spoken to (the config's ``providers.*.kind``)."""

    OPENAI = "openai"
    ANTHROPIC = "anthropic"
    OPENAI_COMPATIBLE = "openai-compatible"
    GEMINI = "gemini"


def dialect_of_provider(kind: ProviderKind) -> Dialect:
    if kind is ProviderKind.ANTHROPIC:
        return Dialect.ANTHROPIC
    return Dialect.GEMINI if kind is ProviderKind.GEMINI else Dialect.OPENAI


@dataclass(frozen=True, slots=True)
class Deployment:
    provider: str
    upstream_model: str
    weight: int = 1


@dataclass(frozen=True, slots=True)
class ModelRoute:
    name: str
    dialect: Dialect
    deployments: tuple[Deployment, ...]
    price: Price | None
    max_output_tokens: int | None
    fallbacks: tuple[str, ...] = ()  # other models to try when every deployment fails

    @property
    def primary(self) -> Deployment:
        return self.deployments[0]

    def ordered(self, draw: float) -> list[Deployment]:
        """The deployments in the order to try them: one drawn by weight first (``draw`` is
        uniform in [0, 1)), then the rest by weight; weight 0 serves only as a fallback."""
        if len(self.deployments) == 1:
            return [self.deployments[0]]
        weighted = [d for d in self.deployments if d.weight > 0]
        total = sum(d.weight for d in weighted)
        first = weighted[-1] if weighted else self.deployments[0]
        point = draw * total
        for deployment in weighted:
            if point < deployment.weight:
                first = deployment
                break
            point -= deployment.weight
        rest = sorted((d for d in self.deployments if d is not first), key=lambda d: -d.weight)
        return [first, *rest]


_DIALECT_PATHS = {
    Dialect.OPENAI: "the OpenAI API (/v1/chat/completions, /v1/responses, /v1/embeddings)",
    Dialect.ANTHROPIC: "the Anthropic Messages API (/v1/messages)",
    Dialect.GEMINI: "the Gemini API (/v1beta/models/{model}:generateContent)",
}


class ModelTable:
    def __init__(self, routes: Iterable[ModelRoute]) -> None:
        self._routes: dict[str, ModelRoute] = {route.name: route for route in routes}

    def __len__(self) -> int:
        return len(self._routes)

    def names(self) -> list[str]:
        return sorted(self._routes)

    def get(self, name: str) -> ModelRoute | None:
        return self._routes.get(name)

    def resolve(self, name: str, dialect: Dialect) -> ModelRoute:
        """The route for a requested model, or the refusal that explains why there is none."""
        route = self._routes.get(name)
        if route is None:
            raise ModelNotFound(
                f"The model '{name}' does not exist on this gateway. "
                "GET /v1/models lists the models your key may use.",
                param="model",
            )
        if route.dialect is not dialect:
            raise WrongDialect(
                f"The model '{name}' is served through {_DIALECT_PATHS[route.dialect]}; "
                "send this request there.",
                param="model",
            )
        return route

    def authorize(
        self, route: ModelRoute, key: ApiKey, *, needs_price: bool = True, asked: str = ""
    ) -> Price:
        """Check the key may use the model (or ``asked``, the name the client sent, which
        routing turned into this model) and that the model has a price."""
        if not key.may_use(route.name) and not (asked and key.may_use(asked)):
            raise PermissionDenied(
                f"Your key is not allowed to use the model '{route.name}'.", param="model"
            )
        if route.price is None:
            if not needs_price:
                from spendgate.domain.pricing import free_price

                return free_price(route.name, source="unpriced")
            raise ModelNotPriced(
                f"The model '{route.name}' has no price, and spendgate refuses unpriced "
                "models rather than count them as free. An operator can price it under "
                f"models.{route.name}.price (or mark it free: true).",
                param="model",
            )
        return route.price

    def visible_to(self, key: ApiKey, dialect: Dialect | None = None) -> list[ModelRoute]:
        return [
            route
            for name, route in sorted(self._routes.items())
            if key.may_use(name) and (dialect is None or route.dialect is dialect)
        ]
