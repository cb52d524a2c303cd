"""The work admission does on a request's body (counting its input tokens, fingerprinting
it for loop detection), on the event loop for an ordinary body and in a worker process
for a large one (`spendgate.services.offload`), so that one large request does not stall
every other."""

from __future__ import annotations

from dataclasses import dataclass

from spendgate.dialects.offloaded import count_input, fingerprint_of
from spendgate.domain.fingerprint import fingerprint
from spendgate.domain.token_bound import BYTE_BOUND, counting_with
from spendgate.domain.tokens import TokenCount
from spendgate.pipeline.exchange import Exchange
from spendgate.services.offload import LARGE_BODY_BYTES, Offload


def byte_bound(exchange: Exchange) -> int:
    """The body's input tokens bounded with no tokenizer: its texts by their bytes, each
    part that is not text at its documented most (`spendgate.domain.token_bound`)."""
    with counting_with(BYTE_BOUND):
        return exchange.spec.input_counter(exchange.counted_as, exchange.body).tokens


@dataclass(frozen=True, slots=True)
class BodyWork:
    offload: Offload
    raw: bytes  # the body as the client sent it

    @property
    def large(self) -> bool:
        return len(self.raw) >= LARGE_BODY_BYTES

    async def input_count(self, exchange: Exchange) -> TokenCount:
        if not self.large:
            return exchange.spec.input_counter(exchange.counted_as, exchange.body)
        surface = exchange.spec.surface.value
        tokens, exact = await self.offload.run(count_input, surface, exchange.counted_as, self.raw)
        return TokenCount(tokens, exact)

    def input_bound(self, exchange: Exchange) -> TokenCount | None:
        """An upper bound on the body's input tokens that needs no tokenizer (admission
        prices a body by it first: `spendgate.pipeline.bound_first`); None for a body the
        operator has counted first (`budget_settings.count_below_bytes`)."""
        if len(self.raw) < exchange.snapshot.config.budget_settings.count_below_bytes:
            return None
        return TokenCount(byte_bound(exchange), exact=False)

    async def fingerprint(self, exchange: Exchange) -> str:
        # A surface that names the model in its path (Gemini) has none in the body: the
        # model asked for is part of what the request is, as a body's ``model`` is.
        named = exchange.asked if exchange.spec.model_in_path else None
        if not self.large:
            return fingerprint({**exchange.body, "model": named} if named else exchange.body)
        return await self.offload.run(fingerprint_of, self.raw, named)
