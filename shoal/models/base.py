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
from itertools import accumulate
from typing import Any, ClassVar, Literal, Protocol, TypeVar, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

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


# A log-probability a little above 0 is float rounding of a near-certain token, not an error.
_LOGPROB_SLACK = 1e-3


def probability(logprob: float) -> float | None:
    """The probability behind a log-probability, or None when the number cannot be one.

    NaN, +inf and clearly positive values (a probability above 1) come from broken or hostile
    servers: they are missing evidence, never a number to compute a confidence with. -inf is
    probability 0, and a value within rounding of 0 is probability 1.
    """
    if math.isnan(logprob) or logprob > _LOGPROB_SLACK:
        return None
    return math.exp(min(logprob, 0.0))


# A lone UTF-16 surrogate (a server's JSON can carry one as a \ud800 escape) is not text: it
# cannot be encoded, stored or serialised, so it becomes U+FFFD wherever a reply's text enters.
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def _without_surrogates(text: str) -> str:
    return text if text.isascii() else _SURROGATE.sub("\ufffd", text)  # isascii: O(1) in CPython


class TopLogprob(BaseModel):
    token: str
    logprob: float

    @field_validator("token")
    @classmethod
    def _no_lone_surrogates(cls, value: str) -> str:
        return _without_surrogates(value)


class TokenLogprob(BaseModel):
    """One generated token, its log-probability and the most likely alternatives."""

    token: str
    logprob: float
    top: list[TopLogprob] = Field(default_factory=list)

    @field_validator("token")
    @classmethod
    def _no_lone_surrogates(cls, value: str) -> str:
        return _without_surrogates(value)

    @property
    def prob(self) -> float:
        """The token's probability; NaN when the backend's number is not a log-probability."""
        p = probability(self.logprob)
        return math.nan if p is None else p


def token_logprobs(items: Any) -> list[TokenLogprob]:
    """Token logprobs from any backend's answer: objects (ollama, openai) or dicts (llama.cpp).

    A server's answer is not trusted to have the right shape: anything but a list reads as no
    logprobs, a token that is not text as "", and a log-probability that is missing, not a
    number, NaN, +inf or above 0 as NaN, which `probability` and every confidence built on it
    treat as missing evidence. So a bad number never fails the call, nor becomes a confidence.
    """

    def get(item: Any, key: str) -> Any:
        return item.get(key) if isinstance(item, dict) else getattr(item, key, None)

    def listed(value: Any) -> list[Any]:
        return list(value) if isinstance(value, list | tuple) else []

    return [
        TokenLogprob(
            token=_token_text(get(item, "token")),
            logprob=_logprob_value(get(item, "logprob")),
            top=[
                TopLogprob(token=_token_text(get(t, "token")), logprob=_logprob_value(get(t, "logprob")))
                for t in listed(get(item, "top_logprobs"))
            ],
        )
        for item in listed(items)
    ]


def _token_text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _logprob_value(value: Any) -> float:
    if value is None or isinstance(value, bool):
        return math.nan
    try:  # float() too, not isinstance: llama.cpp gives numpy float32s, which are not floats
        number = float(value)
    except (TypeError, ValueError, OverflowError):  # a list, "abc", an int too large for a float
        return math.nan
    return number if probability(number) is not None else math.nan


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

    @field_validator("text")
    @classmethod
    def _no_lone_surrogates(cls, value: str) -> str:
        return _without_surrogates(value)

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
    # here, not at the top: reading the config (ModelRef) must not pay for tenacity
    from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_random_exponential

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

# Every reply is parsed in time linear in its length and in bounded depth, however hostile:
# fence stripping is plain string work, nesting is measured before json.loads recurses, and a
# reply longer than any answer a specialist asks for is refused before it is read at all.
MAX_REPLY_CHARS = 2_000_000
MAX_JSON_DEPTH = 64
_MAX_LISTED_PROBLEMS = 100  # pydantic builds every error when asked: a huge reply can have millions


def unfence(text: str, languages: Sequence[str] = ("json",), *, code: bool = False) -> str | None:
    """The inside of a Markdown code fence that wraps all of `text`, or None when none does.

    Small models wrap answers in a fence even when told not to. The opening fence is ``` at the
    start (after whitespace), optionally followed by one of `languages`; the closing fence is the
    ``` that ends the text (before whitespace). JSON (`code=False`) comes back without surrounding
    whitespace. Code (`code=True`) needs a line break after the opening fence and keeps the first
    line's indentation; one line break before the closing fence is dropped.

    Only linear-time string operations: the regular expression this replaces backtracked in
    cubic time on a fence left open before a few thousand spaces.
    """
    start = len(text) - len(text.lstrip())
    end = len(text.rstrip())
    if end - start < 6 or not text.startswith("```", start) or not text.endswith("```", start, end):
        return None
    inner = text[start + 3 : end - 3]
    for tag in (*languages, ""):
        if not inner.startswith(tag):
            continue
        rest = inner[len(tag) :]
        if not code:
            return rest.strip()
        indent = len(rest) - len(rest.lstrip())
        newline = rest.rfind("\n", 0, indent)
        if newline < 0:  # e.g. ```python3 or ```py x = 1: not a fence this language opens
            continue
        body = rest[newline + 1 :]
        return body[:-1] if body.endswith("\n") else body
    return None


