"""Sending one alert to one channel: a generic JSON webhook, a Slack-compatible webhook
(``{"text": ..., "blocks": [...]}``), or e-mail over SMTP (the standard library's
`smtplib`, in a thread). A failure raises `DeliveryFailed` with a message fit for the
delivery log: never a URL (a Slack webhook URL is a secret) nor a credential."""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from collections.abc import Mapping
from email.message import EmailMessage
from typing import TYPE_CHECKING, Any

import orjson

from spendgate.config.alerts import ChannelConfig, SmtpConfig

if TYPE_CHECKING:
    import aiohttp


class DeliveryFailed(Exception):
    """An attempt failed; its message goes to the delivery log."""


def slack_body(payload: Mapping[str, Any]) -> dict[str, Any]:
    """Slack's message for an alert. What Slack reads as markup (``mrkdwn``: the fallback
    ``text``, the section and its fields) is escaped as Slack asks: an alert quotes names a
    key holder chose (a session id, a user) and messages, and ``<!channel>`` or
    ``<https://...|Renew your key>`` there would notify everyone or draw a link."""
    title, text = str(payload.get("title", "")), str(payload.get("text", ""))
    facts = payload.get("facts") or {}
    fields = [
        {"type": "mrkdwn", "text": f"*{_slack(str(name))}*\n{_slack(str(value))}"}
        for name, value in list(facts.items())[:10]
        if value is not None
    ]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": title[:150]}},
        {"type": "section", "text": {"type": "mrkdwn", "text": _slack(text[:3000])}},
    ]
    if fields:
        blocks.append({"type": "section", "fields": fields})
    return {"text": _slack(f"{title}\n{text}"), "blocks": blocks}


def _slack(text: str) -> str:
    """``text`` as Slack's markup shows it literally (its three control characters)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def email_message(payload: Mapping[str, Any], sender: str, to: list[str]) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = f"[spendgate] {payload.get('title', 'alert')}"
    message["From"] = sender
    message["To"] = ", ".join(to)
    facts = payload.get("facts") or {}
    lines = [str(payload.get("text", "")), ""]
    lines += [f"{name}: {value}" for name, value in facts.items() if value is not None]
    lines += ["", f"kind: {payload.get('kind')}", f"at: {payload.get('at')}"]
    message.set_content("\n".join(lines))
    return message


async def send(
    channel: ChannelConfig,
    payload: Mapping[str, Any],
    *,
    http: aiohttp.ClientSession,
    smtp: SmtpConfig,
    env: Mapping[str, str],
) -> None:
    if channel.kind == "email":
        await asyncio.to_thread(_send_mail, channel, payload, smtp, env)
        return
    url = channel.url if channel.url is not None else env.get(channel.url_env or "", "")
    if not url:
        raise DeliveryFailed(f"the environment variable {channel.url_env} is not set")
    body = slack_body(payload) if channel.kind == "slack" else dict(payload)
    headers = {"content-type": "application/json", "user-agent": "spendgate-alerts"}
    for name, var in channel.headers_env.items():
        if var in env:
            headers[name] = env[var]
    await _post(http, url, orjson.dumps(body), headers, channel.timeout_s)


async def _post(
    http: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str], timeout_s: float
) -> None:
    import aiohttp

    try:
        async with asyncio.timeout(timeout_s):
            # A redirect is not followed: the channel's headers (a receiver's token) and the
            # alert would go on to whatever host it names. It is a failed attempt, logged.
            async with http.post(
                url, data=body, headers=headers, allow_redirects=False
            ) as response:
                if response.status >= 300:
                    text = (await response.content.read(200)).decode("utf-8", "replace")
                    raise DeliveryFailed(f"HTTP {response.status}: {text.strip()[:200]}")
    except TimeoutError:
        raise DeliveryFailed(f"no answer within {timeout_s:g}s") from None
    except aiohttp.ClientError as exc:
        raise DeliveryFailed(f"{type(exc).__name__}: could not reach the receiver") from None


def _send_mail(
    channel: ChannelConfig, payload: Mapping[str, Any], smtp: SmtpConfig, env: Mapping[str, str]
) -> None:
    message = email_message(payload, smtp.sender, channel.to)
    user = env.get(smtp.username_env) if smtp.username_env else None
    password = env.get(smtp.password_env) if smtp.password_env else None
    try:
        client: smtplib.SMTP
        if smtp.tls:
            context = ssl.create_default_context()
            client = smtplib.SMTP_SSL(smtp.host, smtp.port, timeout=smtp.timeout_s, context=context)
        else:
            client = smtplib.SMTP(smtp.host, smtp.port, timeout=smtp.timeout_s)
        with client:
            if smtp.starttls and not smtp.tls:
                client.starttls(context=ssl.create_default_context())
            if user and password:
                client.login(user, password)
            client.send_message(message)
    except smtplib.SMTPResponseException as exc:
        raise DeliveryFailed(f"SMTP {exc.smtp_code}: {_text(exc.smtp_error)}") from None
    except (smtplib.SMTPException, OSError) as exc:
        raise DeliveryFailed(f"SMTP: {type(exc).__name__}: {str(exc)[:200]}") from None


def _text(value: bytes | str) -> str:
    return (value.decode("utf-8", "replace") if isinstance(value, bytes) else value)[:200]
