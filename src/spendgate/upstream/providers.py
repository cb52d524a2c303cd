"""Upstream providers: where a request goes, with which credential (an auth strategy,
`spendgate.upstream.auth`) and how its streams are framed (`spendgate.upstream.framing`).

Secrets come only from the environment variable the config names; they are never logged
and never leave the auth strategy except in the outgoing request's auth header.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote, urlencode

from spendgate.config.schema import AuthScheme, Config
from spendgate.domain.models import ProviderKind
from spendgate.errors import ConfigError
from spendgate.upstream.auth import Auth, NoAuth, auth_for
from spendgate.upstream.framing import SSE, Framing

# Headers that are about one hop, or that carry the caller's gateway credential, never go
# upstream; everything else (anthropic-version, anthropic-beta, new headers) passes through.
# What a reverse proxy, CDN or identity-aware proxy in front of spendgate adds about its hop
# (the client's address and country, the signed-in user and their access token) is for
# spendgate, not for the provider. The body goes upstream as spendgate read it: decoded
# (aiohttp undoes a client's `content-encoding`), so that header is not forwarded either.
_REQUEST_DROP = frozenset(
    {
        "content-encoding",
        "forwarded",
        "x-real-ip",
        "via",
        "true-client-ip",
        "x-client-ip",
        "x-cluster-client-ip",
        "fastly-client-ip",
        "x-original-forwarded-for",
        "x-envoy-external-address",
        "host",
        "content-length",
        "authorization",
        "x-api-key",
        "api-key",
        "x-goog-api-key",
        "connection",
        "keep-alive",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "accept-encoding",
        "cookie",
        "openai-organization",
        "openai-project",
        "expect",
    }
)
_REQUEST_DROP_PREFIXES = (
    "x-spendgate-",
    "x-forwarded-",  # X-Forwarded-For/-Host/-Proto, oauth2-proxy's -User/-Email/-Access-Token
    "cf-",  # Cloudflare: CF-Connecting-IP, CF-IPCountry, Access's CF-Access-Jwt-Assertion
    "x-amzn-oidc-",  # AWS ALB sign-in: the user's claims and access token
    "x-goog-iap-",  # Google IAP's signed assertion
    "x-goog-authenticated-user-",  # Google IAP: the user's e-mail and id
    "x-ms-client-principal",  # Azure App Service authentication: the user
    "x-ms-token-",  # Azure App Service authentication: the user's tokens
    "x-auth-request-",  # oauth2-proxy: the user, e-mail, groups, access token
)
_RESPONSE_DROP = frozenset(
    {
        "content-length",
        "content-encoding",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "server",
        "date",
        "set-cookie",
        # the operator's account at the provider: not the client's business
        "openai-organization",
        "openai-project",
        "anthropic-organization-id",
    }
)
DEFAULT_ANTHROPIC_VERSION = "2023-06-01"
# The OpenAI paths Azure OpenAI serves per deployment (the others, such as /responses, sit
# beside /deployments and take the model from the body).
_AZURE_DEPLOYMENT_PATHS = frozenset({"/chat/completions", "/completions", "/embeddings"})


@dataclass(frozen=True)
class Provider:
    name: str
    kind: ProviderKind
    base_url: str
    auth: Auth = field(default_factory=NoAuth, repr=False)
    headers: Mapping[str, str] = field(default_factory=dict)
    default_service_tier: str | None = None  # what "auto" (or no tier) runs in
    framing: Framing = field(default=SSE, repr=False)
    api_version: str | None = None  # Azure OpenAI deployment URLs (``providers.*.api_version``)

    def __repr__(self) -> str:
        return f"Provider(name={self.name!r}, kind={self.kind.value!r}, base_url={self.base_url!r})"

    def url_for(self, gateway_path: str, query: str = "", model: str = "") -> str:
        """Map a gateway path (``/v1/chat/completions``) onto this provider's base URL.

        OpenAI-shaped base URLs include the version (``https://api.openai.com/v1``), like
        ``OPENAI_BASE_URL``; Anthropic's is the host root, like ``ANTHROPIC_BASE_URL``. With
        an ``api_version`` (Azure OpenAI deployment URLs, base URL ``https://R.openai.azure.com
        /openai``), chat completions and embeddings go to ``/deployments/{model}`` and every
        request carries ``api-version`` (the provider's, whatever the client sent). Gemini's
        base URL is the host root too (``https://generativelanguage.googleapis.com``) and its
        paths name the model (``/v1beta/models/{model}:generateContent``): the upstream model
        takes the place of ``{model}``, and ``?key=`` (the caller's gateway key) is dropped.
        """
        if self.kind is ProviderKind.ANTHROPIC:
            return _with_query(self.base_url + gateway_path, query)
        if self.kind is ProviderKind.GEMINI:
            path = gateway_path.replace("{model}", quote(model, safe=""))
            pairs = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k != "key"]
            return _with_query(self.base_url + path, urlencode(pairs))
        path = gateway_path.removeprefix("/v1")
        if self.api_version is None:
            return _with_query(self.base_url + path, query)
        if path in _AZURE_DEPLOYMENT_PATHS and model:
            path = f"/deployments/{quote(model, safe='')}{path}"
        pairs = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k != "api-version"]
        return _with_query(
            self.base_url + path, urlencode([("api-version", self.api_version), *pairs])
        )

    def request_headers(self, client_headers: Mapping[str, str]) -> dict[str, str]:
        """The client's headers that go upstream. A header the client sent more than once
        (two ``anthropic-beta`` lines) goes as one, its values joined with ", " as HTTP
        reads them (RFC 9110 §5.3), not only the last of them."""
        out: dict[str, str] = {}
        names: dict[str, str] = {}  # lower-case name -> the name as first sent
        hop = _connection_options(client_headers)
        for name, value in client_headers.items():
            lower = name.lower()
            if lower in _REQUEST_DROP or lower.startswith(_REQUEST_DROP_PREFIXES) or lower in hop:
                continue
            first = names.setdefault(lower, name)
            out[first] = f"{out[first]}, {value}" if first in out else value
        out.update(self.headers)
        out["content-type"] = "application/json"
        if self.kind is ProviderKind.ANTHROPIC and not any(
            name.lower() == "anthropic-version" for name in out
        ):
            out["anthropic-version"] = DEFAULT_ANTHROPIC_VERSION
        return out


def _connection_options(headers: Mapping[str, str]) -> frozenset[str]:
    """The headers a ``Connection`` header names: they are about this hop only and are
    removed before a message is forwarded (RFC 9110 §7.6.1)."""
    named = (
        option.strip().lower()
        for name, value in headers.items()
        if name.lower() == "connection"
        for option in value.split(",")
    )
    return frozenset(option for option in named if option)


def _with_query(url: str, query: str) -> str:
    return f"{url}?{query}" if query else url


def response_headers(upstream_headers: Mapping[str, str]) -> dict[str, str]:
    """The provider's answer headers that go to the client, named in lower case so that
    the gateway's own (``x-spendgate-*``, ``x-ratelimit-*``) replace the provider's of the
    same name, whatever case it wrote them in. A provider's ``x-spendgate-*`` (another
    spendgate in front of the provider) describes budgets and limits not the caller's."""
    out = {}
    for name, value in upstream_headers.items():
        lower = name.lower()
        if lower not in _RESPONSE_DROP and not lower.startswith("x-spendgate-"):
            out[lower] = value
    return out


def build_providers(
    config: Config, env: Mapping[str, str], source: str, *, require_secrets: bool = True
) -> dict[str, Provider]:
    """Providers with their secrets; a missing secret is an error unless ``require_secrets``
    is off (commands that never call upstream, such as ``keys`` and ``usage``)."""
    providers = {}
    for name, spec in config.providers.items():
        secret = None
        if spec.api_key_env:
            secret = env.get(spec.api_key_env)
            if not secret and require_secrets:
                raise ConfigError(
                    source,
                    f"providers.{name}.api_key_env",
                    f"the environment variable {spec.api_key_env} is not set",
                )
        providers[name] = Provider(
            name=name,
            kind=spec.kind,
            base_url=spec.base_url,
            auth=auth_for(spec.auth or default_auth(spec.kind), secret),
            headers=spec.headers,
            default_service_tier=spec.default_service_tier,
            api_version=spec.api_version,
        )
    return providers


def default_auth(kind: ProviderKind) -> AuthScheme:
    """Anthropic takes ``x-api-key``, Gemini ``x-goog-api-key``; OpenAI and compatible
    servers a bearer token."""
    if kind is ProviderKind.GEMINI:
        return AuthScheme.X_GOOG_API_KEY
    return AuthScheme.X_API_KEY if kind is ProviderKind.ANTHROPIC else AuthScheme.BEARER
