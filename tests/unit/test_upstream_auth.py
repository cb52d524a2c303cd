"""Auth strategies: each scheme puts the provider's secret in its own header, and only
there; the secret never appears in a repr (log lines print providers)."""

from __future__ import annotations

import pytest

from spendgate.config import parse_config
from spendgate.config.schema import AuthScheme
from spendgate.upstream.auth import HeaderAuth, NoAuth, Outgoing, auth_for
from spendgate.upstream.providers import build_providers

SECRET = "sk-very-secret"


def _send(scheme: AuthScheme, secret: str | None) -> dict[str, str]:
    request = Outgoing("POST", "https://x/v1/chat/completions", {"content-type": "x"}, b"{}")
    auth_for(scheme, secret).apply(request)
    return request.headers


@pytest.mark.parametrize(
    ("scheme", "header", "value"),
    [
        (AuthScheme.BEARER, "authorization", f"Bearer {SECRET}"),
        (AuthScheme.X_API_KEY, "x-api-key", SECRET),
        (AuthScheme.API_KEY, "api-key", SECRET),
    ],
)
def test_each_scheme_sets_one_header(scheme: AuthScheme, header: str, value: str) -> None:
    assert _send(scheme, SECRET) == {"content-type": "x", header: value}


def test_no_secret_means_no_header() -> None:
    assert isinstance(auth_for(AuthScheme.BEARER, None), NoAuth)
    assert _send(AuthScheme.X_API_KEY, None) == {"content-type": "x"}


def test_providers_pick_the_scheme_by_kind_unless_told() -> None:
    config = parse_config(
        {
            "providers": {
                "oai": {"kind": "openai", "base_url": "https://a/v1", "api_key_env": "K"},
                "ant": {"kind": "anthropic", "base_url": "https://b", "api_key_env": "K"},
                "azure": {
                    "kind": "openai-compatible",
                    "base_url": "https://c/openai",
                    "api_key_env": "K",
                    "auth": "api-key",
                },
            }
        },
        "auth.yaml",
    )
    providers = build_providers(config, {"K": SECRET}, "auth.yaml")
    headers = {name: provider.auth for name, provider in providers.items()}
    assert headers == {
        "oai": HeaderAuth("authorization", SECRET, prefix="Bearer "),
        "ant": HeaderAuth("x-api-key", SECRET),
        "azure": HeaderAuth("api-key", SECRET),
    }
    for provider in providers.values():
        assert SECRET not in repr(provider)
        assert SECRET not in repr(provider.auth)
        assert "authorization" not in provider.request_headers({"authorization": "Bearer sg"})
