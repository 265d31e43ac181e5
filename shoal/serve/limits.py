"""Limits every request meets before a handler runs: the body size (`[serve] max_body_bytes`)
and a per-token rate (`[serve] rate_per_minute`).

The body limit is plain ASGI middleware, so a 20 MB body is refused without being held in
memory: at once when its Content-Length says so, else as soon as the bytes streamed past the
limit (a chunked body has no length to check).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(send)
            return
        # read the body here, up to the limit, then hand it to the app as if it came off the wire
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                await self.app(scope, _replay([message], receive), send)
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(send)
                return
            chunks.append(chunk)
            more = bool(message.get("more_body", False))
        body = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        await self.app(scope, _replay([body], receive), send)

    async def _refuse(self, send: Send) -> None:
        payload = json.dumps(
            {"error": "too_large", "message": f"the request body is over the limit of {self.max_bytes:,} bytes"}
        ).encode()
        # Connection: close, so the client stops sending the rest of the body
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(payload)).encode()),
            (b"connection", b"close"),
        ]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": payload})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay


class RateLimiter:
    """A token bucket per API token: `per_minute` requests in a burst, refilled evenly."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._buckets: dict[int, tuple[float, float]] = {}  # token id -> (tokens left, when)

    def take(self, key: int) -> float:
        """0 when the request may go; else the seconds until one may (for Retry-After)."""
        if self.per_minute <= 0:
            return 0.0
        rate = self.per_minute / 60.0
        stamp = time.monotonic()
        left, then = self._buckets.get(key, (float(self.per_minute), stamp))
        left = min(float(self.per_minute), left + (stamp - then) * rate)
        if left < 1.0:
            self._buckets[key] = (left, stamp)
            return max(1.0, math.ceil((1.0 - left) / rate))
        self._buckets[key] = (left - 1.0, stamp)
        return 0.0
