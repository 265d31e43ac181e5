"""OllamaBackend against Ollama's documented HTTP API, served on loopback."""

from __future__ import annotations

import os

import httpx
import pytest
from httpfake import Answer, FakeServer, free_port
from pydantic import BaseModel

from shoal.errors import (
    BackendUnavailableError,
    InvalidRequestError,
    ModelNotFoundError,
    PermanentModelError,
    SchemaValidationError,
    ServerError,
)
from shoal.models.base import ChatRequest, Message, RetryPolicy
from shoal.models.ollama import OllamaBackend


class Ticket(BaseModel):
    category: str
    order_id: str


def chat_body(content: str, **extra: object) -> dict[str, object]:
    """The /api/chat non-streaming response, as docs.ollama.com/api/chat documents it."""
    return {
        "model": "qwen2.5:3b",
        "created_at": "2026-11-23T10:00:00.000000Z",
        "message": {"role": "assistant", "content": content},
        "done": True,
        "done_reason": "stop",
        "total_duration": 5_000_000,
        "load_duration": 1_000,
        "prompt_eval_count": 26,
        "prompt_eval_duration": 1_000_000,
        "eval_count": 12,
        "eval_duration": 3_000_000,
        **extra,
    }


def request(**kw: object) -> ChatRequest:
    return ChatRequest(model="qwen2.5:3b", messages=[Message(role="user", content="order 42 broke")], **kw)  # type: ignore[arg-type]


async def test_success_with_schema_and_logprobs(server: FakeServer, fast_retry: RetryPolicy) -> None:
    logprobs = [
        {
            "token": "{",
            "logprob": -0.01,
            "top_logprobs": [{"token": "{", "logprob": -0.01}, {"token": "```", "logprob": -4.6}],
        }
    ]
    server.add("/api/chat", Answer(body=chat_body('{"category": "ORDER", "order_id": "42"}', logprobs=logprobs)))
    backend = OllamaBackend(server.url, retry=fast_retry, keep_alive="10m", num_ctx=4096)
    reply = await backend.chat(request(output_schema=Ticket, logprobs=True, top_logprobs=2, seed=7, max_tokens=64))
    await backend.aclose()

    assert reply.parsed == Ticket(category="ORDER", order_id="42")
    assert reply.usage.input_tokens == 26 and reply.usage.output_tokens == 12
    assert reply.logprobs[0].token == "{" and reply.logprobs[0].top[1].token == "```"
    assert reply.backend == "ollama" and reply.ref == "ollama:qwen2.5:3b"
    sent = server.bodies("/api/chat")[0]
    assert sent["format"] == Ticket.model_json_schema()
    assert sent["logprobs"] is True and sent["top_logprobs"] == 2
    assert sent["keep_alive"] == "10m"
    assert sent["options"] == {"temperature": 0.0, "seed": 7, "num_predict": 64, "num_ctx": 4096}
    assert sent["stream"] is False


async def test_model_not_pulled_names_the_fix_and_is_not_retried(server: FakeServer, fast_retry: RetryPolicy) -> None:
    server.always("/api/chat", Answer(404, {"error": 'model "qwen2.5:3b" not found, try pulling it first'}))
    backend = OllamaBackend(server.url, retry=fast_retry)
    with pytest.raises(ModelNotFoundError, match=r"ollama pull qwen2\.5:3b"):
        await backend.chat(request())
    assert len(server.bodies("/api/chat")) == 1


async def test_server_error_then_success_is_retried(server: FakeServer, fast_retry: RetryPolicy) -> None:
    server.add(
        "/api/chat",
        Answer(500, {"error": "llama runner process has terminated"}),
        Answer(503, {"error": "model is loading"}),
        Answer(body=chat_body("fine")),
    )
    backend = OllamaBackend(server.url, retry=fast_retry)
    reply = await backend.chat(request())
    assert reply.text == "fine"
    assert len(server.bodies("/api/chat")) == 3


async def test_persistent_server_error_gives_up_after_bounded_retries(
    server: FakeServer, fast_retry: RetryPolicy
) -> None:
    server.always("/api/chat", Answer(500, {"error": "boom"}))
    backend = OllamaBackend(server.url, retry=fast_retry)
    with pytest.raises(ServerError, match="boom"):
        await backend.chat(request())
    assert len(server.bodies("/api/chat")) == fast_retry.attempts


async def test_bad_request_is_permanent(server: FakeServer, fast_retry: RetryPolicy) -> None:
    server.always("/api/chat", Answer(400, {"error": "invalid format schema"}))
    backend = OllamaBackend(server.url, retry=fast_retry)
    with pytest.raises(InvalidRequestError, match="invalid format schema"):
        await backend.chat(request())
    assert len(server.bodies("/api/chat")) == 1


async def test_connection_refused_is_clear_after_retries(fast_retry: RetryPolicy) -> None:
    host = f"http://127.0.0.1:{free_port()}"
    backend = OllamaBackend(host, retry=fast_retry)
    with pytest.raises(BackendUnavailableError, match="ollama serve") as info:
        await backend.chat(request())
    assert host in str(info.value)


async def test_malformed_json_body(server: FakeServer, fast_retry: RetryPolicy) -> None:
    server.always("/api/chat", Answer(body="<html>proxy error</html>", content_type="text/html"))
    backend = OllamaBackend(server.url, retry=fast_retry)
    with pytest.raises(ServerError, match="unreadable"):
        await backend.chat(request())


