"""The OpenAI dialect as the Codex CLI reads it.

Codex (0.169, measured with the real binary, docs/errors.md "Agents") retries every
``401``, ``402``, ``403``, ``413``, ``422``, ``429`` and ``5xx`` answer five times or more,
``x-should-retry: false`` or not, and rewrites a ``429 insufficient_quota`` into its own
"Quota exceeded. Check your plan and billing details." (the budget, the amounts and the
reset time are lost). The only statuses it gives up on at once, printing the gateway's
message, are ``400`` and ``404``. So a refusal that retrying cannot fix
(``x-should-retry: false``) goes to Codex as a ``400`` with the same OpenAI error body
(type and ``code`` unchanged); refusals worth retrying (a short rate-limit wait, a busy
budget, a short breaker cool-down, an unavailable upstream) keep their status and
``retry-after``, which Codex honours.

Codex is recognised by the ``originator`` header it sends (``codex_exec``,
``codex_cli_rs``, ...) or, failing that, its ``user-agent`` (``codex_exec/0.169.0 (...)``).
"""

from __future__ import annotations

from collections.abc import Mapping

from spendgate.dialects.openai import OpenAiDialect
from spendgate.errors import GatewayError

# Statuses Codex does not retry and whose message it prints as sent.
_FINAL_FOR_CODEX = frozenset({400, 404})


def is_codex(headers: Mapping[str, str]) -> bool:
    originator = headers.get("originator") or headers.get("user-agent") or ""
    return originator.lower().startswith("codex")


class CodexDialect(OpenAiDialect):
    def owns(self, path: str, headers: Mapping[str, str]) -> bool:
        return not path.startswith("/v1/messages") and is_codex(headers)

    def error_status(self, error: GatewayError) -> int:
        status = super().error_status(error)
        if status in _FINAL_FOR_CODEX or error.headers().get("x-should-retry") == "true":
            return status
        return 400


CODEX = CodexDialect()
