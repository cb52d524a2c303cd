"""Structured logs: one JSON line per request, never a prompt, a completion or a secret."""

from __future__ import annotations

import logging

import openai
import orjson
import pytest

from harness import SIM_SECRET_OPENAI, GatewayHarness
from spendgate.logs import JsonFormatter

PROMPT = "the-launch-codes-are-0000-do-not-log-this"


def test_access_log_is_json_and_holds_no_prompt_or_secret(
    gw: GatewayHarness, caplog: pytest.LogCaptureFixture
) -> None:
    secret = gw.create_key(name="logs", team="ml", user="lena")
    key_id = gw.last_key_id
    caplog.set_level(logging.INFO, logger="spendgate")
    with openai.OpenAI(base_url=gw.openai_base_url, api_key=secret, max_retries=0) as client:
        reply = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": PROMPT}]
        )
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(
                base_url=gw.openai_base_url, api_key=secret + "x", max_retries=0
            ).models.list()
    completion = reply.choices[0].message.content or ""
    formatter = JsonFormatter()
    lines = [formatter.format(record) for record in caplog.records]
    access = [orjson.loads(line) for line in lines if '"request"' in line]
    assert len(access) == 1
    entry = access[0]
    assert entry["key_id"] == key_id
    assert entry["model"] == "gpt-4o-mini"
    assert entry["status"] == 200
    assert entry["cost_nanos"] == gw.ledger(key_id)[0].cost_nanos
    joined = "\n".join(lines)
    for forbidden in (PROMPT, secret, SIM_SECRET_OPENAI, completion[:30]):
        assert forbidden not in joined
