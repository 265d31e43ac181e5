"""Privacy at the frontier boundary: what the detectors take, and a frontier on loopback that
records every request it gets and never sees a planted email, phone or card number."""

from __future__ import annotations

import asyncio
import json
import random
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, Field

from shoal.agents.escalation import Escalation, Ladder, LadderConfig, Rung
from shoal.backends import build_router
from shoal.config import Settings, SpecialistSettings
from shoal.engine import Shoal
from shoal.errors import ConfigError
from shoal.models.router import ModelRouter
from shoal.models.scripted import ScriptedBackend
from shoal.privacy import PrivacySettings, Redactor, iban_ok, luhn_ok
from shoal.specialists import TextInput
from shoal.specialists.extractor import Extractor
from shoal.store import MIGRATIONS, Store

FRONTIER = "openai:gpt-4o-mini"
PLACEHOLDER = re.compile(r"\[(EMAIL|PHONE|CARD|IBAN)_\d+\]")


# --- detectors ----------------------------------------------------------------------------


def test_luhn_and_iban_checks() -> None:
    assert luhn_ok("4111111111111111") and luhn_ok("4012888888881881") and luhn_ok("378282246310005")
    assert not luhn_ok("4111111111111112") and not luhn_ok("1234567890123456")
    assert iban_ok("DE89370400440532013000") and iban_ok("GB82WEST12345698765432")
    assert not iban_ok("DE89370400440532013001") and not iban_ok("GB82WEST1234569876543")


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [
        ("write to anna.smith+orders@example.co.uk, thanks", "email", "anna.smith+orders@example.co.uk"),
        ("Mail: BOB@Example.ORG.", "email", "BOB@Example.ORG"),
        ("call +44 20 7946 0958 today", "phone", "+44 20 7946 0958"),
        ("call +4915112345678", "phone", "+4915112345678"),
        ("call (555) 123-4567", "phone", "(555) 123-4567"),
        ("call 555-123-4567 or not", "phone", "555-123-4567"),
        ("ring 555.123.4567", "phone", "555.123.4567"),
        ("tél 01 23 45 67 89", "phone", "01 23 45 67 89"),
        ("Tel 030 12345678", "phone", "030 12345678"),
        ("card 4111 1111 1111 1111 expired", "card", "4111 1111 1111 1111"),
        ("card 4012-8888-8888-1881", "card", "4012-8888-8888-1881"),
        ("card 4012888888881881", "card", "4012888888881881"),
        ("amex 3782 822463 10005", "card", "3782 822463 10005"),
        ("IBAN DE89 3704 0044 0532 0130 00 THANKS", "iban", "DE89 3704 0044 0532 0130 00"),
        ("iban GB82WEST12345698765432.", "iban", "GB82WEST12345698765432"),
    ],
)
def test_each_kind_is_found(text: str, kind: str, value: str) -> None:
    redacted, originals, counts = Redactor().redact(text)
    assert counts == {kind: 1}
    assert originals == {f"[{kind.upper()}_1]": value}
    assert value not in redacted and f"[{kind.upper()}_1]" in redacted


@pytest.mark.parametrize(
    "text",
    [
        "my order 70012345 arrived broken",  # a bare 8-digit order id is not a phone
        "order #70012345, invoice INV-2024-0042",
        "tracking 1Z999AA10123456784, ref 123456789012",
        "card 4111 1111 1111 1112 (a typo: fails Luhn)",
        "not a card 1234 5678 9012 3456",
        "how can I cancel purchase 113542617735902?",  # passes Luhn, but no card network starts with 1
        "iban DE89370400440532013001 (fails mod 97)",
        "on 2024-01-15 at 12:30 we paid 1 000 000 and 1234.56 EUR",
        "version 10.0.19045 and a@b.c",
    ],
)
def test_what_is_not_personal_is_left_alone(text: str) -> None:
    assert Redactor().redact(text) == (text, {}, {})


def test_configured_patterns_and_chosen_kinds() -> None:
    redactor = Redactor(["email"], {"customer_id": r"CUST-\d{6}"})
    text, originals, counts = redactor.redact("CUST-123456 at a@example.com, +44 20 7946 0958")
    assert text == "[CUSTOMER_ID_1] at [EMAIL_1], +44 20 7946 0958"  # phones were not asked for
    assert counts == {"customer_id": 1, "email": 1}
    assert originals["[CUSTOMER_ID_1]"] == "CUST-123456"


