"""Gemini's JSON-array stream (``streamGenerateContent`` without ``alt=sse``) through
`JsonArraySplitter`, the current one against the one of another commit: one chunk holding
a 1.5 MB inline image (2 MB of base64) fed in 64 KiB reads, and a text stream of 200
chunks fed in 1 KiB reads. The splitter runs on the event loop, so its time is time every
other request on the worker waits.

    python -m benchmarks.json_array_split [--against main] [--rounds 5]

Reported: the best of ``--rounds`` CPU times (``time.process_time``) per stream.
"""

from __future__ import annotations

import argparse
import base64
import importlib.util
import os
import subprocess
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson

from spendgate.upstream import framing

_PATH = "src/spendgate/upstream/framing.py"


def _framing_at(commit: str) -> ModuleType:
    source = subprocess.run(
        ["git", "show", f"{commit}:{_PATH}"], check=True, capture_output=True
    ).stdout
    path = Path(tempfile.mkdtemp()) / "framing_then.py"
    path.write_bytes(source)
    spec = importlib.util.spec_from_file_location("framing_then", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _streams() -> list[tuple[str, bytes, int]]:
    image = base64.b64encode(os.urandom(1_500_000)).decode()
    part = {"inlineData": {"mimeType": "image/png", "data": image}}
    with_image = orjson.dumps([{"candidates": [{"content": {"parts": [part]}}]}])
    words = 'the quick brown fox, "quoted", ' * 4
    chunk: dict[str, Any] = {
        "candidates": [{"content": {"parts": [{"text": words}], "role": "model"}, "index": 0}],
        "usageMetadata": {"promptTokenCount": 11, "candidatesTokenCount": 3},
    }
    text = b"[" + b",\r\n".join(orjson.dumps(chunk) for _ in range(200)) + b"]"
    return [("image, 64 KiB reads", with_image, 65_536), ("text, 1 KiB reads", text, 1024)]


def _cpu_s(module: Any, data: bytes, step: int, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        splitter = module.JsonArraySplitter(64 * 1024 * 1024)
        started = time.process_time()
        for start in range(0, len(data), step):
            splitter.feed(data[start : start + step])
        best = min(best, time.process_time() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--against", default="main", help="the commit to compare with")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    then = _framing_at(args.against)
    print(f"| stream | bytes | {args.against} ms | now ms |")
    print("|---|---:|---:|---:|")
    for name, data, step in _streams():
        before = _cpu_s(then, data, step, args.rounds) * 1000
        after = _cpu_s(framing, data, step, args.rounds) * 1000
        print(f"| {name} | {len(data)} | {before:.1f} | {after:.1f} |")


if __name__ == "__main__":
    main()
