"""The model call: one request type, one reply type, one protocol every backend implements.

Everything in shoal that talks to a model goes through `ModelBackend.chat(ChatRequest)`, so
recording, escalation and tests see one shape whatever answers.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, ClassVar, Literal, Protocol, TypeVar, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from shoal.errors import ModelError, PermanentModelError, SchemaValidationError

BackendName = Literal["ollama", "embedded", "openai", "scripted"]
# the backends a configuration can name; `scripted` is built in code, for tests
BACKENDS: tuple[BackendName, ...] = ("ollama", "embedded", "openai")

_MODEL_NAME = re.compile(r"^[^\s]+$")


class ModelRef(BaseModel):
    """`backend:model`, e.g. `ollama:qwen2.5:3b`, `embedded:smollm2-135m`, `openai:gpt-4o-mini`.

    Only the first colon separates: Ollama tags keep theirs (`qwen2.5:3b`).
    """

    model_config = ConfigDict(frozen=True)

    backend: BackendName
    name: str

    @field_validator("name")
    @classmethod
    def _name_has_no_spaces(cls, value: str) -> str:
        if not _MODEL_NAME.match(value):
            raise ValueError(f"model name {value!r} must be non-empty and contain no spaces")
        return value

    @classmethod
    def parse(cls, text: str | ModelRef) -> ModelRef:
        if isinstance(text, ModelRef):
            return text
        backend, sep, name = text.strip().partition(":")
        if not sep or not name:
            raise ValueError(
                f"model reference {text!r} is not of the form backend:model; "
                f"use e.g. 'ollama:qwen2.5:3b', 'embedded:smollm2-135m' or 'openai:gpt-4o-mini'"
            )
        if backend not in (*BACKENDS, "scripted"):
            raise ValueError(
                f"model reference {text!r} names unknown backend {backend!r}; known backends: {', '.join(BACKENDS)}"
            )
        return cls.model_validate({"backend": backend, "name": name})

    def __str__(self) -> str:
        return f"{self.backend}:{self.name}"


class Message(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class ChatRequest(BaseModel):
    """What to ask. `output_schema` is a pydantic model; backends send its JSON schema."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    model: str = Field(description="model name within the backend, without the backend prefix")
    messages: list[Message]
    output_schema: type[BaseModel] | None = None
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    seed: int | None = None
    max_tokens: int | None = Field(default=512, gt=0)
    logprobs: bool = False
    top_logprobs: int = Field(default=0, ge=0, le=20)

    @field_validator("messages")
    @classmethod
    def _not_empty(cls, value: list[Message]) -> list[Message]:
        if not value:
            raise ValueError("a chat request needs at least one message")
        return value

    def json_schema(self) -> dict[str, Any] | None:
        return None if self.output_schema is None else schema_of(self.output_schema)

    def as_record(self) -> dict[str, Any]:
        """A JSON-ready view for logs and the store (the schema class becomes its schema)."""
        data = self.model_dump(exclude={"output_schema"})
        data["output_schema"] = self.json_schema()
        return data

    def record_json(self) -> str:
        """`as_record()` as JSON text, built by pydantic's serializer (every call is stored)."""
        schema = "null" if self.output_schema is None else schema_json_of(self.output_schema)
        return self.model_dump_json(exclude={"output_schema"})[:-1] + ',"output_schema":' + schema + "}"


class TopLogprob(BaseModel):
    token: str
    logprob: float


class TokenLogprob(BaseModel):
    """One generated token, its log-probability and the most likely alternatives."""

    token: str
    logprob: float
    top: list[TopLogprob] = Field(default_factory=list)

    @property
    def prob(self) -> float:
        return math.exp(self.logprob)


def token_logprobs(items: Any) -> list[TokenLogprob]:
    """Token logprobs from any backend's answer: objects (ollama, openai) or dicts (llama.cpp)."""

    def get(item: Any, key: str) -> Any:
        return item.get(key) if isinstance(item, dict) else getattr(item, key, None)

    return [
        TokenLogprob(
            token=get(item, "token"),
            logprob=get(item, "logprob"),
            top=[TopLogprob(token=get(t, "token"), logprob=get(t, "logprob")) for t in get(item, "top_logprobs") or []],
        )
        for item in items or []
    ]


class Usage(BaseModel):
    input_tokens: int = 0
    output_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


