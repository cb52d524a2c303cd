"""Input a provider bills that the request body does not show, and server-side tool calls
it may make: what a worst case cannot count, so must bound (docs/budgets.md, "Input the
body does not show").

A request's `HiddenInput` names the fields that bring such input (a stored response, a
conversation, a file by id, a remote MCP server...) and the server-side tools it enables,
with the number of calls the request itself allows. Each server tool call is one more
model pass over the whole context, billed as input again, and may carry a fee per call.
Pure.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class HiddenInput:
    reasons: tuple[str, ...] = ()  # where input hides: "previous_response_id", "input[2]..."
    tools: tuple[tuple[str, int | None], ...] = ()  # server tools: (fee name, calls allowed)
    call_limit: int | None = None  # a limit on all server tool calls together (OpenAI)
    # a server-side compaction (Anthropic): the fields that enable it, and the fewest input
    # tokens it runs at; it may run before each model pass, a pass of its own
    compaction: tuple[str, ...] = ()
    compaction_trigger: int = 0

    def __bool__(self) -> bool:
        return bool(self.reasons or self.tools or self.compaction)

    def passes(self, assumed: int) -> int:
        """How many times the provider may read the whole context: once, plus once per
        server tool call (`calls`); twice that when a compaction may precede each."""
        passes = 1 + self.calls(assumed)
        return 2 * passes if self.compaction else passes

    def for_input(self, input_tokens: int) -> HiddenInput:
        """This hidden input for a request of at most ``input_tokens`` of input: none at all
        when its only one is a compaction that cannot run (the input stays below its trigger,
        and no server tool call or hidden input can add to it)."""
        alone = self.compaction and not (self.reasons or self.tools)
        return NO_HIDDEN_INPUT if alone and input_tokens < self.compaction_trigger else self

    def calls(self, assumed: int) -> int:
        """How many server tool calls the request may make at most: its own limits, and
        ``assumed`` for each tool it leaves unlimited."""
        if self.call_limit is not None:
            return self.call_limit
        return sum(assumed if allowed is None else allowed for _, allowed in self.tools)

    def fees(self, fee: Callable[[str], int], assumed: int) -> int:
        """The most the request's server tool calls can cost in per-call fees: each tool's
        allowed calls (or ``assumed``) at its fee; under a limit on all calls together, that
        many calls of the dearest tool."""
        if not self.tools:
            return 0
        if self.call_limit is not None:
            return self.call_limit * max(fee(name) for name, _ in self.tools)
        return sum(
            (assumed if allowed is None else allowed) * fee(name) for name, allowed in self.tools
        )

    def unlimited(self) -> tuple[str, ...]:
        if self.call_limit is not None:
            return ()
        return tuple(name for name, allowed in self.tools if allowed is None)

    def describe(self, assumed: int) -> str:
        parts = [*self.compaction, *self.reasons]
        if self.tools:
            limit = self.calls(assumed)
            names = ", ".join(dict.fromkeys(name for name, _ in self.tools))
            parts.append(f"server tools {names} (up to {limit} calls)")
        return "; ".join(parts)


def mappings(value: object) -> Iterator[tuple[int, Mapping[str, Any]]]:
    """The objects of a JSON list, with their positions."""
    if isinstance(value, list):
        for index, item in enumerate(value):
            if isinstance(item, Mapping):
                yield index, item


def positive_int(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


NO_HIDDEN_INPUT = HiddenInput()
