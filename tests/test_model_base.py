from __future__ import annotations

import pytest
from pydantic import BaseModel

from shoal.errors import ModelNotFoundError, SchemaValidationError, ServerError
from shoal.models.base import ChatRequest, Message, ModelRef, RetryPolicy, parse_structured, with_retries


@pytest.mark.parametrize(
    ("text", "backend", "name"),
    [
        ("ollama:qwen2.5:3b", "ollama", "qwen2.5:3b"),
        ("embedded:smollm2-135m", "embedded", "smollm2-135m"),
        ("openai:gpt-4o-mini", "openai", "gpt-4o-mini"),
        ("embedded:/models/x.gguf", "embedded", "/models/x.gguf"),
    ],
)
def test_model_ref_parses(text: str, backend: str, name: str) -> None:
    ref = ModelRef.parse(text)
    assert (ref.backend, ref.name) == (backend, name)
    assert str(ref) == text


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("qwen2.5", "backend:model"),
        ("ollama:", "backend:model"),
        ("vllm:llama", "unknown backend 'vllm'"),
        ("ollama:two words", "no spaces"),
    ],
)
def test_model_ref_rejects(text: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ModelRef.parse(text)


class Point(BaseModel):
    x: int
    y: int


def test_parse_structured_accepts_fenced_json() -> None:
    assert parse_structured('```json\n{"x": 1, "y": 2}\n```', Point) == Point(x=1, y=2)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "empty reply"),
        ("not json at all", "not JSON"),
        ('{"x": "one", "y": 2}', "x: Input should be a valid integer"),
        ('{"x": 1}', "y: Field required"),
        ("\x00\xff\xfe binary", "not JSON"),
        ('{"x": 1, "y": ' + "9" * 1_000_000 + "}", "not JSON"),
    ],
)
def test_parse_structured_errors_keep_raw_text(text: str, match: str) -> None:
    with pytest.raises(SchemaValidationError, match=match) as info:
        parse_structured(text, Point, model="m")
    assert info.value.raw_text == text


def test_parse_structured_names_the_cut_off() -> None:
    with pytest.raises(SchemaValidationError, match="raise max_tokens"):
        parse_structured('{"x": 1, "y"', Point, cut_off=True)


def test_chat_request_validates() -> None:
    with pytest.raises(ValueError, match="at least one message"):
        ChatRequest(model="m", messages=[])
    with pytest.raises(ValueError):
        ChatRequest(model="m", messages=[Message(role="user", content="x")], top_logprobs=50)
    record = ChatRequest(model="m", messages=[Message(role="user", content="x")], output_schema=Point).as_record()
    assert record["output_schema"]["required"] == ["x", "y"]


async def test_retries_transient_only() -> None:
    policy = RetryPolicy(attempts=3, initial_s=0.0, max_s=0.0)
    calls: list[int] = []

    async def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ServerError("502")
        return "ok"

    assert await with_retries(policy, flaky) == "ok" and len(calls) == 3

    calls.clear()

    async def missing() -> str:
        calls.append(1)
        raise ModelNotFoundError("gone")

    with pytest.raises(ModelNotFoundError):
        await with_retries(policy, missing)
    assert len(calls) == 1


def test_record_json_matches_the_record() -> None:
    import json

    from shoal.models.base import Reply

    request = ChatRequest(model="m", messages=[Message(role="user", content="héllo")], output_schema=Point)
    assert json.loads(request.record_json()) == request.as_record()
    plain = ChatRequest(model="m", messages=[Message(role="user", content="x")])
    assert json.loads(plain.record_json())["output_schema"] is None
    reply = Reply(text='{"x": 1, "y": 2}', parsed=Point(x=1, y=2), model="m", backend="embedded")
    assert json.loads(reply.record_json()) == json.loads(json.dumps(reply.as_record()))