def test_same_value_same_placeholder_and_restore_walks_json() -> None:
    redaction = Redactor().session()
    texts = redaction.redact_all(["from a@example.com", "cc b@example.com and a@example.com", "already [EMAIL_1]"])
    # a literal "[EMAIL_1]" in the text is never given out as a placeholder
    assert texts[0] == "from [EMAIL_2]" and texts[1] == "cc [EMAIL_3] and [EMAIL_2]"
    assert redaction.counts == {"email": 2}
    answer = {"to": ["[EMAIL_2]", "[email_3]"], "note": "reply to [EMAIL_2]", "n": 3, "x": None, "t": ("[EMAIL_3]",)}
    assert redaction.restore(answer) == {
        "to": ["a@example.com", "b@example.com"],
        "note": "reply to a@example.com",
        "n": 3,
        "x": None,
        "t": ("b@example.com",),
    }
    assert redaction.restore("already [EMAIL_1]") == "already [EMAIL_1]"  # not one it gave out


def test_privacy_settings_from_toml(tmp_path: Path) -> None:
    path = tmp_path / "shoal.toml"
    path.write_text('[privacy]\nkinds = ["email", "card"]\npatterns = { customer_id = "CUST-\\\\d{6}" }\n')
    settings = Settings.load(path)
    assert settings.privacy.kinds == ["email", "card"]
    assert settings.privacy.patterns == {"customer_id": r"CUST-\d{6}"}
    assert Settings.load(env={}).privacy.enabled  # on by default
    assert Redactor.from_settings(PrivacySettings(enabled=False)) is None
    for bad in ('patterns = { customer_id = "(" }', 'patterns = { Bad = "x" }', 'patterns = { any = "x*" }'):
        path.write_text(f"[privacy]\n{bad}\n")
        with pytest.raises(ConfigError, match="pattern"):
            Settings.load(path)
    path.write_text('[privacy]\nkinds = ["passport"]\n')
    with pytest.raises(ConfigError):
        Settings.load(path)


# --- a frontier on loopback that records what it receives ---------------------------------


class EchoFrontier:
    """An OpenAI-compatible server that records each request body and answers with the
    placeholders (and order ids) it finds in the prompt, as a frontier copying them would."""

    def __init__(self) -> None:
        self.bodies: list[str] = []
        self.url = ""
        self._lock = threading.Lock()

    def answer(self, body: dict[str, Any]) -> dict[str, Any]:
        prompt = body["messages"][-1]["content"]
        found = {kind.lower(): m.group() for m in PLACEHOLDER.finditer(prompt) for kind in [m.group(1)]}
        order = re.search(r"\b7\d{7}\b", prompt)
        schema = body["response_format"]["json_schema"]["schema"]["properties"]
        if "emails" in schema:  # the engine's general-purpose extractor
            data: dict[str, Any] = {"emails": [found["email"]] if "email" in found else [], "ids": []}
        else:
            data = {
                "email": found.get("email"),
                "phone": found.get("phone"),
                "card": found.get("card"),
                "order_id": order.group() if order else None,
            }
        content = json.dumps(data)
        return {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1,
            "model": "gpt-4o-mini",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120},
        }


