"""Ollama server through the official `ollama.AsyncClient`."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from typing import Any, ClassVar

import httpx
import ollama
from pydantic import BaseModel

from shoal.errors import (
    BackendUnavailableError,
    InvalidRequestError,
    ModelError,
    ModelNotFoundError,
    ServerError,
)
from shoal.models.base import (
    BackendHealth,
    BackendName,
    ChatRequest,
    Embeddings,
    ModelInfo,
    Reply,
    RetryPolicy,
    Usage,
    check_embeddings,
    parse_reply,
    token_logprobs,
    with_retries,
)


class PullProgress(BaseModel):
    status: str
    completed: int | None = None
    total: int | None = None
    digest: str | None = None


class OllamaBackend:
    name: ClassVar[BackendName] = "ollama"

    def __init__(
        self,
        host: str = "http://127.0.0.1:11434",
        *,
        timeout_s: float = 120.0,
        keep_alive: str | float | None = "5m",
        num_ctx: int | None = None,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.host = host
        self.keep_alive = keep_alive
        self.num_ctx = num_ctx
        self.retry = retry or RetryPolicy()
        extra: dict[str, Any] = {} if transport is None else {"transport": transport}
        self._client = ollama.AsyncClient(host=host, timeout=timeout_s, **extra)

    async def chat(self, request: ChatRequest) -> Reply:
        return await with_retries(self.retry, lambda: self._chat_once(request))

    async def _chat_once(self, request: ChatRequest) -> Reply:
        options: dict[str, Any] = {"temperature": request.temperature}
        if request.seed is not None:
            options["seed"] = request.seed
        if request.max_tokens is not None:
            options["num_predict"] = request.max_tokens
        if self.num_ctx is not None:
            options["num_ctx"] = self.num_ctx
        started = time.perf_counter()
        try:
            response = await self._client.chat(
                model=request.model,
                messages=[m.model_dump() for m in request.messages],
                format=request.json_schema(),
                options=options,
                keep_alive=self.keep_alive,
                logprobs=request.logprobs or None,
                top_logprobs=request.top_logprobs if request.logprobs else None,
            )
        except Exception as exc:
            raise self._translate(exc, request.model) from exc
        latency = time.perf_counter() - started
        text = response.message.content or ""
        reply = Reply(
            text=text,
            logprobs=token_logprobs(response.logprobs),
            usage=Usage(
                input_tokens=response.prompt_eval_count or 0,
                output_tokens=response.eval_count or 0,
            ),
            latency_s=latency,
            model=request.model,
            backend=self.name,
            finish_reason=response.done_reason,
        )
        return parse_reply(reply, request)

    async def embed(self, model: str, texts: Sequence[str]) -> Embeddings:
        return await with_retries(self.retry, lambda: self._embed_once(model, list(texts)))

    async def _embed_once(self, model: str, texts: list[str]) -> Embeddings:
        started = time.perf_counter()
        try:
            # truncate: a text longer than the model's context is cut, as the embedded backend does
            response = await self._client.embed(model=model, input=texts, truncate=True, keep_alive=self.keep_alive)
        except Exception as exc:
            raise self._translate(exc, model) from exc
        vectors = [list(map(float, v)) for v in response.embeddings]
        return Embeddings(
            vectors=check_embeddings(vectors, texts, f"Ollama at {self.host}"),
            model=model,
            backend=self.name,
            input_tokens=response.prompt_eval_count or 0,
            latency_s=time.perf_counter() - started,
        )

    def _translate(self, exc: Exception, model: str) -> ModelError:
        if isinstance(exc, ModelError):
            return exc
        if isinstance(exc, ollama.ResponseError):
            status, reason = exc.status_code, str(exc.error)
            lowered = reason.lower()
            if status == 404 or "not found" in lowered or "file does not exist" in lowered:
                return ModelNotFoundError(
                    f"model '{model}' is not pulled on {self.host}: run 'ollama pull {model}' (server said: {reason})"
                )
            if status >= 500 or status == -1 or "loading" in lowered:
                return ServerError(f"Ollama at {self.host} failed ({status}): {reason}")
            return InvalidRequestError(f"Ollama at {self.host} rejected the request ({status}): {reason}")
        if isinstance(exc, ConnectionError | httpx.ConnectError):
            return BackendUnavailableError(
                f"cannot reach Ollama at {self.host}: start it with 'ollama serve', or set "
                f"OLLAMA_HOST / [ollama] host in shoal.toml to where it runs"
            )
        if isinstance(exc, httpx.TimeoutException):
            return BackendUnavailableError(f"Ollama at {self.host} timed out ({type(exc).__name__})")
        if isinstance(exc, httpx.TransportError | ValueError):
            # ValueError: the body was not the JSON Ollama documents (a proxy page, a cut stream)
            return ServerError(f"Ollama at {self.host} sent an unreadable answer: {exc}")
        return ServerError(f"Ollama call failed: {type(exc).__name__}: {exc}")

    async def list_models(self) -> list[ModelInfo]:
        try:
            listing = await self._client.list()
        except Exception as exc:
            raise self._translate(exc, "") from exc
        return [
            ModelInfo(
                name=m.model or "",
                size_bytes=int(m.size) if m.size is not None else None,
                detail=(m.details.parameter_size or "") if m.details else "",
            )
            for m in listing.models
        ]

    async def pull(self, model: str) -> AsyncIterator[PullProgress]:
        """Pull `model`, yielding the server's progress lines (for a progress bar)."""
        try:
            stream = await self._client.pull(model, stream=True)
            async for part in stream:
                yield PullProgress(
                    status=part.status or "",
                    completed=part.completed,
                    total=part.total,
                    digest=part.digest,
                )
        except Exception as exc:
            raise self._translate(exc, model) from exc

    async def health(self) -> BackendHealth:
        try:
            models = await self.list_models()
        except ModelError as exc:
            return BackendHealth(backend=self.name, reachable=False, where=self.host, reason=str(exc))
        return BackendHealth(backend=self.name, reachable=True, where=self.host, models=models)

    async def aclose(self) -> None:
        await self._client._client.aclose()