async def test_reply_that_breaks_the_schema_keeps_the_raw_text(server: FakeServer, fast_retry: RetryPolicy) -> None:
    server.add("/api/chat", Answer(body=chat_body('{"category": 3}')))
    backend = OllamaBackend(server.url, retry=fast_retry)
    with pytest.raises(SchemaValidationError) as info:
        await backend.chat(request(output_schema=Ticket))
    assert info.value.raw_text == '{"category": 3}'
    assert "order_id" in str(info.value)


async def test_timeout_is_transient(fast_retry: RetryPolicy) -> None:
    def slow(_: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out")

    backend = OllamaBackend("http://ollama.test", retry=fast_retry, transport=httpx.MockTransport(slow))
    with pytest.raises(BackendUnavailableError, match="timed out"):
        await backend.chat(request())


async def test_list_and_pull_with_progress(server: FakeServer) -> None:
    server.add(
        "/api/tags",
        Answer(
            body={
                "models": [
                    {
                        "name": "qwen2.5:3b",
                        "model": "qwen2.5:3b",
                        "modified_at": "2026-11-01T10:00:00Z",
                        "size": 1929912432,
                        "digest": "sha256:abc",
                        "details": {"format": "gguf", "family": "qwen2", "parameter_size": "3.1B"},
                    }
                ]
            }
        ),
    )
    server.add(
        "/api/pull",
        Answer(
            stream=[
                {"status": "pulling manifest"},
                {"status": "pulling abc", "digest": "sha256:abc", "total": 100, "completed": 40},
                {"status": "pulling abc", "digest": "sha256:abc", "total": 100, "completed": 100},
                {"status": "verifying sha256 digest"},
                {"status": "success"},
            ]
        ),
    )
    backend = OllamaBackend(server.url)
    health = await backend.health()
    assert health.reachable and health.models[0].name == "qwen2.5:3b"
    assert health.models[0].size_bytes == 1929912432
    steps = [step async for step in backend.pull("qwen2.5:3b")]
    assert [s.completed for s in steps if s.digest] == [40, 100]
    assert steps[-1].status == "success"


async def test_pull_error_mid_stream(server: FakeServer) -> None:
    server.add(
        "/api/pull",
        Answer(stream=[{"status": "pulling manifest"}, {"error": "pull model manifest: file does not exist"}]),
    )
    backend = OllamaBackend(server.url, retry=RetryPolicy(attempts=1))
    with pytest.raises(ModelNotFoundError, match="ollama pull nosuch"):
        _ = [step async for step in backend.pull("nosuch")]


def _live_host() -> str | None:
    host = os.environ.get("OLLAMA_HOST")
    if not host:
        return None
    from shoal.configfile import normalise_host

    url = normalise_host(host)
    try:
        httpx.get(url + "/api/version", timeout=2)
    except httpx.HTTPError:
        return None
    return url


async def test_embed_batches_through_api_embed(server: FakeServer, fast_retry: RetryPolicy) -> None:
    # the /api/embed response as docs.ollama.com/api/embed documents it
    server.add("/api/embed", Answer(500, {"error": "model is loading"}))
    server.add(
        "/api/embed",
        Answer(
            body={
                "model": "all-minilm",
                "embeddings": [[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]],
                "total_duration": 14143917,
                "load_duration": 1019500,
                "prompt_eval_count": 8,
            }
        ),
    )
    backend = OllamaBackend(server.url, retry=fast_retry)
    result = await backend.embed("all-minilm", ["why is the sky blue?", "why is the grass green?"])
    assert result.vectors == [[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]] and result.dim == 3 and result.input_tokens == 8
    sent = server.bodies("/api/embed")[-1]
    assert sent["model"] == "all-minilm" and sent["input"] == ["why is the sky blue?", "why is the grass green?"]
    assert sent["truncate"] is True and len(server.bodies("/api/embed")) == 2  # the 500 was retried


async def test_embed_errors(server: FakeServer, fast_retry: RetryPolicy) -> None:
    backend = OllamaBackend(server.url, retry=fast_retry)
    server.add("/api/embed", Answer(404, {"error": 'model "nomic-embed-text" not found, try pulling it first'}))
    with pytest.raises(ModelNotFoundError, match="ollama pull nomic-embed-text"):
        await backend.embed("nomic-embed-text", ["a"])
    server.add("/api/embed", Answer(body={"model": "m", "embeddings": [[0.1, 0.2]]}))
    with pytest.raises(PermanentModelError, match="1 embeddings for 2 texts"):
        await backend.embed("m", ["a", "b"])
    server.add("/api/embed", Answer(400, {"error": "this model does not support embeddings"}))
    with pytest.raises(InvalidRequestError, match="does not support embeddings"):
        await backend.embed("qwen2.5:3b", ["a"])


@pytest.mark.live
async def test_live_ollama() -> None:
    host = _live_host()
    if host is None:
        pytest.skip("no Ollama server answers at OLLAMA_HOST")
    backend = OllamaBackend(host)
    models = await backend.list_models()
    if not models:
        pytest.skip(f"Ollama at {host} has no models pulled")
    reply = await backend.chat(
        ChatRequest(
            model=models[0].name,
            messages=[Message(role="user", content="Ticket: order 42 arrived broken. Fill the JSON.")],
            output_schema=Ticket,
            max_tokens=64,
        )
    )
    assert isinstance(reply.parsed, Ticket)
    embedded = await backend.embed(models[0].name, ["order 42 arrived broken", "where is my parcel"])
    assert len(embedded.vectors) == 2 and embedded.dim > 0
    await backend.aclose()
