"""One place that turns a `ModelRef` into a call on the right backend, and reports every call.

The recorder is how the engine stores each call as a `ModelCall` row while backends and
specialists stay free of the database.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from shoal import telemetry
from shoal.errors import HeadError, ModelError
from shoal.models.base import BackendName, ChatRequest, Embeddings, ModelBackend, ModelRef, Reply

# What a stored call keeps of a reply (issue #16): a model's text up to this many characters,
# then a marker saying how many were cut; each generated token with its log-probability (no
# top-k alternatives: the confidence and the signals behind it are kept with the step) for at
# most this many tokens. A 1 MB junk reply costs about 16 KB, not 1 MB twice.
STORED_TEXT_CHARS = 16_000
STORED_LOGPROBS = 512


def stored_text(text: str, limit: int = STORED_TEXT_CHARS) -> str:
    """`text` as the store keeps it: whole up to `limit` characters, else its head and a marker."""
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n[shoal: {len(text) - limit:,} more characters not stored]"


class CallRecord(BaseModel):
    """One model call as it happened: what was asked, what came back or what failed."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    ref: ModelRef
    request: ChatRequest
    reply: Reply | None = None
    error: str | None = None
    error_type: str | None = None
    raw_text: str | None = None
    started_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    latency_s: float = 0.0

    def stored_reply(self) -> str | None:
        """The reply as the `modelcall.reply_json` column keeps it: its text (bounded, see
        `STORED_TEXT_CHARS`), the parsed answer (what `shoal show --calls` shows; not when longer
        than that bound), usage, cost and timing, and per token `[token, logprob]` without the
        top-k alternatives (the confidence and the signals behind it are the step's)."""
        reply = self.reply
        if reply is None:
            return None
        data: dict[str, Any] = {"text": stored_text(reply.text)}
        if reply.parsed is not None:
            parsed = reply.parsed.model_dump_json()
            if len(parsed) <= STORED_TEXT_CHARS:
                data["parsed"] = json.loads(parsed)
                if _same_json(reply.text, data["parsed"]):
                    # the text says nothing the parsed answer does not: keep it once (#16)
                    del data["text"]
                    data["text_is_parsed"] = True
            else:
                data["parsed_not_stored"] = f"{len(parsed):,} characters"
        tokens = reply.logprobs[:STORED_LOGPROBS]
        if tokens:
            data["logprobs"] = [[t.token, None if math.isnan(t.logprob) else round(t.logprob, 4)] for t in tokens]
        if len(reply.logprobs) > len(tokens):
            data["logprobs_not_stored"] = len(reply.logprobs) - len(tokens)
        data.update(
            usage=reply.usage.model_dump(),
            latency_s=reply.latency_s,
            model=reply.model,
            backend=reply.backend,
            cost_usd=reply.cost_usd,
            finish_reason=reply.finish_reason,
        )
        return json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str)

    def stored_raw_text(self) -> str | None:
        """What the model said when its reply failed, bounded; None when the stored reply
        already holds the same text (an unparsable reply kept both: the same megabyte twice)."""
        if self.raw_text is None or (self.reply is not None and self.reply.text == self.raw_text):
            return None
        return stored_text(self.raw_text)


@dataclass(frozen=True)
class TokenVectors:
    """One vector per token of a text, with the (start, end) characters each token spells."""

    offsets: list[tuple[int, int]]
    vectors: list[list[float]]
    model: str
    cut: bool = False  # the text had more tokens than the model reads at once; the rest are not here
    latency_s: float = 0.0


Recorder = Callable[[CallRecord], Awaitable[None]]
BackendFactory = Callable[[BackendName], ModelBackend]


class ModelRouter:
    def __init__(self, factory: BackendFactory, recorder: Recorder | None = None) -> None:
        self._factory = factory
        self._backends: dict[BackendName, ModelBackend] = {}
        self.recorder = recorder

    def backend(self, name: BackendName) -> ModelBackend:
        if name not in self._backends:
            self._backends[name] = self._factory(name)
        return self._backends[name]

    async def chat(self, ref: ModelRef | str, request: ChatRequest, *, recorder: Recorder | None = None) -> Reply:
        ref = ModelRef.parse(ref)
        if request.model != ref.name:
            request = request.model_copy(update={"model": ref.name})
        record = recorder or self.recorder
        started = time.perf_counter()
        try:
            with telemetry.chat_span(ref.backend, ref.name, request.temperature, request.max_tokens) as span:
                reply = await self.backend(ref.backend).chat(request)
                if span is not None:
                    telemetry.replied(
                        span,
                        model=reply.model,
                        input_tokens=reply.usage.input_tokens,
                        output_tokens=reply.usage.output_tokens,
                        finish_reason=reply.finish_reason,
                        cost_usd=reply.cost_usd,
                    )
        except ModelError as exc:
            if record is not None:
                failed = getattr(exc, "reply", None)  # an unparsable reply still cost time and tokens
                failed = failed if isinstance(failed, Reply) else None
                await record(
                    CallRecord(
                        ref=ref,
                        request=request,
                        reply=failed,
                        error=str(exc),
                        error_type=type(exc).__name__,
                        raw_text=getattr(exc, "raw_text", None),
                        latency_s=failed.latency_s if failed else time.perf_counter() - started,
                    )
                )
            raise
        if record is not None:
            await record(CallRecord(ref=ref, request=request, reply=reply, latency_s=reply.latency_s))
        return reply

    async def embed(self, ref: ModelRef | str, texts: Sequence[str]) -> Embeddings:
        ref = ModelRef.parse(ref)
        return await self.backend(ref.backend).embed(ref.name, texts)

    async def token_vectors(self, ref: ModelRef | str, text: str) -> TokenVectors:
        """Per-token vectors (span heads read them); only backends that run the model in
        process can give them."""
        ref = ModelRef.parse(ref)
        backend = self.backend(ref.backend)
        read = getattr(backend, "token_vectors", None)
        if read is None:
            raise HeadError(
                f"span heads read one vector per token, which the {ref.backend} backend does not give: "
                f'train and use them on an embedded model (e.g. embed_model = "embedded:smollm2-135m" '
                f"under [specialists.NAME])"
            )
        found: TokenVectors = await read(ref.name, text)
        return found

    async def aclose(self) -> None:
        for backend in self._backends.values():
            await backend.aclose()
        self._backends.clear()


def _same_json(text: str, value: Any) -> bool:
    """Whether `text` is exactly the JSON of `value` (so storing both would store it twice)."""
    try:
        return bool(json.loads(text) == value)
    except ValueError:
        return False
