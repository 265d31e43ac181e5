"""Any OpenAI-compatible endpoint, through the `openai` SDK: the frontier tier.

The SDK is imported when a backend is built, not when shoal is imported, so users who never
escalate do not need it installed.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from shoal.errors import (
    AuthenticationError,
    BackendUnavailableError,
    InvalidRequestError,
    MissingExtraError,
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
    schema_name,
    token_logprobs,
    with_retries,
)

if TYPE_CHECKING:
    from shoal.config import Price


OFFICIAL_URL = "https://api.openai.com/v1"


class OpenAIBackend:
    name: ClassVar[BackendName] = "openai"

    def __init__(
        self,
        *,
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        api_key: str | None = None,
        timeout_s: float = 60.0,
        prices: dict[str, Price] | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        try:
            import openai
        except ImportError:
            raise MissingExtraError("the OpenAI-compatible (frontier) backend", "frontier", "openai") from None
        self._openai = openai
        self.base_url = base_url or OFFICIAL_URL
        self.api_key_env = api_key_env
        self.prices = dict(prices or {})
        self.retry = retry or RetryPolicy()
        key = api_key if api_key is not None else os.environ.get(api_key_env)
        # api.openai.com always wants a key; a local OpenAI-compatible server (vLLM, llama.cpp's
        # server) often wants none, so there a missing key is the server's to refuse
        self._has_key = bool(key) or not self.base_url.startswith(OFFICIAL_URL)
        # The SDK's own retries are off: tenacity decides, so every backend retries alike.
        self._client = openai.AsyncOpenAI(
            base_url=self.base_url,
            api_key=key or "missing-key",
            timeout=timeout_s,
            max_retries=0,
        )

    def cost(self, model: str, usage: Usage) -> float:
        price = self.prices.get(model)
        if price is None:
            return 0.0
        return (usage.input_tokens * price.input_per_m + usage.output_tokens * price.output_per_m) / 1e6

    def _check_key(self) -> None:
        """Without a key there is nothing to send: say so before connecting, so the message is about
        the key rather than about the network (and an offline machine gets the same answer)."""
        if not self._has_key:
            raise AuthenticationError(self._missing_key_message())

    def _missing_key_message(self) -> str:
        env = self.api_key_env
        return (
            f"{env} is not set, so there is no key for {self.base_url}: export {env}=<your key> "
            f"(any value for a server that needs none), or name the variable that holds it in shoal.toml "
            f"as [openai] api_key_env"
        )

    async def chat(self, request: ChatRequest) -> Reply:
        self._check_key()
        return await with_retries(self.retry, lambda: self._chat_once(request))

    async def _chat_once(self, request: ChatRequest) -> Reply:
        kwargs: dict[str, Any] = {
            "model": request.model,
            "messages": [m.model_dump() for m in request.messages],
            "temperature": request.temperature,
        }
        if request.max_tokens is not None:
            kwargs["max_tokens"] = request.max_tokens
        if request.seed is not None:
            kwargs["seed"] = request.seed
        if request.output_schema is not None:
            kwargs["response_format"] = {
                "type": "json_schema",
                "json_schema": {
                    "name": schema_name(request.output_schema),
                    "schema": request.json_schema(),
                    "strict": False,
                },
            }
        if request.logprobs:
            kwargs["logprobs"] = True
            kwargs["top_logprobs"] = request.top_logprobs
        started = time.perf_counter()
        try:
            completion = await self._client.chat.completions.create(**kwargs)
        except Exception as exc:
            raise self._translate(exc, request.model) from exc
        latency = time.perf_counter() - started
        if not completion.choices:
            raise ServerError(f"{self.base_url} answered with no choices for model '{request.model}'")
        choice = completion.choices[0]
        # the SDK builds its objects without validating them: a server that breaks the documented
        # shape (content not a string, logprobs not an object) must not raise anything but ServerError
        text = getattr(choice.message, "content", None) or ""
        if not isinstance(text, str):
            raise ServerError(f"{self.base_url} sent message content of type {type(text).__name__}, not text")
        usage = Usage(
            input_tokens=_count(getattr(completion.usage, "prompt_tokens", 0)),
            output_tokens=_count(getattr(completion.usage, "completion_tokens", 0)),
        )
        reply = Reply(
            text=text,
            logprobs=token_logprobs(getattr(choice.logprobs, "content", None)),
            usage=usage,
            latency_s=latency,
            model=request.model,
            backend=self.name,
            cost_usd=self.cost(request.model, usage),
            finish_reason=choice.finish_reason,
        )
        return parse_reply(reply, request)

    async def embed(self, model: str, texts: Sequence[str]) -> Embeddings:
        self._check_key()
        return await with_retries(self.retry, lambda: self._embed_once(model, list(texts)))

    async def _embed_once(self, model: str, texts: list[str]) -> Embeddings:
        started = time.perf_counter()
        try:
            # the endpoint rejects empty strings; a space embeds as "nothing" the same way
            response = await self._client.embeddings.create(
                model=model, input=[t if t.strip() else " " for t in texts], encoding_format="float"
            )
        except Exception as exc:
            raise self._translate(exc, model) from exc
        ordered = sorted(response.data, key=lambda item: item.index)
        vectors = [list(map(float, item.embedding)) for item in ordered]
        tokens = response.usage.prompt_tokens if response.usage else 0
        return Embeddings(
            vectors=check_embeddings(vectors, texts, self.base_url),
            model=model,
            backend=self.name,
            input_tokens=tokens,
            latency_s=time.perf_counter() - started,
        )

    def _translate(self, exc: Exception, model: str) -> ModelError:
        openai = self._openai
        where = self.base_url
        if isinstance(exc, ModelError):
            return exc
        if isinstance(exc, openai.APITimeoutError):
            return BackendUnavailableError(f"{where} timed out")
        if isinstance(exc, openai.APIConnectionError):
            return BackendUnavailableError(
                f"cannot reach {where}: check [openai] base_url in shoal.toml or your network"
            )
        if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
            # only reached with a key: without one, no call is made (`_check_key`)
            return AuthenticationError(f"{where} refused the credentials: set {self.api_key_env} to a valid key")
        if isinstance(exc, openai.NotFoundError):
            return ModelNotFoundError(
                f"model '{model}' is not available at {where}: check the name after 'openai:' ({_detail(exc)})"
            )
        if isinstance(exc, openai.RateLimitError):
            return ServerError(f"{where} is rate limiting: {_detail(exc)}")
        if isinstance(exc, openai.InternalServerError):
            return ServerError(f"{where} failed ({exc.status_code}): {_detail(exc)}")
        if isinstance(exc, openai.APIStatusError):
            if exc.status_code >= 500 or exc.status_code == 429:
                return ServerError(f"{where} failed ({exc.status_code}): {_detail(exc)}")
            return InvalidRequestError(f"{where} rejected the request ({exc.status_code}): {_detail(exc)}")
        if isinstance(exc, openai.APIResponseValidationError | ValueError):
            return ServerError(f"{where} sent an answer that is not the documented JSON: {exc}")
        return ServerError(f"call to {where} failed: {type(exc).__name__}: {exc}")

    async def list_models(self) -> list[ModelInfo]:
        self._check_key()
        try:
            page = await self._client.models.list()
        except Exception as exc:
            raise self._translate(exc, "") from exc
        return [ModelInfo(name=m.id) for m in page.data]

    async def health(self) -> BackendHealth:
        if not self._has_key:
            return BackendHealth(
                backend=self.name,
                reachable=False,
                where=self.base_url,
                reason=self._missing_key_message(),
            )
        try:
            models = await self.list_models()
        except ModelError as exc:
            return BackendHealth(backend=self.name, reachable=False, where=self.base_url, reason=str(exc))
        return BackendHealth(backend=self.name, reachable=True, where=self.base_url, models=models)

    async def aclose(self) -> None:
        await self._client.close()


def _detail(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
    return str(getattr(exc, "message", exc))


def _count(value: object) -> int:
    """A token count as the server gave it, or 0 when it gave none or nonsense."""
    return value if isinstance(value, int) and value >= 0 else 0
