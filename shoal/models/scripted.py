"""A backend that answers from a script: for tests of the logic around a model call.

Like pydantic-ai's `TestModel`, it ships with the library so users can test their own
specialists and graphs without a model. It is never a stand-in for a real model in shoal's own
tests of a path a user takes.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Callable, Iterable, Sequence
from typing import ClassVar

from shoal.models.base import (
    BackendHealth,
    BackendName,
    ChatRequest,
    Embeddings,
    ModelInfo,
    Reply,
    Usage,
    parse_reply,
)
from shoal.models.router import TokenVectors

Script = Callable[[ChatRequest], str | Reply | Exception]


class ScriptedBackend:
    name: ClassVar[BackendName] = "scripted"

    def __init__(
        self, script: Script | Iterable[str | Reply | Exception] = (), *, delay_s: float = 0.0, dim: int = 64
    ) -> None:
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
        self.dim = dim
        self.requests: list[ChatRequest] = []
        self.embedded: list[str] = []

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

    async def embed(self, model: str, texts: Sequence[str]) -> Embeddings:
        """Hashed bag of words: texts that share words get close vectors, so the logic that
        trains and applies heads can be tested in milliseconds. Not a language model."""
        self.embedded.extend(texts)
        vectors = []
        for text in texts:
            vector = [0.0] * self.dim
            for word in re.findall(r"\w+", text.lower()):
                digest = hashlib.blake2b(word.encode(), digest_size=4).digest()
                vector[int.from_bytes(digest, "little") % self.dim] += 1.0
            vectors.append(vector)
        return Embeddings(vectors=vectors, model=model, backend=self.name)

    async def token_vectors(self, model: str, text: str) -> TokenVectors:
        """Words and punctuation as tokens (each with the spaces before it, as BPE tokens do);
        a token's vector hashes the token and the one before it, so a tagger on them can learn
        that the word after "order" is an order number. Not a language model either."""
        self.embedded.append(text)
        offsets: list[tuple[int, int]] = []
        vectors: list[list[float]] = []
        previous = ""
        for match in re.finditer(r"\s*(\w+|[^\w\s])", text):
            word = match.group(1).lower()
            vector = [0.0] * self.dim
            half = self.dim // 2
            for part, at, width in (("w" + word, 0, half), ("p" + previous, half, self.dim - half)):
                digest = hashlib.blake2b(part.encode(), digest_size=4).digest()
                vector[at + int.from_bytes(digest, "little") % width] = 1.0
            offsets.append(match.span())
            vectors.append(vector)
            previous = word
        return TokenVectors(offsets=offsets, vectors=vectors, model=model)

    async def health(self) -> BackendHealth:
        return BackendHealth(backend=self.name, reachable=True, where="in process", models=[ModelInfo(name="script")])

    async def aclose(self) -> None:
        return None