class Reply(BaseModel):
    """What came back, with everything needed to judge and account for it."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    text: str
    parsed: BaseModel | None = None
    logprobs: list[TokenLogprob] = Field(default_factory=list)
    usage: Usage = Field(default_factory=Usage)
    latency_s: float = 0.0
    model: str
    backend: BackendName
    cost_usd: float = 0.0
    finish_reason: str | None = None

    @property
    def ref(self) -> str:
        return f"{self.backend}:{self.model}"

    def as_record(self) -> dict[str, Any]:
        data = self.model_dump(exclude={"parsed"})
        data["parsed"] = None if self.parsed is None else self.parsed.model_dump(mode="json")
        return data

    def record_json(self) -> str:
        parsed = "null" if self.parsed is None else self.parsed.model_dump_json()
        return self.model_dump_json(exclude={"parsed"})[:-1] + ',"parsed":' + parsed + "}"


class ModelInfo(BaseModel):
    name: str
    size_bytes: int | None = None
    detail: str = ""


class BackendHealth(BaseModel):
    backend: BackendName
    reachable: bool
    where: str
    reason: str = ""
    models: list[ModelInfo] = Field(default_factory=list)


class Embeddings(BaseModel):
    """One vector per input text, in input order, as the backend pooled them."""

    vectors: list[list[float]]
    model: str
    backend: BackendName
    input_tokens: int = 0
    latency_s: float = 0.0

    @property
    def dim(self) -> int:
        return len(self.vectors[0]) if self.vectors else 0


@runtime_checkable
class ModelBackend(Protocol):
    """Who answers. Implementations: Ollama, embedded llama.cpp, OpenAI-compatible."""

    name: ClassVar[BackendName]

    async def chat(self, request: ChatRequest) -> Reply: ...

    async def embed(self, model: str, texts: Sequence[str]) -> Embeddings:
        """A vector per text (one batch; callers split long lists)."""
        ...

    async def health(self) -> BackendHealth: ...

    async def aclose(self) -> None: ...


class RetryPolicy(BaseModel):
    """Bounded exponential backoff with jitter for transient failures."""

    attempts: int = Field(default=4, ge=1, le=20)
    initial_s: float = Field(default=0.5, ge=0.0)
    max_s: float = Field(default=8.0, ge=0.0)


T = TypeVar("T")


async def with_retries(policy: RetryPolicy, call: Callable[[], Awaitable[T]]) -> T:
    """Run `call`, retrying only errors marked transient; permanent ones surface at once."""
    retrying = AsyncRetrying(
        retry=retry_if_exception(lambda e: isinstance(e, ModelError) and e.transient),
        stop=stop_after_attempt(policy.attempts),
        wait=wait_random_exponential(multiplier=policy.initial_s, max=policy.max_s),
        reraise=True,
    )
    async for attempt in retrying:
        with attempt:
            return await call()
    raise AssertionError("unreachable: tenacity either returns or reraises")


M = TypeVar("M", bound=BaseModel)

_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL)


def parse_structured(text: str, schema: type[M], *, model: str = "", cut_off: bool = False) -> M:
    """Validate a model's text against `schema`, keeping the raw text on failure.

    `cut_off`: generation stopped at max_tokens, which is then the likely cause and the fix.
    """
    try:
        return _parse_structured(text, schema, model)
    except SchemaValidationError as exc:
        if not cut_off:
            raise
        raise SchemaValidationError(
            f"the reply was cut off at max_tokens before the JSON was complete; raise max_tokens. {exc}",
            raw_text=text,
            model=model,
        ) from None


def parse_reply(reply: Reply, request: ChatRequest) -> Reply:
    """Fill `reply.parsed` when the request asked for a schema; a failure keeps the reply."""
    if request.output_schema is not None:
        try:
            reply.parsed = parse_structured(
                reply.text, request.output_schema, model=reply.ref, cut_off=reply.finish_reason == "length"
            )
        except SchemaValidationError as exc:
            exc.reply = reply
            raise
    return reply


def _parse_structured(text: str, schema: type[M], model: str) -> M:
    body = text.strip()
    fenced = _FENCE.match(body)
    if fenced:  # small models wrap JSON in a fence even when told not to
        body = fenced.group(1)
    if not body:
        raise SchemaValidationError(
            f"{model or 'the model'} returned an empty reply where {schema.__name__} JSON was expected",
            raw_text=text,
            model=model,
        )
    try:
        # strict=False: llama.cpp grammars let raw newlines into strings; they are harmless here
        data = json.loads(body, strict=False)
    except ValueError as exc:
        preview = body if len(body) <= 200 else body[:200] + "…"
        raise SchemaValidationError(
            f"{model or 'the model'} returned text that is not JSON ({exc}); reply began {preview!r}",
            raw_text=text,
            model=model,
        ) from None
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}" for err in exc.errors()[:5]
        )
        preview = body if len(body) <= 200 else body[:200] + "…"
        raise SchemaValidationError(
            f"{model or 'the model'} returned text that is not a valid {schema.__name__}: "
            f"{problems}; reply began {preview!r}",
            raw_text=text,
            model=model,
        ) from None


@functools.lru_cache(maxsize=256)
def schema_of(model: type[BaseModel]) -> dict[str, Any]:
    """A model's JSON schema, built once: pydantic rebuilds it on every call, and every
    request and every record of a request needs it."""
    return model.model_json_schema()


@functools.lru_cache(maxsize=256)
def schema_json_of(model: type[BaseModel]) -> str:
    return json.dumps(schema_of(model), ensure_ascii=False)


def schema_name(schema: type[BaseModel]) -> str:
    """A name OpenAI-style endpoints accept (letters, digits, _ and -, at most 64)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", schema.__name__)[:64] or "output"


def dumps_compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def check_embeddings(vectors: list[list[float]], texts: Sequence[str], where: str) -> list[list[float]]:
    """A server that answers with the wrong number of vectors, or ragged ones, is broken (not
    busy: asking again gets the same); a silent mismatch would pair texts with wrong vectors."""
    if len(vectors) != len(texts):
        raise PermanentModelError(f"{where} returned {len(vectors)} embeddings for {len(texts)} texts")
    if vectors and len({len(v) for v in vectors}) != 1:
        raise PermanentModelError(f"{where} returned embeddings of different sizes")
    if vectors and not vectors[0]:
        raise PermanentModelError(f"{where} returned empty embeddings")
    return vectors
