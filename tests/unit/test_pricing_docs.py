"""docs/pricing.md: linked, its example valid, every service tier and tool named."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from spendgate.config import parse_config
from spendgate.domain.pricing import SERVICE_TIERS, TOOLS, cost_of
from spendgate.domain.usage import Usage
from spendgate.pricing import build_price_book

ROOT = Path(__file__).resolve().parents[2]
GUIDE = (ROOT / "docs" / "pricing.md").read_text("utf-8")


def test_the_pricing_guide_is_linked() -> None:
    assert "](docs/pricing.md)" in (ROOT / "README.md").read_text("utf-8")
    assert "](pricing.md" in (ROOT / "docs" / "configuration.md").read_text("utf-8")


def test_the_first_example_of_the_pricing_guide_is_valid_and_priced_as_it_says() -> None:
    block = re.findall(r"```yaml\n(.*?)```", GUIDE, flags=re.DOTALL)[0]
    book = build_price_book(parse_config(yaml.safe_load(block), "docs/pricing.md"))
    research = book.get("research")
    assert research is not None
    usage = Usage(input_tokens=300_000, output_tokens=1_000, service_tier="priority")
    assert cost_of(usage, research) == 300_000 * 8_000 + 1_000 * 30_000
    negotiated = book.get("gpt-5.5")
    assert negotiated is not None
    assert negotiated.rates_for(0, "priority").input == 10 * 10**9  # 2.5 x $4


def test_the_pricing_guide_names_every_tier_and_tool() -> None:
    for name in (*SERVICE_TIERS, *TOOLS):
        assert f"`{name}`" in GUIDE, name
