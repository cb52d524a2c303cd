"""The tokenizer's memory (`spendgate.bpe`): after an encoding is built, the pages of the
extension's embedded data are given back, only from mappings that hold no private copy,
and the tokenizer counts exactly as before."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from spendgate import bpe

SMAPS = """\
7f0000000000-7f0004000000 r--p 00000000 08:01 42 /lib/ext.so
Rss:               65536 kB
Anonymous:             0 kB
7f0004000000-7f0004100000 r-xp 04000000 08:01 42 /lib/ext.so
Rss:                 512 kB
Anonymous:             0 kB
7f0004100000-7f0004200000 r--p 04100000 08:01 42 /lib/ext.so
Rss:                 268 kB
Anonymous:           268 kB
7f0004200000-7f0004201000 rw-p 04200000 08:01 42 /lib/ext.so
Anonymous:             4 kB
7f0005000000-7f0005100000 r--p 00000000 08:01 43 /lib/other.so
Anonymous:             0 kB
7f0006000000-7f0006100000 rw-p 00000000 00:00 0
Anonymous:          1024 kB
"""


def test_only_unmodified_read_only_mappings_of_the_extension_are_chosen() -> None:
    # the relocated (copied-on-write) read-only segment, code, data, another file: kept
    assert bpe._clean_read_only(SMAPS, "/lib/ext.so") == [(0x7F0000000000, 0x7F0004000000)]
    assert bpe._clean_read_only(SMAPS, "/lib/none.so") == []


def _resident_kb(path: str) -> int:
    """Resident kB of ``path``'s read-only (``r--p``) mappings in this process."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if fields and not fields[0].endswith(":"):
            inside = len(fields) >= 6 and fields[1] == "r--p" and fields[5] == path
        elif inside and fields[0] == "Rss:":
            total += int(fields[1])
    return total


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/smaps")
def test_a_loaded_encoding_leaves_the_embedded_data_unmapped_and_counts_the_same() -> None:
    path = bpe._bindings().__file__
    for name in ("o200k_base", "cl100k_base"):
        tokenizer = bpe.load_encoding(name)
        assert _resident_kb(path) < 4096  # the embedded encodings are ~70 MB
        assert tokenizer.count("hello world " * 1000) == 2001
        assert tokenizer.count("Say hello in five words.") == 6
