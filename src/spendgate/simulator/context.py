"""The per-request context handed to every endpoint handler."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import records, wire
from .reporting import distort_usage
from .tokens import MAX_GENERATED_TOKENS, plan_output

if TYPE_CHECKING:
    from aiohttp import web

    from .faults import Faults
    from .options import SimulatorOptions
    from .records import RequestRecord
    from .store import Store
    from .tokens import InputPlan, OutputPlan
    from .validation import Problem


@dataclass(slots=True)
class Call:
    request: web.Request
    record: RequestRecord
    faults: Faults
    options: SimulatorOptions
    dialect: wire.Dialect
    body: dict[str, Any]
    store: Store
    # Headers every answer to this request carries (Gemini's ``x-gemini-service-tier``).
    answer_headers: dict[str, str] = field(default_factory=dict)

    @property
    def request_id(self) -> str:
        return self.record.request_id

    @property
    def chunk_delay_s(self) -> float:
        delay = self.faults.chunk_delay_ms
        return (self.options.chunk_delay_ms if delay is None else delay) / 1000.0

    @property
    def streaming(self) -> bool:
        """``stream: true``; any truthy value under ``x-sim-compat: lenient-stream``;
        Gemini: the method (``:streamGenerateContent``), whatever the body says."""
        if self.dialect is wire.Dialect.GEMINI:
            return self.request.path.endswith(":streamGenerateContent")
        value = self.body.get("stream")
        if "lenient-stream" in self.faults.compat:
            return bool(value)
        return value is True

    def json(self, payload: object, status: int = 200) -> web.Response:
        response = wire.json_response(payload, self.dialect, self.request_id, status)
        response.headers.update(self.answer_headers)
        return response

    def error(
        self,
        status: int,
        message: str | None = None,
        error_type: str | None = None,
        *,
        param: str | None = None,
        code: str | None = None,
    ) -> web.Response:
        self.record.status = status
        self.record.finish(records.ERROR)
        return wire.error_response(
            self.dialect,
            status,
            self.request_id,
            message=message,
            error_type=error_type,
            retry_after_s=self.options.retry_after_s,
            param=param,
            code=code,
        )

    def refuse(self, problem: Problem) -> web.Response:
        """Answer a refused request in the endpoint's error dialect."""
        return self.error(problem.status, problem.message, param=problem.param, code=problem.code)

    def report_usage(self, usage: dict[str, Any]) -> dict[str, Any] | None:
        """``usage`` as it goes on the wire: None with ``x-sim-no-usage``, else distorted
        by ``x-sim-usage``."""
        if self.faults.no_usage:
            return None
        return distort_usage(usage, self.faults.usage)

    def account(self, inputs: InputPlan, outputs_total: int) -> None:
        """Store the ground-truth token counts on the record."""
        record = self.record
        record.input_tokens = inputs.total
        record.cached_input_tokens = inputs.cached
        record.cache_write_input_tokens = inputs.cache_write
        record.output_tokens = outputs_total

    def output_limit(self, *names: str) -> int | None:
        """The first integer field of ``names`` in the body (the request's output cap)."""
        for name in names:
            value = self.body.get(name)
            if isinstance(value, int) and not isinstance(value, bool):
                return value
        return None

    def plan_output_for(self, seed: int, limit: int | None, choices: int = 1) -> OutputPlan:
        options = self.options
        ceiling = MAX_GENERATED_TOKENS // max(1, choices)
        return plan_output(
            seed,
            limit,
            self.faults,
            options.min_output_tokens,
            options.max_output_tokens,
            ceiling,
        )
