"""Plain HTTP to a simulator, for bodies and headers the SDKs would never send."""

from __future__ import annotations

import http.client
from dataclasses import dataclass
from typing import Any

import orjson

from spendgate.simulator.thread import SimulatorThread


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    data: bytes

    def json(self) -> Any:
        return orjson.loads(self.data)

    def events(self) -> list[tuple[str | None, Any]]:
        """An SSE body as (event name, decoded data) pairs (``[DONE]`` kept as a string)."""
        found: list[tuple[str | None, Any]] = []
        for block in self.data.decode().split("\n\n"):
            lines = dict(line.split(": ", 1) for line in block.split("\n") if ": " in line)
            if "data" in lines:
                data = lines["data"]
                found.append((lines.get("event"), data if data == "[DONE]" else orjson.loads(data)))
        return found


class Raw:
    """Plain HTTP to the simulator (bodies the SDKs would never send)."""

    def __init__(self, sim: SimulatorThread) -> None:
        self.sim = sim

    def send(
        self,
        method: str,
        path: str,
        body: object = None,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
    ) -> Answer:
        data = raw if raw is not None else (b"" if body is None else orjson.dumps(body))
        every = {"authorization": "Bearer sk-raw", "content-type": "application/json"}
        if path.startswith("/v1/messages"):
            every["anthropic-version"] = "2023-06-01"
        every.update(headers or {})
        connection = http.client.HTTPConnection(self.sim.simulator.host, self.sim.simulator.port)
        try:
            connection.request(method, path, body=data, headers=every)
            response = connection.getresponse()
            answer_headers = {k.lower(): v for k, v in response.getheaders()}
            return Answer(response.status, answer_headers, response.read())
        finally:
            connection.close()

    def post(self, path: str, body: object, **headers: str) -> Answer:
        return self.send("POST", path, body, {k.replace("_", "-"): v for k, v in headers.items()})
