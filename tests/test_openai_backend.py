"""OpenAIBackend against the OpenAI chat-completions HTTP API, served on loopback."""

from __future__ import annotations

import os

import pytest
from httpfake import Answer, FakeServer, free_port
from pydantic import BaseModel

from shoal.config import Price
from shoal.errors import (
    AuthenticationError,
    BackendUnavailableError,
    ModelNotFoundError,
    PermanentModelError,
    SchemaValidationError,
    ServerError,
)
from shoal.models.base import ChatRequest, Message, RetryPolicy
from shoal.models.openai import OpenAIBackend

LIVE_KEY = os.environ.get("OPENAI_API_KEY")  # read before the autouse fixture clears it


class Ticket(BaseModel):
    category: str
    order_id: str


def completion(content: str, *, logprobs: list[dict[str, object]] | None = None) -> dict[str, object]:
    return {
        "id": "chatcmpl-123",
        "object": "chat.completion",
        "created": 1_763_000_000,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": None},
                "logprobs": None if logprobs is None else {"content": logprobs, "refusal": None},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 1000, "completion_tokens": 500, "total_tokens": 1500},
    }


def error(status: int, message: str, code: str) -> Answer:
    return Answer(status, {"error": {"message": message, "type": "invalid_request_error", "code": code}})


def backend(server: FakeServer, retry: RetryPolicy) -> OpenAIBackend:
    return OpenAIBackend(
        base_url=server.url + "/v1",
        api_key="sk-test",
        prices={"gpt-4o-mini": Price(input_per_m=0.15, output_per_m=0.60)},
        retry=retry,
    )


def request(**kw: object) -> ChatRequest:
    return ChatRequest(model="gpt-4o-mini", messages=[Message(role="user", content="order 42 broke")], **kw)  # type: ignore[arg-type]


async def test_success_with_schema_logprobs_and_cost(server: FakeServer, fast_retry: RetryPolicy) -> None:
    lp = [
        {
            "token": "{",
            "logprob": -0.002,
            "bytes": [123],
            "top_logprobs": [{"token": "{", "logprob": -0.002, "bytes": [123]}],
        }
    ]
    server.add("/v1/chat/completions", Answer(body=completion('{"category":"ORDER","order_id":"42"}', logprobs=lp)))
    b = backend(server, fast_retry)
    reply = await b.chat(request(output_schema=Ticket, logprobs=True, top_logprobs=1, seed=3))
    await b.aclose()
    assert reply.parsed == Ticket(category="ORDER", order_id="42")
    assert reply.logprobs[0].top[0].logprob == pytest.approx(-0.002)
    assert reply.usage.input_tokens == 1000 and reply.usage.output_tokens == 500
    assert reply.cost_usd == pytest.approx((1000 * 0.15 + 500 * 0.60) / 1e6)
    sent = server.bodies("/v1/chat/completions")[0]
    assert sent["response_format"]["type"] == "json_schema"
    assert sent["response_format"]["json_schema"]["schema"] == Ticket.model_json_schema()
    assert sent["logprobs"] is True and sent["top_logprobs"] == 1 and sent["seed"] == 3


async def test_unknown_model(server: FakeServer, fast_retry: RetryPolicy) -> None:
    server.always("/v1/chat/completions", error(404, "The model `gpt-9` does not exist", "model_not_found"))
    with pytest.raises(ModelNotFoundError, match="gpt-9"):
        await backend(server, fast_retry).chat(request())
    assert len(server.bodies("/v1/chat/completions")) == 1


async def test_bad_key_is_permanent(server: FakeServer, fast_retry: RetryPolicy) -> None:
    server.always("/v1/chat/completions", error(401, "Incorrect API key provided", "invalid_api_key"))
    with pytest.raises(AuthenticationError, match="OPENAI_API_KEY"):
        await backend(server, fast_retry).chat(request())
    assert len(server.bodies("/v1/chat/completions")) == 1


async def test_500_then_success(server: FakeServer, fast_retry: RetryPolicy) -> None:
    server.add(
        "/v1/chat/completions",
        Answer(500, {"error": {"message": "The server had an error", "type": "server_error"}}),
        error(429, "Rate limit reached", "rate_limit_exceeded"),
        Answer(body=completion("ok")),
    )
    reply = await backend(server, fast_retry).chat(request())
    assert reply.text == "ok"
    assert len(server.bodies("/v1/chat/completions")) == 3


async def test_connection_refused(fast_retry: RetryPolicy) -> None:
    b = OpenAIBackend(base_url=f"http://127.0.0.1:{free_port()}/v1", api_key="sk-test", retry=fast_retry)
    with pytest.raises(BackendUnavailableError, match="cannot reach"):
        await b.chat(request())


