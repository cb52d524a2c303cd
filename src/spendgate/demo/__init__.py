"""``spendgate demo``: the whole product offline, in one process and one event loop.

* `scenario`: the org, its people and services, what each sends, and the gateway's config;
* `traffic`: those requests over real HTTP, in each client's wire format;
* `view`: snapshots of the ledger through `spendgate.services.reports.usage_report`;
* `display`: the rich Live view, the plain lines without a terminal, the summary;
* `runner`: `run_demo`, which starts, drives and stops it all.
"""

from spendgate.demo.runner import DemoOptions, DemoResult, run_demo

__all__ = ["DemoOptions", "DemoResult", "run_demo"]
