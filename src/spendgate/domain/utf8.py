"""The UTF-8 length of a text, the byte bound's unit. Pure."""

from __future__ import annotations


def utf8_length(text: str) -> int:
    """The UTF-8 bytes of ``text`` (a lone surrogate as its three): no text has more
    ``o200k_base`` or ``cl100k_base`` tokens than that."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
