"""`shoal serve` end to end: a real uvicorn server on loopback driven with httpx, a real SQLite
file (and a throwaway PostgreSQL), a webhook receiver on loopback, the scripted model.

No test asserts a time: each waits (bounded) for the state it expects.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from typer.testing import CliRunner

from shoal import telemetry
from shoal.config import ServeSettings, Settings, SpecialistSettings
from shoal.engine import Shoal
from shoal.models.base import ChatRequest
from shoal.models.router import ModelRouter
from shoal.models.scripted import ScriptedBackend
from shoal.serve.app import create_app
from shoal.store import Store
from shoal.tickets.plan import FIELDS

SECRET = "test-secret"
NEEDS_A_PERSON = "invoice"  # a ticket with this word gets an unusable category: a person decides


def answer(request: ChatRequest) -> str:
    """The ticket specialists' answers, by the schema asked for."""
    schema = request.output_schema
    assert schema is not None
    labels = schema.model_json_schema().get("properties", {}).get("label", {}).get("enum", [])
    text = request.messages[-1].content.lower()
    if "PAYMENT" in labels and NEEDS_A_PERSON in text:
        return "{not json"
    return {
        "Label": json.dumps({"label": "PAYMENT" if "PAYMENT" in labels else (labels or ["?"])[0]}),
        "TicketEntities": '{"order_id": "12345"}',
        "Summary": '{"summary": "Customer wants order 12345 cancelled", "key_points": []}',
        "ReplyDraft": '{"reply": "Thanks for writing, we are looking at order 12345 now."}',
    }[schema.__name__]


def verify(secret: str, timestamp: str, body: bytes, signature: str) -> bool:
    """The README's verification snippet, as a receiver writes it."""
    expected = "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature) and abs(time.time() - int(timestamp)) < 300


@dataclass
class Receiver:
    """A webhook receiver on loopback that fails the first `failures` tries of each body."""

    failures: int = 0
    got: list[tuple[dict[str, str], bytes, int]] = field(default_factory=list)
    url: str = ""

    def accepted(self) -> list[tuple[dict[str, str], bytes]]:
        return [(headers, body) for headers, body, status in self.got if status == 200]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver(failures=3)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            tries = sum(1 for _, seen, _ in state.got if seen == body)
            status = 500 if tries < state.failures else 200
            state.got.append((dict(self.headers), body, status))
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


@dataclass
class Served:
    url: str
    shoal: Shoal
    backend: ScriptedBackend
    token: str

    @property
    def store(self) -> Store:
        return self.shoal.store

    def client(self, token: str | None = None) -> httpx.Client:
        chosen = self.token if token is None else token
        headers = {"Authorization": f"Bearer {chosen}"} if chosen else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


def engine(db: str, serve: ServeSettings) -> tuple[Shoal, ScriptedBackend]:
    settings = Settings.load(env={"SHOAL_DB": db})
    settings.frontier_model = None
    settings.specialists = {name: SpecialistSettings(threshold=0.0) for name in FIELDS}
    settings.serve = serve
    backend = ScriptedBackend(answer)
    return Shoal(settings, router=ModelRouter(lambda _: backend)), backend


@pytest.fixture
def serving(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Served]]:
    """Start a server on a database (a file path or a URL); stopped at the test's end."""
    monkeypatch.setenv("SHOAL_WEBHOOK_SECRET", SECRET)
    running: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(db: str, **serve: Any) -> Served:
        chosen = ServeSettings(retry_initial_s=0.05, retry_max_s=0.2, **serve)
        shoal, backend = engine(db, chosen)
        token = shoal.store.create_token(f"test-{len(running)}")
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(create_app(shoal), log_level="warning", lifespan="on"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        until(lambda: server.started, "the server started")
        running.append((server, thread))
        return Served(f"http://127.0.0.1:{port}", shoal, backend, token)

    yield start
    for server, thread in running:
        server.should_exit = True
        thread.join(timeout=30)


def until(check: Callable[[], Any], what: str, within_s: float = 60.0) -> Any:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.02)
    raise AssertionError(f"waited {within_s:g}s for: {what}")


