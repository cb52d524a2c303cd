"""A fake upstream provider that answers like OpenAI and Anthropic over real HTTP.

Used by the tests, the benchmarks and ``spendgate demo``. Endpoints (CLIENTS.md §2-§6):
``POST /v1/chat/completions``, ``POST /v1/responses`` (+ ``/input_tokens``),
``POST /v1/embeddings``, ``GET /v1/models``, ``POST /v1/messages`` (+ ``/count_tokens``);
control surface ``GET /_sim/records`` and ``POST /_sim/reset``.

Token accounting is described in `spendgate.simulator.tokens`, the ``x-sim-*`` fault
headers in `spendgate.simulator.faults`. Every request leaves a `RequestRecord`.
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
