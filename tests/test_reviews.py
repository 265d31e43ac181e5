"""A person answering the review queue: what they type becomes the specialist's answer, or a
one-line error that says what it should be, and nothing is stored until it fits.

The reading rules are checked on the engine (fast, many cases); what a person does is checked
through the real `shoal review` command in another process.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from waiting import TICKET, one_line_error, shoal_cli, waiting_classifier, waiting_ticket

from shoal.config import Settings, SpecialistSettings
from shoal.engine import Shoal
from shoal.engine.reviews import read_answer
from shoal.errors import AnswerError, PlanError, StoreError, TaskError
from shoal.models.router import ModelRouter
from shoal.models.scripted import ScriptedBackend
from shoal.status import ReviewStatus, RunStatus, StepStatus, TicketStatus
from shoal.store import Store

# --- reading what a person typed ---------------------------------------------------------------

READ = [
    ("classifier", "refund", {"label": "REFUND", "labels": ["REFUND"]}),
    ("classifier", "  Refund ", {"label": "REFUND", "labels": ["REFUND"]}),
    ("classifier", '"refund"', {"label": "REFUND", "labels": ["REFUND"]}),
    ("classifier", '{"label": "refund"}', {"label": "REFUND", "labels": ["REFUND"]}),
    ("category", "invoice", {"label": "INVOICE", "labels": ["INVOICE"]}),
    ("entities", '{"order_id": "70012345"}', {"order_id": "70012345", "email": None}),
    ("entities", "{}", {"order_id": None}),
    ("summary", "Order arrived broken; refund wanted", {"summary": "Order arrived broken; refund wanted"}),
    ("summarizer", '{"summary": "Broken order", "key_points": ["refund"]}', {"key_points": ["refund"]}),
    ("reply", "Sorry about that, we are on it.", {"reply": "Sorry about that, we are on it."}),
    ("reply", "42", {"reply": "42"}),
]

REFUSED = [
    ("classifier", "refnd", ["'refnd' is not a label of classifier", "its labels:", "REFUND", "ACCOUNT"]),
    ("classifier", '{"label": "nope"}', ["'nope' is not a label of classifier", "REFUND"]),
    ("entities", '{"order": "70012345"}', ["entities has no field 'order'", "its fields:", "order_id", "email"]),
    ("extractor", '{"order_ids": ["1"]}', ["extractor has no field 'order_ids'", "ids", "emails"]),
    ("extractor", "order 70012345", ["extractor takes a JSON object with the fields names, ids", "not plain text"]),
    ("summary", '{"summary": 3}', ["does not fit summary (summary: Input should be a valid string)", "plain text"]),
    ("summary", '{"key_points": []}', ["summary: Field required", "its summary"]),
    ("reply", "x" * 2100, ["reply: String should have at most 2000 characters"]),
    ("classifier", "{label: REFUND}", ["not valid JSON", "one of its labels"]),
    ("classifier", "   ", ["the answer is empty", "REFUND"]),
    (
        "planner",
        "just do it",
        ["the planner's answer is a plan in JSON", '{"steps": ['],
    ),
    ("planner", '{"steps": "all of them"}', ["the answer is not a plan (steps: Input should be a valid list)"]),
]


@pytest.fixture
def engine(tmp_path: Path) -> Shoal:
    return Shoal(Settings.load(env={"SHOAL_DB": str(tmp_path / "shoal.db")}))


def specialist(engine: Shoal, name: str) -> Any:
    every = {**engine.specialists, **engine.ticket_specialists(), "planner": engine.planner}
    return every[name]


@pytest.mark.parametrize(("name", "typed", "expected"), READ)
def test_what_a_person_types_becomes_the_answer(engine: Shoal, name: str, typed: str, expected: dict[str, Any]) -> None:
    answer = read_answer(engine.wiring, name, specialist(engine, name), typed)
    assert answer.items() >= expected.items()


@pytest.mark.parametrize(("name", "typed", "words"), REFUSED)
def test_an_answer_that_does_not_fit_says_what_would(engine: Shoal, name: str, typed: str, words: list[str]) -> None:
    with pytest.raises(AnswerError) as caught:
        read_answer(engine.wiring, name, specialist(engine, name), typed)
    message = str(caught.value)
    assert "\n" not in message and "pydantic" not in message and "type=" not in message, message
    for word in words:
        assert word in message, message
    assert isinstance(caught.value, TaskError) and caught.value.exit_code == 2


def test_a_plan_that_cannot_run_is_a_plan_error(engine: Shoal) -> None:
    poet = '{"steps": [{"id": "a", "specialist": "poet", "inputs": ["task"]}]}'
    with pytest.raises(PlanError, match="unknown specialist 'poet'"):
        read_answer(engine.wiring, "planner", specialist(engine, "planner"), poet)
    good = '{"steps": [{"id": "a", "specialist": "classifier", "inputs": ["task"]}]}'
    assert read_answer(engine.wiring, "planner", specialist(engine, "planner"), good)["steps"][0]["id"] == "a"


async def test_the_engine_answers_and_accepts(tmp_path: Path) -> None:
    report = await waiting_classifier()
    (item,) = report.reviews
    async with Shoal(Settings.load()) as engine:
        assert engine.best_answer(item.id) == {"label": "ORDER", "labels": ["ORDER"], "distribution": {}, "margin": 0.0}
        with pytest.raises(AnswerError, match="one of the two"):
            await engine.answer_review(item.id, "refund", accept=True, who="t")
        with pytest.raises(AnswerError, match="one of the two"):
            await engine.answer_review(item.id, who="t")
        done = await engine.answer_review(item.id, accept=True, who="t")
        assert done.status == RunStatus.DONE and done.answer is not None
        assert done.answer["answer"]["kind"]["label"] == "ORDER"
        with pytest.raises(StoreError, match="already answered by t"):
            await engine.answer_review(item.id, "refund", who="u")


# --- the `shoal review` command -----------------------------------------------------------------


async def test_review_id_shows_the_item(tmp_path: Path) -> None:
    (outcome, reviews) = await waiting_ticket()
    listed = shoal_cli("review", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "entities" in listed.stdout and "summary" in listed.stdout and "shoal review ID" in listed.stdout
    shown = shoal_cli("review", str(reviews["entities"]), cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    flat = " ".join(shown.stdout.split())
    assert f"review {reviews['entities']} pending entities, step entities of run {outcome.run_id}" in flat
    assert TICKET in flat  # the input text
    assert 'best answer: {"order_id": "99999"' in flat
    assert "grounded = 0.00" in flat and 'not in the text: order_id="99999"' in flat  # the evidence
    assert "below threshold 1.00" in flat  # why it is here
    assert "it takes a JSON object with the fields order_id, invoice_id" in flat and "--accept" in flat
    missing = shoal_cli("review", "999", cwd=tmp_path)
    assert missing.returncode == 1 and "no review 999" in one_line_error(missing)


async def test_a_label_in_any_case(tmp_path: Path) -> None:
    report = await waiting_classifier()
    (item,) = report.reviews
    shown = shoal_cli("review", str(item.id), cwd=tmp_path)
    assert "one of its labels (any case): ACCOUNT" in " ".join(shown.stdout.split())
    done = shoal_cli("review", str(item.id), "--answer", "refund", "--who", "dana", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["kind"]["label"] == "REFUND"
    store = Store(tmp_path / "shoal.db")
    step = store.finished_step(report.run_id, "kind")
    assert (
        step is not None and step.status == StepStatus.DONE and json.loads(step.output_json or "")["label"] == "REFUND"
    )
    assert store.get_review(item.id).answered_by == "dana"
    assert [(e.text, e.label) for e in store.examples("classifier")] == [(TICKET, "REFUND")]  # what it teaches


async def test_an_unknown_label_lists_the_labels(tmp_path: Path) -> None:
    report = await waiting_classifier()
    (item,) = report.reviews
    out = shoal_cli("review", str(item.id), "--answer", "refnd", cwd=tmp_path)
    assert out.returncode == 2
    line = one_line_error(out)
    assert "'refnd' is not a label of classifier; its labels: ACCOUNT, CANCELLATION_FEE" in line and "REFUND" in line
    store = Store(tmp_path / "shoal.db")
    assert store.get_review(item.id).status == ReviewStatus.PENDING and "classifier" not in store.example_counts()


async def test_an_unknown_extractor_key_is_refused_and_nothing_is_stored(tmp_path: Path) -> None:
    outcome, reviews = await waiting_ticket()
    store = Store(tmp_path / "shoal.db")
    out = shoal_cli("review", str(reviews["entities"]), "--answer", '{"order": "70012345"}', cwd=tmp_path)
    assert out.returncode == 2
    line = one_line_error(out)
    assert "entities has no field 'order'; its fields: order_id, invoice_id, account_type" in line
    review = store.get_review(reviews["entities"])
    assert review.status == ReviewStatus.PENDING and review.answer_json is None
    step = store.finished_step(outcome.run_id or "", "entities")
    assert step is not None and step.status == StepStatus.WAITING and step.answered_by is None
    assert "entities" not in store.example_counts(), "no example row for an answer that was refused"
    # the key it meant is taken
    done = shoal_cli("review", str(reviews["entities"]), "--answer", '{"order_id": "70012345"}', cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    step = store.finished_step(outcome.run_id or "", "entities")
    assert step is not None and json.loads(step.output_json or "")["order_id"] == "70012345"


async def test_a_summary_answered_in_plain_text(tmp_path: Path) -> None:
    outcome, reviews = await waiting_ticket()
    # the reply is drafted once the entities are answered, in the command's process: trust it there
    (tmp_path / "shoal.toml").write_text("[specialists.reply]\nthreshold = 0.0\n")
    store = Store(tmp_path / "shoal.db")
    text = "Order 70012345 came broken; the customer wants a refund"
    done = shoal_cli("review", str(reviews["summary"]), "--answer", text, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    step = store.finished_step(outcome.run_id or "", "summary")
    assert step is not None and json.loads(step.output_json or "") == {"summary": text, "key_points": []}
    # the entities accepted as the models gave them: the ticket is done
    accepted = shoal_cli("review", str(reviews["entities"]), "--accept", cwd=tmp_path)
    assert accepted.returncode == 0, accepted.stderr
    ticket = store.tickets("tickets.csv")[0]
    assert ticket.status == TicketStatus.DONE
    fields = json.loads(ticket.result_json or "{}")
    assert fields["summary"]["output"]["summary"] == text and fields["entities"]["output"]["order_id"] == "99999"


async def test_accept_with_no_best_answer_is_refused(tmp_path: Path) -> None:
    report = await waiting_classifier("{not json")
    (item,) = report.reviews
    shown = shoal_cli("review", str(item.id), cwd=tmp_path)
    assert shown.returncode == 0 and "best answer: none" in shown.stdout and "--accept" not in shown.stdout
    out = shoal_cli("review", str(item.id), "--accept", cwd=tmp_path)
    assert out.returncode == 2
    line = one_line_error(out)
    assert f"review {item.id}: the models gave no usable answer to accept" in line and "REFUND" in line
    both = shoal_cli("review", str(item.id), "--accept", "--answer", "refund", cwd=tmp_path)
    assert both.returncode == 2 and "one of the two" in one_line_error(both)
    store = Store(tmp_path / "shoal.db")
    review = store.get_review(item.id)
    assert review.status == ReviewStatus.PENDING and review.answer_json is None
    assert "classifier" not in store.example_counts(), "a refused answer teaches nothing"


async def test_the_engine_refuses_an_unknown_key_from_code_too(tmp_path: Path) -> None:
    # the TUI and library callers reach Shoal.review with a dict: the same check as the CLI's
    settings = Settings.load(env={"SHOAL_DB": str(tmp_path / "shoal.db")})
    settings.specialists = {"classifier": SpecialistSettings(threshold=0.0)}
    backend = ScriptedBackend(["{not json", '{"label": "ORDER"}'])
    async with Shoal(settings, router=ModelRouter(lambda _: backend)) as shoal:
        plan = {"steps": [{"id": "kind", "specialist": "classifier", "inputs": ["task"]}]}
        report = await shoal.run("order 42 is late", plan=plan)
        (item,) = report.reviews
        with pytest.raises(AnswerError, match="no field 'lable'"):
            await shoal.review(item.id, {"lable": "ORDER"})
        assert (await shoal.review(item.id, "order")).status == "done"
