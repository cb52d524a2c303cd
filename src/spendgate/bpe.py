"""The BPE tokenizer behind offline token counting: bpe-openai's Rust extension.

Why not ``import bpe_openai`` (its documented entry point): on import it decodes three BPE
files into Python dicts (measured 0.58 s and ~60 MB per process, none of it used here, and
a warning about a deprecated importlib API); the Rust tokenizers alone load in ~10 ms and
count without building token lists (the gateway's memory and start-up targets depend on
it). So the extension module is loaded on its own, from the installed wheel; if the wheel's
layout ever changes, the ordinary import is the fallback, and the only cost is speed.

This module is the one place that knows where the tokenizer comes from: the domain asks
for an encoding by name and gets something that counts.

Memory: the extension carries its encodings serialized inside its own file (a 70 MB
read-only segment) and builds each tokenizer from them on first use. Reading them maps
those pages into the process: ``o200k_base`` alone added 66 MB of RSS, 32 MB of which
were the file's pages, never read again once the tokenizer was built. After each load
they are given back (`_release_file_pages`: ``madvise(MADV_DONTNEED)`` on the
extension's read-only mapping, which is only done where the mapping holds no private
copy, so every page reads back identically from the file should the next load need it):
``o200k_base`` then costs 34 MB, ``cl100k_base`` 16 MB (Linux; elsewhere nothing is done).
"""

from __future__ import annotations

import functools
import importlib
import importlib.machinery
import importlib.util
import logging
import mmap
import sys
import warnings
from importlib.machinery import ModuleSpec
from pathlib import Path
from typing import Any, Protocol, cast

_BINDINGS = "bpe_openai._bindings"

log = logging.getLogger("spendgate.bpe")


class Tokenizer(Protocol):
    def count(self, text: str) -> int: ...


@functools.cache
def _bindings() -> Any:
    if _BINDINGS in sys.modules:
        return sys.modules[_BINDINGS]
    package = importlib.util.find_spec("bpe_openai")
    for folder in (package.submodule_search_locations or []) if package else []:
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            path = Path(folder) / f"_bindings{suffix}"
            if path.is_file():
                loader = importlib.machinery.ExtensionFileLoader(_BINDINGS, str(path))
                spec = importlib.util.spec_from_loader(_BINDINGS, loader)
                module = importlib.util.module_from_spec(cast(ModuleSpec, spec))
                loader.exec_module(module)
                return module
    with warnings.catch_warnings():  # pragma: no cover - only if the wheel's layout changes
        warnings.simplefilter("ignore", DeprecationWarning)
        return importlib.import_module(_BINDINGS)


def load_encoding(name: str) -> Tokenizer:
    """The tokenizer of a public OpenAI encoding (``o200k_base``, ``cl100k_base``).

    The Rust binding counts without building a token list, and unlike the tiktoken-style
    ``Encoding.encode_ordinary`` it has no 1M-character / 200k-token ceiling, which a
    long-context prompt can exceed. It reads special tokens such as <|endoftext|> as
    ordinary text, as a gateway must."""
    bindings = _bindings()
    tokenizer = cast(Tokenizer, bindings.tokenizer_for_encoding(name))
    _release_file_pages(getattr(bindings, "__file__", None))
    return tokenizer


def _release_file_pages(path: str | None) -> int:
    """Drop this process's pages of ``path``'s read-only, unmodified mappings (see the
    module's doc); the bytes released. Does nothing off Linux, and on any failure (the
    memory is then only counted, not lost)."""
    advice = getattr(mmap, "MADV_DONTNEED", None)
    if path is None or advice is None or not sys.platform.startswith("linux"):
        return 0
    try:
        spans = _clean_read_only(Path("/proc/self/smaps").read_text(), path)
        if not spans:
            return 0
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        released = 0
        for start, end in spans:
            if libc.madvise(start, end - start, advice) == 0:
                released += end - start
        return released
    except (OSError, AttributeError, ValueError) as exc:  # pragma: no cover - defensive
        log.debug("could not release the tokenizer's file pages: %s", exc)
        return 0


def _clean_read_only(smaps: str, path: str) -> list[tuple[int, int]]:
    """The (start, end) of each mapping of ``path`` that is read-only (``r--p``) and holds
    no anonymous (copied-on-write) page, from ``/proc/self/smaps``."""
    spans: list[tuple[int, int]] = []
    current: tuple[int, int] | None = None
    for line in smaps.splitlines():
        fields = line.split()
        if not fields:
            continue
        if not fields[0].endswith(":"):  # a mapping's header: range perms offset dev inode path
            matches = len(fields) >= 6 and fields[1] == "r--p" and fields[5] == path
            low, high = fields[0].split("-")
            current = (int(low, 16), int(high, 16)) if matches else None
        elif fields[0] == "Anonymous:" and current is not None:
            if fields[1] == "0":
                spans.append(current)
            current = None
    return spans
