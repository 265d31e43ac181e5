"""A backend that answers from a script: for tests of the logic around a model call.

Like pydantic-ai's `TestModel`, it ships with the library so users can test their own
specialists and graphs without a model. It is never a stand-in for a real model in shoal's own
tests of a path a user takes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import ClassVar

from shoal.models.base import (
    BackendHealth,
    BackendName,
    ChatRequest,
    ModelInfo,
    Reply,
    Usage,
    parse_reply,
)

Script = Callable[[ChatRequest], str | Reply | Exception]


class ScriptedBackend:
    name: ClassVar[BackendName] = "scripted"

    def __init__(self, script: Script | Iterable[str | Reply | Exception], *, delay_s: float = 0.0) -> None:
        if callable(script):
            self._script: Script = script
        else:
            answers = list(script)

            def pop(_: ChatRequest) -> str | Reply | Exception:
                if not answers:
                    raise AssertionError("ScriptedBackend ran out of scripted answers")
                return answers.pop(0)

            self._script = pop
        self.delay_s = delay_s
        self.requests: list[ChatRequest] = []

    async def chat(self, request: ChatRequest) -> Reply:
        self.requests.append(request)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        answer = self._script(request)
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer, Reply):  # full control, e.g. to script token probabilities
            return answer
        reply = Reply(
            text=answer,
            usage=Usage(
                input_tokens=sum(len(m.content) for m in request.messages) // 4,
                output_tokens=len(answer) // 4,
            ),
            model=request.model,
            backend=self.name,
        )
        return parse_reply(reply, request)

    async def health(self) -> BackendHealth:
        return BackendHealth(backend=self.name, reachable=True, where="in process", models=[ModelInfo(name="script")])

    async def aclose(self) -> None:
        return None
