"""Provider error messages kept in the ledger and the access log do not quote request
content: quoted text beyond 8 characters becomes '…' (prompts are not stored)."""

from __future__ import annotations

from spendgate.pipeline.forward import _upstream_error_text


def test_quoted_request_content_is_redacted_in_the_kept_message() -> None:
    document = {
        "error": {
            "message": "Invalid value: 'my secret prompt text'. Supported values are: 'auto'.",
            "type": "invalid_request_error",
        }
    }
    kept = _upstream_error_text(document, 400)
    assert "secret" not in kept
    assert kept == "upstream 400: Invalid value: '…'. Supported values are: 'auto'."
