"""Bearer tokens on every /v1 route: `Authorization: Bearer <token>` from `shoal tokens create`.

No token, or one the store does not know: 401. A revoked token: 403 (it was real once: the
caller should get a new one, not retry). Over the token's rate: 429 with Retry-After. Only the
SHA-256 of a token is stored, so a stolen database holds no usable token.
"""

from __future__ import annotations

import asyncio
import time

from fastapi import Request

from shoal.serve.limits import RateLimiter
from shoal.store.db import Store
from shoal.store.tables import ApiToken

TOUCH_EVERY_S = 60.0  # last_used_at is written at most this often per token: a write per request would queue


class ApiError(Exception):
    """An error worded for the API's caller: its status, a stable code and a message."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: dict[str, str] | None = None,
        fields: list[dict[str, str]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers
        self.fields = fields  # for a 422: each field at fault and what is wrong with it


class Auth:
    def __init__(self, store: Store, rate_per_minute: int) -> None:
        self.store = store
        self.limiter = RateLimiter(rate_per_minute)
        self._touched: dict[int, float] = {}

    async def __call__(self, request: Request) -> ApiToken:
        """The caller's token, as a FastAPI dependency (refuses with an `ApiError`)."""
        token = self.bearer(request)
        if token is None:
            raise ApiError(
                401,
                "unauthorized",
                "send a token as `Authorization: Bearer <token>` (`shoal tokens create NAME` makes one)",
                {"WWW-Authenticate": "Bearer"},
            )
        row = await asyncio.to_thread(self.store.find_token, token)
        if row is None or row.id is None:
            raise ApiError(401, "unauthorized", "unknown token", {"WWW-Authenticate": 'Bearer error="invalid_token"'})
        if row.revoked_at is not None:
            raise ApiError(403, "forbidden", f"token '{row.name}' was revoked: ask for a new one")
        wait = self.limiter.take(row.id)
        if wait:
            raise ApiError(
                429, "rate_limited", f"too many requests for token '{row.name}': retry in {wait:g}s",
                {"Retry-After": str(int(wait))},
            )  # fmt: skip
        stamp = time.monotonic()
        if stamp - self._touched.get(row.id, -TOUCH_EVERY_S) >= TOUCH_EVERY_S:
            self._touched[row.id] = stamp
            await self.store.offload(self.store.touch_token, row.id)
        request.state.token = row
        return row

    @staticmethod
    def bearer(request: Request) -> str | None:
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            return None
        return value.strip()
