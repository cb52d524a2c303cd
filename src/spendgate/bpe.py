"""The BPE tokenizer behind offline token counting: bpe-openai's Rust extension.

Why not ``import bpe_openai`` (its documented entry point): on import it decodes three BPE
files into Python dicts (measured 0.58 s and ~60 MB per process, none of it used here, and
a warning about a deprecated importlib API); the Rust tokenizers alone load in ~10 ms and
count without building token lists (the gateway's memory and start-up targets depend on
it). So the extension module is loaded on its own, from the installed wheel; if the wheel's
layout ever changes, the ordinary import is the fallback, and the only cost is speed.

This module is the one place that knows where the tokenizer comes from: the domain asks
for an encoding by name and gets something that counts.
"""

from __future__ import annotations

import functools
import importlib
import importlib.machinery
import importlib.util
import sys
import warnings
from importlib.machinery import ModuleSpec
from pathlib import Path
from typing import Any, Protocol, cast

_BINDINGS = "bpe_openai._bindings"


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
    return cast(Tokenizer, _bindings().tokenizer_for_encoding(name))