def settled(client: httpx.Client, key: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        body: dict[str, Any] = client.get(f"/v1/tickets/{key}").json()
        return body if body["status"] in ("done", "waiting", "failed") else None

    found: dict[str, Any] = until(check, f"ticket {key} triaged")
    return found


def test_submit_repeat_result_and_a_signed_webhook_after_three_failures(
    serving: Callable[..., Served], receiver: Receiver, tmp_path: Path
) -> None:
    served = serving(str(tmp_path / "shoal.db"), webhooks=[receiver.url])
    with served.client() as client:
        first = client.post("/v1/tickets", json={"id": "T-1", "text": "please cancel order 12345"})
        assert first.status_code == 202, first.text
        assert first.json()["id"] == "T-1" and first.json()["created"] is True
        again = client.post("/v1/tickets", json={"id": "T-1", "text": "please cancel order 12345"})
        assert again.status_code == 200 and again.json()["created"] is False
        other = client.post("/v1/tickets", json={"id": "T-1", "text": "something else"})
        assert other.status_code == 409 and other.json()["error"] == "conflict"

        result = settled(client, "T-1")
        assert result["status"] == "done" and result["queue"] == "billing", result
        assert result["fields"]["entities"]["output"]["order_id"] == "12345"
        calls = len(served.backend.requests)
        assert client.post("/v1/tickets", json={"id": "T-1", "text": "please cancel order 12345"}).status_code == 200
        assert settled(client, "T-1") == result and len(served.backend.requests) == calls, "a repeat runs nothing"

        run = client.get(f"/v1/runs/{result['run_id']}").json()
        assert run["run"]["status"] == "done" and {s["step_id"] for s in run["steps"]} >= {"category", "entities"}

        two = [{"id": "T-1", "text": "please cancel order 12345"}, {"id": "T-2", "text": "cancel order 12345 now"}]
        batch = client.post("/v1/tickets", json={"tickets": two})
        assert batch.status_code == 202 and [t["created"] for t in batch.json()["tickets"]] == [False, True]
        assert settled(client, "T-2")["status"] == "done"

    ticket_id = served.store.get_ticket("api", "T-1").id  # type: ignore[union-attr]
    rows = until(
        lambda: [r for r in served.store.deliveries(ticket_id=ticket_id) if r.status == "delivered"], "delivery"
    )
    (row,) = served.store.deliveries(ticket_id=ticket_id)
    assert row.status == "delivered" and row.attempts == 4 and row.response_status == 200 and rows == [row]
    mine = [(h, b) for h, b, _ in receiver.got if json.loads(b)["ticket"]["id"] == "T-1"]
    assert len(mine) == 4, "three failures, then the one delivery"
    (headers, body), *_ = [(h, b) for h, b in receiver.accepted() if json.loads(b)["ticket"]["id"] == "T-1"]
    assert verify(SECRET, headers["X-Shoal-Timestamp"], body, headers["X-Shoal-Signature"])
    assert not verify("another secret", headers["X-Shoal-Timestamp"], body, headers["X-Shoal-Signature"])
    event = json.loads(body)
    assert event["event"] == "ticket.done" and event["ticket"]["queue"] == "billing"


def test_a_review_answered_over_http_resumes_the_run(
    serving: Callable[..., Served], receiver: Receiver, tmp_path: Path
) -> None:
    receiver.failures = 0
    served = serving(str(tmp_path / "shoal.db"), webhooks=[receiver.url])
    with served.client() as client:
        assert client.post("/v1/tickets", json={"id": "INV-1", "text": "my invoice 5521 is wrong"}).status_code == 202
        waiting = settled(client, "INV-1")
        assert waiting["status"] == "waiting" and waiting["fields"]["category"]["status"] == "waiting"
        (review,) = client.get("/v1/reviews").json()["reviews"]
        assert review["ticket"] == "INV-1" and review["specialist"] == "category"

        wrong = client.post(f"/v1/reviews/{review['id']}", json={"answer": "NOT_A_CATEGORY"})
        assert wrong.status_code == 422 and wrong.json()["fields"][0]["field"] == "body.answer", wrong.text
        assert client.post("/v1/reviews/999999", json={"accept": True}).status_code == 404

        # the answer is recorded at once; the run goes on on the queue's next free worker
        report = client.post(f"/v1/reviews/{review['id']}", json={"answer": "INVOICE", "who": "agent-7"})
        assert report.status_code == 200 and report.json()["run_id"] == waiting["run_id"], report.text
        done = until(
            lambda: (body := client.get("/v1/tickets/INV-1").json())["status"] == "done" and body, "the run resumed"
        )
        assert done["fields"]["category"]["answered_by"] == "human"
        assert client.post(f"/v1/reviews/{review['id']}", json={"answer": "INVOICE"}).status_code == 409

    until(lambda: len(receiver.accepted()) == 2, "both webhooks")
    assert sorted(json.loads(b)["event"] for _, b in receiver.accepted()) == ["ticket.done", "ticket.waiting"]


def test_auth_limits_and_error_bodies(serving: Callable[..., Served], tmp_path: Path) -> None:
    served = serving(str(tmp_path / "shoal.db"), rate_per_minute=30)
    ticket = {"id": "A-1", "text": "where is my order"}
    with served.client(token="") as anonymous:
        missing = anonymous.post("/v1/tickets", json=ticket)
        assert missing.status_code == 401 and missing.json()["error"] == "unauthorized"
        assert missing.headers["www-authenticate"].startswith("Bearer")
        assert anonymous.get("/healthz").json() == {"status": "ok", "database": "ok"}
    with served.client(token="shoal_not-a-real-token") as stranger:
        assert stranger.get("/v1/reviews").status_code == 401

    revoked = served.store.create_token("leaver")
    with served.client(token=revoked) as leaver:
        assert leaver.get("/v1/reviews").status_code == 200
        served.store.revoke_token("leaver")
        refused = leaver.get("/v1/reviews")
        assert refused.status_code == 403 and "revoked" in refused.json()["message"]

    with served.client() as client:
        huge = b'{"id": "big", "text": "' + b"x" * 20_000_000 + b'"}'
        too_large = client.post("/v1/tickets", content=huge, headers={"Content-Type": "application/json"})
        assert too_large.status_code == 413 and too_large.json()["error"] == "too_large"

        def streamed() -> Iterator[bytes]:  # no Content-Length: refused once the bytes pass the limit
            yield b'{"id": "big", "text": "'
            for _ in range(40):
                yield b"x" * 500_000
            yield b'"}'

        chunked = client.post("/v1/tickets", content=streamed(), headers={"Content-Type": "application/json"})
        assert chunked.status_code == 413

        no_text = client.post("/v1/tickets", json={"id": "A-2"})
        assert no_text.status_code == 422 and no_text.json()["fields"] == [
            {"field": "body.text", "message": "Field required"}
        ]
        bad_item = client.post("/v1/tickets", json={"tickets": [ticket, {"id": "A-3", "text": ""}]})
        assert bad_item.status_code == 422
        assert [f["field"] for f in bad_item.json()["fields"]] == ["body.tickets.1.text"]
        twice = client.post("/v1/tickets", json={"tickets": [ticket, ticket]})
        assert twice.status_code == 422 and twice.json()["fields"][0]["field"] == "body.tickets.1.id"
        assert client.post("/v1/tickets", content=b"{not json").status_code == 422
        assert client.get("/v1/tickets/nobody").json()["error"] == "not_found"
        assert client.get("/v1/runs/nothing").status_code == 404
        assert "Traceback" not in client.get("/v1/tickets/nobody").text

        statuses = [client.get("/v1/reviews").status_code for _ in range(40)]
        assert 429 in statuses and statuses[0] == 200
        limited = client.get("/v1/reviews")
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1


def test_metrics_and_spans(serving: Callable[..., Served], tmp_path: Path) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from prometheus_client.parser import text_string_to_metric_families

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry.use(provider)
    try:
        served = serving(str(tmp_path / "shoal.db"))
        with served.client() as client:
            client.post("/v1/tickets", json={"id": "M-1", "text": "please cancel order 12345"})
            assert settled(client, "M-1")["status"] == "done"
            with served.client(token="") as scraper:
                scraped = scraper.get("/metrics")
        assert scraped.status_code == 200 and scraped.headers["content-type"].startswith("text/plain")
        spans = exporter.get_finished_spans()
    finally:
        telemetry.use(None)

    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(scraped.text)
        for s in family.samples
    }
    calls = len(served.backend.requests)
    stored = len(served.store.model_calls(served.store.get_ticket("api", "M-1").run_id or ""))  # type: ignore[union-attr]
    assert samples[("shoal_tickets", (("status", "done"),))] == 1
    model = (("backend", "embedded"), ("model", "smollm2-135m"))  # the ref the scripted backend stands in for
    # every stored call (the reply's knowledge lookup too), chats or not
    assert samples[("shoal_model_call_latency_seconds_count", model)] == stored >= calls
    assert samples[("shoal_model_call_latency_seconds_bucket", tuple(sorted((*model, ("le", "+Inf")))))] == stored
    assert samples[("shoal_model_tokens_total", tuple(sorted((*model, ("direction", "output")))))] > 0
    assert ("shoal_webhook_deliveries", (("status", "delivered"),)) not in samples, "no webhooks configured"

    chats = [s for s in spans if s.name.startswith("chat ")]
    assert len(chats) == calls
    chat = chats[0]
    assert chat.attributes is not None
    assert chat.attributes["gen_ai.operation.name"] == "chat"
    assert chat.attributes["gen_ai.request.model"] == "smollm2-135m" and chat.attributes["gen_ai.system"] == "embedded"
    assert int(chat.attributes["gen_ai.usage.input_tokens"]) > 0  # type: ignore[arg-type]
    (run,) = [s for s in spans if s.name == "invoke_agent shoal.tickets"]
    steps = [s for s in spans if s.attributes and "shoal.step.id" in s.attributes]
    assert {s.attributes["shoal.step.id"] for s in steps if s.attributes} >= {"category", "entities"}
    assert all(s.context.trace_id == run.context.trace_id for s in [*steps, *chats])
    step_ids = {s.context.span_id for s in steps}
    assert all(c.parent is not None and c.parent.span_id in step_ids for c in chats), "each call inside its step"