# A JSON string, closed or not, matched possessively (no backtracking): linear time.
_JSON_STRING = re.compile(r'"(?:[^"\\]++|\\.?)*+"?', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]++")
_DEPTH_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


def json_depth(text: str) -> int:
    """How deeply JSON text nests arrays and objects (brackets inside strings do not count).

    Linear time and no recursion, so it is safe on any text; invalid JSON gets a number too
    (json.loads rejects it afterwards).
    """
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text))
    return max(accumulate(map(_DEPTH_STEP.__getitem__, brackets)), default=0)


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number JSON allows")


def _finite_float(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):
        shown = literal if len(literal) <= 40 else literal[:40] + "…"
        raise ValueError(f"the number {shown} is too large for a float")
    return value


# a JSON \u escape of a UTF-16 surrogate: json.loads turns a lone one into a lone surrogate
_ESCAPED_SURROGATE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def _replace_surrogates(value: Any) -> Any:
    """`value` with lone surrogates in its strings as U+FFFD (recursion bounded by MAX_JSON_DEPTH)."""
    if isinstance(value, str):
        return _without_surrogates(value)
    if isinstance(value, list):
        return [_replace_surrogates(item) for item in value]
    if isinstance(value, dict):
        return {_replace_surrogates(key): _replace_surrogates(item) for key, item in value.items()}
    return value


def parse_structured(text: str, schema: type[M], *, model: str = "", cut_off: bool = False) -> M:
    """Validate a model's text against `schema`, keeping the raw text on failure.

    `cut_off`: generation stopped at max_tokens, which is then the likely cause and the fix.
    Whatever the text, this returns a `schema` or raises SchemaValidationError, in time linear
    in the text's length.
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
            cut_off=True,
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
    who = model or "the model"

    def refuse(why: str, body: str) -> SchemaValidationError:
        preview = body if len(body) <= 200 else body[:200] + "…"
        return SchemaValidationError(f"{who} returned {why}; reply began {preview!r}", raw_text=text, model=model)

    if len(text) > MAX_REPLY_CHARS:
        raise refuse(
            f"{len(text):,} characters where {schema.__name__} JSON was expected, more than the "
            f"{MAX_REPLY_CHARS:,} shoal reads from a reply",
            text,
        )
    body = _without_surrogates(text).strip()
    inner = unfence(body)
    if inner is not None:  # small models wrap JSON in a fence even when told not to
        body = inner
    if not body:
        raise SchemaValidationError(
            f"{who} returned an empty reply where {schema.__name__} JSON was expected",
            raw_text=text,
            model=model,
        )
    opened = body.count("[") + body.count("{")  # no deeper than this: most replies skip the scan
    if opened > MAX_JSON_DEPTH and json_depth(body) > MAX_JSON_DEPTH:
        raise refuse(f"JSON nested more than {MAX_JSON_DEPTH} levels deep, which shoal does not parse", body)
    try:
        # strict=False: llama.cpp grammars let raw newlines into strings; they are harmless here.
        # NaN, Infinity and numbers beyond a float's range are refused: no answer needs them.
        data = json.loads(body, strict=False, parse_constant=_reject_constant, parse_float=_finite_float)
    except RecursionError:  # json_depth stops this first; kept so no RecursionError ever escapes
        raise refuse(f"JSON nested too deeply to parse (more than {MAX_JSON_DEPTH} levels)", body) from None
    except ValueError as exc:  # json.JSONDecodeError, and ints of more than 4,300 digits
        raise refuse(f"text that is not JSON ({exc})", body) from None
    if _ESCAPED_SURROGATE.search(body):
        data = _replace_surrogates(data)
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        count = exc.error_count()
        if count > _MAX_LISTED_PROBLEMS:
            problems = f"{count:,} values do not fit it"
        else:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}"
                for err in exc.errors(include_url=False, include_context=False, include_input=False)[:5]
            )
        raise refuse(f"text that is not a valid {schema.__name__}: {problems}", body) from None
    except RecursionError:
        raise refuse(f"JSON nested too deeply to validate as {schema.__name__}", body) from None
    except Exception as exc:  # a validator of the schema's own that this reply broke
        raise refuse(f"text that {schema.__name__}'s validators failed on ({type(exc).__name__}: {exc})", body) from exc


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
