"""``spendgate demo``: the whole product offline, in one process and one event loop.

* `scenario`: the org, its people and services, what each sends, and the gateway's config
  with its budgets, rate limits and loop detection;
* `calls`: each client's requests in its own wire format;
* `traffic`: those requests over real HTTP, retried after ``retry-after`` as the SDKs do;
* `view`: snapshots of the ledger through `spendgate.services.reports.usage_report` and
  `blocks_report`;
* `guards`: budget states, clamped and retried requests, the summary's refusal section;
* `display`: the rich Live view, the plain lines without a terminal, the summary;
* `routing_scenario`, `routing_run`, `routing_report`: the routing chapter, the same
  requests on a strong ``default`` and then, after a hot reload, on a cheaper one, with the
  saving, the rules and the shadow rules read from its ledger;
* `runner`: `run_demo`, which starts, drives and stops it all.
"""

from spendgate.demo.runner import DemoOptions, DemoResult, run_demo

__all__ = ["DemoOptions", "DemoResult", "run_demo"]
