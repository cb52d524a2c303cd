"""Provider URLs: OpenAI-shaped base URLs take the path without ``/v1``, Anthropic's the
whole path; an ``api_version`` (Azure OpenAI deployment URLs) puts the upstream model into
the path of chat completions and embeddings and the provider's ``api-version`` into every
query, replacing the client's and keeping the rest."""

from __future__ import annotations

from typing import Any

import pytest

from spendgate.config import parse_config
from spendgate.domain.models import ProviderKind
from spendgate.errors import ConfigError
from spendgate.upstream.providers import Provider, build_providers

AZURE = Provider(
    "az", ProviderKind.OPENAI, "https://r.openai.azure.com/openai", api_version="2024-10-21"
)


@pytest.mark.parametrize(
    ("path", "query", "model", "url"),
    [
        (
            "/v1/chat/completions",
            "",
            "gpt-4o",
            "https://r.openai.azure.com/openai/deployments/gpt-4o/chat/completions"
            "?api-version=2024-10-21",
        ),
        (
            "/v1/embeddings",
            "api-version=1999-01-01&x=1&y=",
            "emb",
            "https://r.openai.azure.com/openai/deployments/emb/embeddings"
            "?api-version=2024-10-21&x=1&y=",
        ),
        (
            "/v1/chat/completions",
            "",
            "my dep/1",
            "https://r.openai.azure.com/openai/deployments/my%20dep%2F1/chat/completions"
            "?api-version=2024-10-21",
        ),
        (
            "/v1/responses",
            "",
            "gpt-4o",
            "https://r.openai.azure.com/openai/responses?api-version=2024-10-21",
        ),
    ],
)
def test_azure_deployment_urls(path: str, query: str, model: str, url: str) -> None:
    assert AZURE.url_for(path, query, model) == url


def test_without_api_version_the_url_is_base_plus_path() -> None:
    v1 = Provider("az", ProviderKind.OPENAI, "https://r.openai.azure.com/openai/v1")
    assert v1.url_for("/v1/chat/completions", "a=1", "gpt-4o") == (
        "https://r.openai.azure.com/openai/v1/chat/completions?a=1"
    )
    claude = Provider("c", ProviderKind.ANTHROPIC, "https://api.anthropic.com")
    assert claude.url_for("/v1/messages", "beta=true", "claude") == (
        "https://api.anthropic.com/v1/messages?beta=true"
    )


def _config(provider: dict[str, Any]) -> Any:
    return parse_config(
        {
            "storage": {"url": "sqlite:///x.db"},
            "providers": {"p": provider},
            "models": {"gpt-4o": {"provider": "p"}},
        },
        "t.yaml",
    )


def test_api_version_reaches_the_provider() -> None:
    config = _config(
        {"kind": "openai", "base_url": "https://r.openai.azure.com/openai/", "api_version": "v1x"}
    )
    provider = build_providers(config, {}, "t.yaml")["p"]
    assert provider.api_version == "v1x"
    assert provider.url_for("/v1/chat/completions", "", "d") == (
        "https://r.openai.azure.com/openai/deployments/d/chat/completions?api-version=v1x"
    )


@pytest.mark.parametrize(
    "provider",
    [
        {"kind": "anthropic", "base_url": "https://a", "api_version": "2024-10-21"},
        {"kind": "openai", "base_url": "https://a", "api_version": "2024 10&x=1"},
    ],
)
def test_api_version_is_checked_at_load(provider: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match=r"providers\.p"):
        _config(provider)
