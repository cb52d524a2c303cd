"""A fake upstream provider that answers like OpenAI and Anthropic over real HTTP.

Used by the tests, the benchmarks and ``spendgate demo``. Endpoints (CLIENTS.md §2-§6):
``POST /v1/chat/completions``, ``POST /v1/responses`` (+ ``/input_tokens``),
``GET``/``DELETE /v1/responses/{id}``, ``POST /v1/responses/{id}/cancel``,
``POST /v1/conversations`` (+ ``GET /v1/conversations/{id}``, ``POST .../items``),
``POST /v1/embeddings``, ``GET /v1/models``, ``POST /v1/messages`` (+ ``/count_tokens``);
control surface ``GET /_sim/records`` and ``POST /_sim/reset`` (records and stored state).

Where each behaviour is described:

* token accounting and generation bounds: `spendgate.simulator.tokens`;
* the ``x-sim-*`` headers (faults, usage anomalies, tiers, server tool uses, background
  delay, lenient ``x-sim-compat`` modes): `spendgate.simulator.faults`;
* refusals of malformed bodies (400 in the provider's shape, never a 5xx):
  `spendgate.simulator.validation` and its ``validation_openai`` /
  ``validation_anthropic``; embeddings limits: `spendgate.simulator.openai_misc`;
* stored responses, ``previous_response_id``, conversations, ``item_reference``:
  `spendgate.simulator.responses_state`; background jobs: `spendgate.simulator.background`;
* Anthropic server tools (web search/fetch, code execution) and their billing:
  `spendgate.simulator.server_tools`; service tiers and usage distortion:
  `spendgate.simulator.reporting`.

Every request leaves a `RequestRecord`; its ``billed`` property (also in
``/_sim/records``) is what the provider would bill: input (stored context and tool
results included), output, server tool uses, service tier.
"""

from .app import create_simulator_app
from .faults import Faults, parse_faults
from .options import SimulatorOptions
from .records import RequestRecord
from .server import Simulator

__all__ = [
    "Faults",
    "RequestRecord",
    "Simulator",
    "SimulatorOptions",
    "create_simulator_app",
    "parse_faults",
]
