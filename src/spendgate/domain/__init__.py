"""The pure core: money, usage, pricing, identity and ledger types. No IO, no web framework."""