@pytest.fixture
def frontier() -> Iterator[EchoFrontier]:
    state = EchoFrontier()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
            with state._lock:
                state.bodies.append(raw)
            payload = json.dumps(state.answer(json.loads(raw))).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def router_with(frontier: EchoFrontier, small: ScriptedBackend, monkeypatch: pytest.MonkeyPatch) -> ModelRouter:
    """The scripted small model under the HTTP frontier (a key set, as a real one needs)."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    settings = Settings.load(env={"SHOAL_FRONTIER_BASE_URL": frontier.url + "/v1"})
    settings.retry.initial_s = 0.01
    real = build_router(settings)
    return ModelRouter(lambda name: small if name == "scripted" else real.backend(name))


class Contact(BaseModel):
    email: str | None = Field(default=None, description="the customer's email address")
    phone: str | None = Field(default=None, description="the customer's phone number")
    card: str | None = Field(default=None, description="a payment card number")
    order_id: str | None = Field(default=None, description="the order id")


def card_number(rng: random.Random) -> str:
    """A Luhn-valid 16-digit card number (test range), in one of the ways people write them."""
    body = "4" + "".join(str(rng.randrange(10)) for _ in range(14))
    check = next(d for d in "0123456789" if luhn_ok(body + d))
    digits = body + check
    groups = [digits[i : i + 4] for i in range(0, 16, 4)]
    return rng.choice([" ".join(groups), "-".join(groups), digits])


def phone_number(rng: random.Random) -> str:
    a, b, c = rng.randrange(200, 999), rng.randrange(200, 999), rng.randrange(1000, 9999)
    return rng.choice(
        [
            f"+1 {a} {b} {c}",
            f"({a}) {b}-{c}",
            f"{a}-{b}-{c}",
            f"+44 20 {rng.randrange(7000, 7999)} {c}",
            f"+49151{rng.randrange(10_000_000, 99_999_999)}",
        ]
    )


def tickets(n: int) -> list[dict[str, str]]:
    rng = random.Random(17)
    out = []
    for i in range(n):
        planted = {
            "email": f"customer.{i}.{rng.randrange(10**6)}@mail{i % 7}.example.com",
            "phone": phone_number(rng),
            "card": card_number(rng),
            "order_id": str(70_000_000 + rng.randrange(10**6)),
        }
        text = rng.choice(
            [
                "Hi, order {order_id} never came. I paid with card {card}. Reach me at {email} or {phone}.",
                "Refund please for {order_id}! Card: {card}; phone {phone}; email {email}",
                "From {email}: charged twice on {card} for order {order_id}. Call {phone} asap.",
            ]
        ).format(**planted)
        out.append({"text": text, **planted})
    return out


def compact(value: str) -> str:
    return re.sub(r"[^\d+@.\w]", "", value)


async def test_planted_values_never_reach_the_frontier_and_come_back(
    frontier: EchoFrontier, monkeypatch: pytest.MonkeyPatch
) -> None:
    items = tickets(50)
    # the small model finds nothing and is not sure of it (0.7, below 0.9): every ticket climbs
    small = ScriptedBackend(lambda _: json.dumps({"email": None, "phone": None, "card": None, "order_id": None}))
    spec = Extractor(router_with(frontier, small, monkeypatch), "scripted:small", Contact, threshold=0.9)
    records: list[Escalation] = []

    async def keep(item: Escalation) -> None:
        records.append(item)

    ladder = Ladder(LadderConfig(threshold=0.9, frontier=FRONTIER, human=True), on_escalation=keep)
    outcomes = await asyncio.gather(*(ladder.run(spec, TextInput(text=t["text"])) for t in items))

    assert len(frontier.bodies) == 50
    sent = "\n".join(frontier.bodies)
    for item in items:
        for kind in ("email", "phone", "card"):
            assert item[kind] not in sent and compact(item[kind]) not in sent, (kind, item[kind])
        assert item["order_id"] in sent  # an order id is not personal data: the frontier needs it
    for item, outcome in zip(items, outcomes, strict=True):
        assert outcome.status == "escalated" and outcome.answered_by == "frontier", outcome.result.explain()
        assert outcome.output is not None
        assert outcome.output.model_dump() == {k: item[k] for k in ("email", "phone", "card", "order_id")}
        # the judge read the restored answer against the original text: every value is grounded
        grounded = next(s for s in outcome.result.evidence if s.name == "grounded")
        assert grounded.value == 1.0, grounded
        (record,) = outcome.escalations
        assert record.rung == Rung.FRONTIER and record.redacted == {"email": 1, "phone": 1, "card": 1}
        # the calls kept with the result hold the prompt as sent: placeholders, no values
        (call,) = outcome.result.calls
        assert item["email"] not in call.request.record_json()
    assert len(records) == 50 and all("@" not in json.dumps(r.redacted) for r in records)


async def test_privacy_off_sends_the_text_as_it_is(frontier: EchoFrontier, monkeypatch: pytest.MonkeyPatch) -> None:
    (item,) = tickets(1)
    small = ScriptedBackend(lambda _: json.dumps({"email": None}))
    spec = Extractor(router_with(frontier, small, monkeypatch), "scripted:small", Contact, threshold=0.9)
    config = LadderConfig(threshold=0.9, frontier=FRONTIER, privacy=PrivacySettings(enabled=False))
    outcome = await Ladder(config).run(spec, TextInput(text=item["text"]))
    assert item["email"] in frontier.bodies[0]
    assert outcome.escalations[0].redacted is None


async def test_an_engine_run_stores_the_kinds_and_no_value(
    frontier: EchoFrontier, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    email = "anna.k@example.com"
    text = f"Ticket from Anna ({email}, +44 20 7946 0958): my order 70012345 arrived broken."
    small = ScriptedBackend(lambda _: json.dumps({"emails": [], "ids": []}))
    settings = Settings.load(env={"SHOAL_DB": str(tmp_path / "shoal.db")})
    settings.default_model = "scripted:small"
    settings.specialists = {"extractor": SpecialistSettings(threshold=0.9)}
    shoal = Shoal(settings, router=router_with(frontier, small, monkeypatch))
    plan = {"steps": [{"id": "ids", "specialist": "extractor", "instruction": "emails", "inputs": ["task"]}]}
    report = await shoal.run(text, plan=plan)
    await shoal.aclose()
    assert report.status == "done", report
    assert report.answer is not None and report.answer["steps"]["ids"]["emails"] == [email]
    assert email not in "".join(frontier.bodies)

    store = Store(tmp_path / "shoal.db")
    (row,) = store.escalations(report.run_id)
    assert row.rung == Rung.FRONTIER and row.redacted == {"email": 1, "phone": 1}
    calls = store.model_calls(report.run_id)
    sent = [c for c in calls if c.model == FRONTIER]
    assert sent and all(email not in c.request_json and "7946" not in c.request_json for c in sent)
    # what `shoal show` and the TUI say of the rung: the kinds withheld, never the values
    from shoal.engine.views import run_detail

    (line,) = run_detail(store, report.run_id).escalations
    assert line.explained.endswith("withheld from the frontier: 1 email, 1 phone")


@pytest.mark.parametrize("stored", ['{"email": 1, "phone": 1}', {"email": 1, "phone": 1}])
def test_the_withheld_kinds_read_from_either_engine(stored: object) -> None:
    # sqlite3 gives the JSON column's text, psycopg the parsed object: `shoal show` takes both
    from shoal.engine.views import EscalationLine

    row = {
        "step_id": "ids", "rung": "frontier", "outcome": "accepted", "confidence_before": 0.2,
        "confidence_after": 0.9, "model": FRONTIER, "cost_usd": 0.0, "reason": "low", "redacted": stored,
    }  # fmt: skip
    line = EscalationLine.read(row)
    assert line.explained == "low; withheld from the frontier: 1 email, 1 phone"
    assert json.loads(line.redacted or "") == {"email": 1, "phone": 1}


def test_a_version_4_database_gets_the_redacted_column(tmp_path: Path) -> None:
    from sqlalchemy import create_engine, text

    path = tmp_path / "old.db"
    old = create_engine(f"sqlite:///{path}")
    with old.begin() as connection:
        connection.exec_driver_sql(
            "CREATE TABLE shoal_migration (version INTEGER PRIMARY KEY, name VARCHAR NOT NULL, "
            "applied_at DATETIME NOT NULL)"
        )
        for version, name, apply in MIGRATIONS[:4]:
            apply(connection)
            connection.execute(
                text("INSERT INTO shoal_migration VALUES (:v, :n, '2026-11-01 00:00:00')"), {"v": version, "n": name}
            )
        connection.exec_driver_sql(
            "INSERT INTO escalation (run_id, specialist, rung, reason, confidence_before, cost_usd, outcome, at) "
            "VALUES ('r1', 'extractor', 'frontier', 'low', 0.2, 0.0, 'accepted', '2026-11-01 00:00:00')"
        )
    old.dispose()
    store = Store(path)
    assert store.schema_version() == max(v for v, _, _ in MIGRATIONS)
    (row,) = store.escalations("r1")
    assert row.redacted is None and row.specialist == "extractor"
