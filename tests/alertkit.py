"""A real HTTP receiver for alert webhooks on loopback, and alert configs for tests.

`Receiver` records every POST (path and JSON body); it can fail the first ``fail_first``
posts with 500, or hang every post until released (a receiver that never answers)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Receiver:
    def __init__(self, *, fail_first: int = 0, hang: bool = False, port: int = 0) -> None:
        self.posts: list[tuple[str, dict[str, Any]]] = []
        self.attempts = 0  # posts received, answered or not
        self.fail_first = fail_first
        self.release = threading.Event()
        if not hang:
            self.release.set()
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = json.loads(self.rfile.read(length) or b"null")
                with receiver._lock:
                    receiver.attempts += 1
                    failing = receiver.attempts <= receiver.fail_first
                receiver.release.wait()
                if failing:
                    self.send_response(500)
                    self.end_headers()
                    self.wfile.write(b"receiver down")
                    return
                with receiver._lock:
                    receiver.posts.append((self.path, body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def bodies(self, path: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [body for p, body in self.posts if path is None or p == path]


def wait_until(predicate: Callable[[], bool], timeout: float = 15.0) -> bool:
    """Poll ``predicate`` until it holds (a bound on waiting, not a threshold asserted)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def fast_delivery(alerts: dict[str, Any]) -> dict[str, Any]:
    """Retries and polls quick enough for a test."""
    alerts.setdefault("backoff_s", 0.05)
    alerts.setdefault("max_backoff_s", 0.2)
    alerts.setdefault("poll_s", 0.05)
    return alerts
