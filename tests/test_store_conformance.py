"""One conformance suite for the store on both engines: every test here runs on a SQLite file and
on the throwaway PostgreSQL server the tests start (`tests/pg.py`), through the same `Store` API
the engine, the faces and the workers use."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta

import pytest

from shoal.errors import StoreError
from shoal.status import (
    AnsweredBy,
    EscalationOutcome,
    ReviewStatus,
    Rung,
    RunStatus,
    StepStatus,
    TicketStatus,
)
from shoal.store import Store
from shoal.store.tables import EscalationRow, Head, Review, Step


def call(run_id: str, step_id: str, tokens: int = 3) -> dict[str, object]:
    return {
        "run_id": run_id,
        "step_id": step_id,
        "model": "scripted:m",
        "request_json": "{}",
        "reply_json": "{}",
        "tokens_in": tokens,
        "tokens_out": 1,
        "cost_usd": 0.001,
    }


def test_runs_are_found_by_prefix_literally_and_finish_with_their_totals(store: Store) -> None:
    store.create_run("abc_1", "task one")
    store.create_run("abcd", "task two")
    store.create_run("x%y", "task three")
    assert store.find_run("abc_").id == "abc_1"  # `_` is a character, not a LIKE wildcard
    assert store.find_run("x%").id == "x%y"
    with pytest.raises(StoreError, match="matches several runs"):
        store.find_run("abc")
    with pytest.raises(StoreError, match="no run 'zz'"):
        store.find_run("zz")
    store.insert_step({"run_id": "abcd", "step_id": "s1", "specialist": "classifier"}, [call("abcd", "s1")])
    store.insert_step({"run_id": "abcd", "step_id": "s2", "specialist": "classifier"}, [call("abcd", "s2", 5)])
    assert store.finish_run("abcd", RunStatus.DONE, 1.5, result_json='{"answer": 1}') == "task"
    run = store.get_run("abcd")
    assert run is not None and run.status == RunStatus.DONE and run.owner_pid is None
    assert (run.model_calls, run.tokens_in, run.tokens_out, run.seconds) == (2, 8, 2, 1.5)
    assert run.cost_usd == pytest.approx(0.002) and json.loads(run.result_json or "") == {"answer": 1}
    assert store.totals("abcd")["model_calls"] == 2
    assert [r.id for r in store.list_runs(status=RunStatus.DONE)] == ["abcd"]
    store.update_run("abc_1", status=RunStatus.STOPPED, error="Ctrl-C")
    assert store.get_run("abc_1").status == RunStatus.STOPPED  # type: ignore[union-attr]
    with pytest.raises(StoreError, match="not a RunStatus"):
        store.list_runs(status="bogus")
    with pytest.raises(StoreError, match="no run"):
        store.finish_run("nothing", RunStatus.DONE, 0.0)


def test_a_step_with_escalations_and_a_review_then_its_answer(store: Store) -> None:
    store.create_run("r1", "task")
    escalation = EscalationRow(
        run_id="r1",
        step_id="kind",
        specialist="classifier",
        rung=Rung.HUMAN,
        reason="below threshold",
        confidence_before=0.2,
        outcome=EscalationOutcome.PENDING,
        redacted={"email": 1},
    )
    review = Review(run_id="r1", step_id="kind", specialist="classifier", question_json='{"best": 1}')
    step = Step(run_id="r1", step_id="kind", specialist="classifier", status=StepStatus.WAITING, confidence=0.2)
    examples = [{"specialist": "classifier", "text": "refund me", "label": "REFUND", "source": "frontier"}]
    store.record_step(step, [call("r1", "kind")], [escalation], review, examples=examples)
    assert review.id is not None and escalation.id is not None and step.id is not None
    (pending,) = store.reviews()
    assert pending.status == ReviewStatus.PENDING and pending.question_json == '{"best": 1}'

    # the person answers: the same step row is updated, the escalation row too
    store.answer_review(review.id, {"label": "REFUND"}, "ana")
    with pytest.raises(StoreError, match="already answered by ana"):
        store.answer_review(review.id, {"label": "ORDER"}, "bo")
    escalation.outcome = EscalationOutcome.ACCEPTED
    escalation.confidence_after = 1.0
    done = Step(run_id="r1", step_id="kind", specialist="classifier", answered_by=AnsweredBy.HUMAN, confidence=1.0)
    store.record_step(done, [], [escalation])
    (row,) = store.steps("r1")
    assert row.id == step.id and row.status == StepStatus.DONE and row.answered_by == AnsweredBy.HUMAN
    (kept,) = store.escalations("r1")
    assert kept.outcome == EscalationOutcome.ACCEPTED and kept.redacted == {"email": 1}
    # what `shoal show` reads, through the views' own connection to this engine (psycopg parses JSON)
    from shoal.engine.views import run_detail

    (line,) = run_detail(store, "r1").escalations
    assert line.explained == "below threshold; withheld from the frontier: 1 email"
    assert store.get_review(review.id).answer_json == '{"label": "REFUND"}'
    assert [e.label for e in store.examples("classifier")] == ["REFUND"]
    assert store.finished_step("r1", "kind") is not None and store.finished_step("r1", "nope") is None


def test_two_people_answering_at_once_one_wins(store: Store) -> None:
    store.create_run("r1", "task")
    review = Review(run_id="r1", step_id="kind", specialist="classifier")
    store.record_step(Step(run_id="r1", step_id="kind", specialist="classifier"), [], [], review)
    results: list[str] = []

    def answer(who: str) -> None:
        try:
            store.answer_review(review.id or 0, {"label": who}, who)
            results.append("ok")
        except StoreError:
            results.append("refused")

    threads = [threading.Thread(target=answer, args=(w,)) for w in ("ana", "bo", "cy")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == ["ok", "refused", "refused"]


def test_tickets_keyed_within_their_source(store: Store) -> None:
    store.put_ticket("a.csv", "T-1", line=2, text_hash="h1", status=TicketStatus.PENDING, text="my order")
    store.put_ticket("b.csv", "T-1", line=5, text_hash="h2", status=TicketStatus.DONE)
    store.put_ticket("a.csv", "T-2", line=3, text_hash="h3", status=TicketStatus.WAITING, run_id="r9")
    store.put_ticket("a.csv", "T-1", status=TicketStatus.DONE, queue="billing")
    first = store.get_ticket("a.csv", "T-1")
    assert first is not None and first.queue == "billing" and first.text == "my order" and first.line == 2
    assert [t.key for t in store.tickets("a.csv")] == ["T-1", "T-2"]
    assert [t.key for t in store.tickets("a.csv", ["T-2"])] == ["T-2"]
    assert store.ticket_for_run("r9").key == "T-2"  # type: ignore[union-attr]
    assert store.get_ticket_by_id(first.id) is not None
    assert len(store.tickets()) == 3


def test_learning_records(store: Store) -> None:
    first = store.add_head(Head(specialist="intent", version=0, embed_model="m", blob=b"npz"), activate=True)
    second = store.add_head(Head(specialist="intent", version=0, embed_model="m", blob=b"npz2"), activate=False)
    assert (first.version, second.version) == (1, 2)
    assert store.active_head("intent").version == 1  # type: ignore[union-attr]
    store.activate_head("intent", 2)
    assert [(h.version, h.active) for h in store.heads("intent")] == [(1, False), (2, True)]
    with pytest.raises(StoreError, match="no head version 7"):
        store.activate_head("intent", 7)
    store.add_examples([{"specialist": "intent", "text": "t", "label": "A", "source": "human"}])
    store.add_examples([{"specialist": "intent", "text": "t", "label": "B", "source": "human"}])  # corrected
    store.add_examples([{"specialist": "intent", "text": "t", "label": "A", "source": "file"}])
    assert sorted((e.source, e.label) for e in store.examples("intent")) == [("file", "A"), ("human", "B")]
    first_id = min(e.id or 0 for e in store.examples("intent"))
    assert [e.source for e in store.examples_since("intent", first_id)] == ["file"]
    store.cache_vectors("m", {"k": b"\x01\x02"}, 1)
    store.cache_vectors("m", {"k": b"\x09", "j": b"\x03"}, 1)
    assert store.cached_vectors("m", ["k", "j", "none"]) == {"k": b"\x01\x02", "j": b"\x03"}


def test_spend_prune_and_size(store: Store) -> None:
    store.add_spend(0.5, run_id="old", model="gpt")
    assert store.frontier_spent_since(datetime.now(UTC) - timedelta(hours=1)) == pytest.approx(0.5)
    assert store.frontier_spent_since(datetime.now(UTC) + timedelta(hours=1)) == 0.0
    for run_id, status in (("old", RunStatus.DONE), ("wait", RunStatus.WAITING)):
        store.create_run(run_id, "task")
        store.insert_step({"run_id": run_id, "step_id": "s", "specialist": "c"}, [call(run_id, "s")])
        store.finish_run(run_id, status, 0.1)
    store.put_ticket("a.csv", "T-1", run_id="wait", status=TicketStatus.WAITING)
    future = datetime.now(UTC) + timedelta(days=1)
    dry = store.prune_runs(statuses=[RunStatus.DONE, RunStatus.WAITING], before=future, dry_run=True)
    assert (dry.runs, dry.steps, dry.calls, dry.tickets_failed) == (2, 2, 2, 1)
    assert len(store.list_runs()) == 2
    past = datetime.now(UTC) - timedelta(days=1)
    assert store.prune_runs(statuses=[RunStatus.DONE], before=past).runs == 0  # all too young
    pruned = store.prune_runs(statuses=[RunStatus.DONE, RunStatus.WAITING], before=future)
    assert pruned.runs == 2 and store.list_runs() == [] and store.model_calls("old") == []
    ticket = store.get_ticket("a.csv", "T-1")
    assert ticket is not None and ticket.status == TicketStatus.FAILED and ticket.run_id is None
    assert store.frontier_spent_since(datetime.now(UTC) - timedelta(hours=1)) == pytest.approx(0.5)  # spend kept
    assert store.size_bytes() > 0