async def test_malformed_json_body(server: FakeServer, fast_retry: RetryPolicy) -> None:
    server.always("/v1/chat/completions", Answer(body="{not json", content_type="application/json"))
    with pytest.raises(ServerError):
        await backend(server, fast_retry).chat(request())


async def test_reply_breaking_schema_keeps_raw_text(server: FakeServer, fast_retry: RetryPolicy) -> None:
    server.add("/v1/chat/completions", Answer(body=completion("Sure! Here is the JSON")))
    with pytest.raises(SchemaValidationError) as info:
        await backend(server, fast_retry).chat(request(output_schema=Ticket))
    assert info.value.raw_text == "Sure! Here is the JSON"


async def test_missing_key_is_reported_in_health() -> None:
    health = await OpenAIBackend().health()  # api.openai.com, which always wants a key
    assert not health.reachable and "OPENAI_API_KEY is not set" in health.reason


async def test_embeddings_in_index_order(server: FakeServer, fast_retry: RetryPolicy) -> None:
    # the /v1/embeddings response as platform.openai.com documents it (items carry their index)
    server.add("/v1/embeddings", Answer(429, {"error": {"message": "slow down", "type": "rate_limit", "code": None}}))
    server.add(
        "/v1/embeddings",
        Answer(
            body={
                "object": "list",
                "data": [
                    {"object": "embedding", "index": 1, "embedding": [0.3, 0.4]},
                    {"object": "embedding", "index": 0, "embedding": [0.1, 0.2]},
                ],
                "model": "text-embedding-3-small",
                "usage": {"prompt_tokens": 9, "total_tokens": 9},
            }
        ),
    )
    result = await backend(server, fast_retry).embed("text-embedding-3-small", ["first", ""])
    assert result.vectors == [[0.1, 0.2], [0.3, 0.4]] and result.input_tokens == 9
    sent = server.bodies("/v1/embeddings")[-1]
    assert sent["input"] == ["first", " "] and sent["model"] == "text-embedding-3-small"


async def test_embeddings_errors(server: FakeServer, fast_retry: RetryPolicy) -> None:
    server.add("/v1/embeddings", error(404, "The model `nope` does not exist", "model_not_found"))
    with pytest.raises(ModelNotFoundError, match="nope"):
        await backend(server, fast_retry).embed("nope", ["a"])
    server.add("/v1/embeddings", Answer(body={"object": "list", "data": [], "model": "m", "usage": None}))
    with pytest.raises(PermanentModelError, match="0 embeddings for 1 texts"):
        await backend(server, fast_retry).embed("m", ["a"])


@pytest.mark.live
async def test_live_frontier() -> None:
    if not LIVE_KEY:
        pytest.skip("OPENAI_API_KEY is not set")
    b = OpenAIBackend(base_url=os.environ.get("SHOAL_FRONTIER_BASE_URL"), api_key=LIVE_KEY)
    reply = await b.chat(
        ChatRequest(
            model=os.environ.get("SHOAL_LIVE_FRONTIER_MODEL", "gpt-4o-mini"),
            messages=[Message(role="user", content="Ticket: order 42 arrived broken. Fill the JSON.")],
            output_schema=Ticket,
            max_tokens=64,
        )
    )
    assert isinstance(reply.parsed, Ticket)
    await b.aclose()


@pytest.mark.parametrize(
    "broken",
    [
        {"logprobs": "junk"},
        {"logprobs": {"content": [{"token": 5, "logprob": "NaN"}]}},
        {"message": {"role": "assistant", "content": {"not": "text"}}},
    ],
    ids=["logprobs-not-an-object", "logprob-items-wrong", "content-not-text"],
)
async def test_a_reply_off_the_documented_shape_is_a_server_error_or_no_evidence(
    server: FakeServer, fast_retry: RetryPolicy, broken: dict[str, object]
) -> None:
    body = completion('{"category": "ORDER", "order_id": "1"}')
    choice = body["choices"][0]  # type: ignore[index]
    choice.update(broken)
    body["usage"] = {"prompt_tokens": "many", "completion_tokens": None}
    server.always("/v1/chat/completions", Answer(body=body))
    try:
        reply = await backend(server, fast_retry).chat(request(output_schema=Ticket, logprobs=True))
    except ServerError as exc:
        assert "not text" in str(exc)
    else:
        assert reply.parsed == Ticket(category="ORDER", order_id="1")
        assert reply.usage.input_tokens == 0