def test_tickets_and_deliveries_left_by_a_stopped_server_are_finished(
    serving: Callable[..., Served], receiver: Receiver, tmp_path: Path
) -> None:
    db = str(tmp_path / "shoal.db")
    receiver.failures = 0
    store = Store(db)  # what a server killed mid-work left: a submitted ticket and a pending delivery
    store.submit_tickets("api", [("R-1", "please cancel order 12345", "x")])
    store.add_deliveries([{"ticket_id": "t0", "event": "ticket.done", "url": receiver.url, "body": '{"left": 1}'}])
    store.close()
    served = serving(db, webhooks=[receiver.url])
    with served.client() as client:
        assert settled(client, "R-1")["status"] == "done"
    until(lambda: len(receiver.accepted()) == 2, "the old delivery and the new one")
    assert b'{"left": 1}' in [b for _, b in receiver.accepted()]


def test_serve_on_postgres(serving: Callable[..., Served], receiver: Receiver, pg_url: str) -> None:
    receiver.failures = 1
    served = serving(pg_url, webhooks=[receiver.url])
    with served.client() as client:
        tickets = [{"id": f"P-{i}", "text": f"please cancel order 1234{i}"} for i in range(3)]
        assert client.post("/v1/tickets", json={"tickets": tickets}).status_code == 202
        assert client.post("/v1/tickets", json={"tickets": tickets}).status_code == 200
        assert {settled(client, t["id"])["status"] for t in tickets} == {"done"}
    until(lambda: len(receiver.accepted()) == 3, "three deliveries")
    # the receiver answers before the outbox records the delivery: wait for the rows too
    until(lambda: [r.status for r in served.store.deliveries()] == ["delivered"] * 3, "three rows delivered")
    rows = served.store.deliveries()
    assert sum(r.attempts for r in rows) == 6


def test_tokens_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from shoal.cli import app

    monkeypatch.setenv("SHOAL_DB", str(tmp_path / "cli.db"))
    runner = CliRunner()
    made = runner.invoke(app, ["tokens", "create", "helpdesk"])
    assert made.exit_code == 0, made.output
    token = made.stdout.strip().splitlines()[0]
    assert token.startswith("shoal_")
    store = Store(tmp_path / "cli.db")
    found = store.find_token(token)
    assert found is not None and found.name == "helpdesk" and token not in found.token_hash
    listed = runner.invoke(app, ["tokens", "list"])
    assert "helpdesk" in listed.stdout and token not in listed.stdout
    assert runner.invoke(app, ["tokens", "revoke", "helpdesk"]).exit_code == 0
    assert store.find_token(token).revoked_at is not None  # type: ignore[union-attr]
    assert runner.invoke(app, ["tokens", "revoke", "helpdesk"]).exit_code == 1
    store.close()
