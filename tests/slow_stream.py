"""A streamed request still being answered when a test acts (a store stops, a gateway
drains): twelve tokens, 150 ms apart, through the real openai SDK."""

from __future__ import annotations

import threading

import openai

PROMPT = [{"role": "user", "content": "hello"}]


class SlowStream(threading.Thread):
    """Started, it sets ``first`` once the first event is read; ``text`` is what the stream
    said, ``error`` what ended it early (None when it finished)."""

    def __init__(self, openai_base_url: str, secret: str) -> None:
        super().__init__(daemon=True)
        self.base_url, self.secret = openai_base_url, secret
        self.first = threading.Event()
        self.text = ""
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with openai.OpenAI(base_url=self.base_url, api_key=self.secret, max_retries=0) as sdk:
                stream = sdk.chat.completions.create(
                    model="gpt-4o-mini",
                    messages=PROMPT,
                    max_tokens=50,
                    stream=True,
                    extra_headers={"x-sim-output-tokens": "12", "x-sim-chunk-delay-ms": "150"},
                )
                for chunk in stream:
                    self.first.set()
                    if chunk.choices and chunk.choices[0].delta.content:
                        self.text += chunk.choices[0].delta.content
        except BaseException as exc:
            self.error = exc
        finally:
            self.first.set()
