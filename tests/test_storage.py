"""A database that does not outgrow its disk (#16): model replies stored once and bounded, without
every token's top-k alternatives, every decision still explained by `shoal show`; and `shoal prune`
deleting old runs, through the real command."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from waiting import KIND, TICKET, _engine, one_line_error, shoal_cli, waiting_classifier, waiting_ticket

from shoal.config import Settings
from shoal.engine.views import exchange, run_detail
from shoal.models.base import ChatRequest, Message, ModelRef, Reply, TokenLogprob, TopLogprob, Usage, parse_reply
from shoal.models.router import STORED_TEXT_CHARS, CallRecord
from shoal.status import RunStatus

MB = 1_000_000


def db() -> sqlite3.Connection:
    return sqlite3.connect(Settings.load().db_path)


def runs_of() -> dict[str, str]:
    with db() as connection:
        return {r[0]: r[1] for r in connection.execute("SELECT id, result_json FROM run")}


def calls_of(run_id: str) -> list[dict[str, Any]]:
    with db() as connection:
        connection.row_factory = sqlite3.Row
        rows = connection.execute("SELECT * FROM modelcall WHERE run_id = ?", [run_id]).fetchall()
        return [dict(row) for row in rows]


def age_run(run_id: str, days: float) -> None:
    """Make a run look last touched `days` ago."""
    then = (datetime.now(UTC) - timedelta(days=days)).replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")
    with db() as connection:
        connection.execute("UPDATE run SET updated_at = ?, created_at = ? WHERE id = ?", [then, then, run_id])


def count(table: str, run_id: str) -> int:
    key = "id" if table == "run" else "run_id"
    with db() as connection:
        return int(connection.execute(f"SELECT COUNT(*) FROM {table} WHERE {key} = ?", [run_id]).fetchone()[0])


async def done_run() -> str:
    async with _engine({"classifier": 0.0}, lambda _: '{"label": "ORDER"}') as engine:
        report = await engine.run(TICKET, plan=KIND)
    assert report.status == "done", report
    return report.run_id


# --- what a call keeps -------------------------------------------------------------------------


def junk_call(raw: bool) -> CallRecord:
    request = ChatRequest(model="x", messages=[Message(role="user", content="t")], logprobs=True, top_logprobs=20)
    junk = "ju\u00f1k " * (MB // 5)
    tokens = [
        TokenLogprob(token="junk", logprob=-0.5, top=[TopLogprob(token=f"t{k}", logprob=-k) for k in range(20)])
        for _ in range(5_000)
    ]
    reply = Reply(text=junk, logprobs=tokens, usage=Usage(output_tokens=5_000), model="x", backend="scripted")
    return CallRecord(ref=ModelRef.parse("scripted:x"), request=request, reply=reply, raw_text=junk if raw else None)


def test_a_one_megabyte_reply_is_stored_once_and_cut_with_a_marker() -> None:
    call = junk_call(raw=True)
    assert call.stored_raw_text() is None  # the reply holds the same text: not kept twice
    stored = call.stored_reply()
    assert stored is not None and len(stored.encode()) < 30_000
    data = json.loads(stored)
    assert data["text"].startswith("ju\u00f1k ju\u00f1k") and len(data["text"]) < STORED_TEXT_CHARS + 100
    assert data["text"].endswith(f"[shoal: {MB - STORED_TEXT_CHARS:,} more characters not stored]")
    assert data["logprobs"][0] == ["junk", -0.5] and data["logprobs_not_stored"] == 5_000 - len(data["logprobs"])
    assert "top" not in stored and data["usage"]["output_tokens"] == 5_000
    # what failed without a reply keeps its raw text, cut the same way
    bare = CallRecord(ref=ModelRef.parse("scripted:x"), request=call.request, raw_text="x" * MB)
    raw = bare.stored_raw_text()
    assert bare.stored_reply() is None and raw is not None and len(raw) < STORED_TEXT_CHARS + 100
    assert raw.endswith("more characters not stored]")


def test_the_parsed_answer_is_kept_within_the_bound() -> None:
    request = ChatRequest(model="x", messages=[Message(role="user", content="t")], output_schema=Message)

    def stored(content: str) -> dict[str, Any]:
        text = json.dumps({"role": "user", "content": content})
        reply = parse_reply(Reply(text=text, model="x", backend="scripted"), request)
        kept = CallRecord(ref=ModelRef.parse("scripted:x"), request=request, reply=reply).stored_reply()
        assert kept is not None and len(kept) < 2 * STORED_TEXT_CHARS + 1_000
        data: dict[str, Any] = json.loads(kept)
        return data

    assert stored("hi")["parsed"] == {"role": "user", "content": "hi"}  # what `shoal show --calls` prints
    huge = stored("x" * MB)
    assert "parsed" not in huge and huge["parsed_not_stored"].endswith("characters")


async def test_a_junk_reply_through_a_run_is_stored_bounded_and_shown(tmp_path: Path) -> None:
    junk = "{" + "nonsense " * (MB // 9)  # a megabyte that is not the JSON asked for
    report = await waiting_classifier(junk)
    (call,) = calls_of(report.run_id)
    assert call["raw_text"] is None and call["error_type"] == "SchemaValidationError"
    stored = len(call["reply_json"].encode()) + len((call["raw_text"] or "").encode())
    assert stored < STORED_TEXT_CHARS + 2_000
    assert "more characters not stored]" in json.loads(call["reply_json"])["text"]
    (line,) = run_detail(Settings.load().db_path, report.run_id).calls
    assert exchange(line).reply is not None and exchange(line).reply.startswith("{nonsense")  # type: ignore[union-attr]
    shown = shoal_cli("show", report.run_id, "--calls", cwd=tmp_path)
    assert shown.returncode == 0 and "more characters not stored" in shown.stdout, shown.stderr


async def test_show_still_explains_a_decision(tmp_path: Path) -> None:
    top = [TopLogprob(token="ORDER", logprob=-0.2), TopLogprob(token="REFUND", logprob=-1.8)]
    tokens = [
        TokenLogprob(token='{"label": "', logprob=-0.01),
        TokenLogprob(token="ORDER", logprob=-0.2, top=top),
        TokenLogprob(token='"}', logprob=-0.01),
    ]

    def answer(request: ChatRequest) -> Reply:
        return parse_reply(Reply(text='{"label": "ORDER"}', logprobs=tokens, model="x", backend="scripted"), request)

    async with _engine({"classifier": 0.0}, answer) as engine:
        report = await engine.run(TICKET, plan=KIND)
    (call,) = calls_of(report.run_id)
    reply = json.loads(call["reply_json"])
    assert reply["logprobs"] == [['{"label": "', -0.01], ["ORDER", -0.2], ['"}', -0.01]]  # no alternatives
    # the text was exactly the parsed answer: kept once, and shown as it was
    assert "text" not in reply and reply["text_is_parsed"] and reply["parsed"] == {"label": "ORDER"}
    # the run's row keeps its final answers; every step's output is in the step rows, and the
    # report has both as before
    stored = json.loads(runs_of()[report.run_id])
    assert set(stored) == {"answer"} and report.answer == {"answer": stored["answer"], "steps": stored["answer"]}
    detail = run_detail(Settings.load().db_path, report.run_id)
    (step,) = detail.steps
    assert step.confidence is not None and 0.5 < step.confidence < 1.0
    assert [e.name for e in step.evidence] == ["label_probability", "margin", "label_mass"]
    shown = shoal_cli("show", report.run_id, "--calls", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert f"{step.confidence:.2f}" in shown.stdout  # the confidence, and the signals behind it
    assert all(f"{e.name}={e.value:.2f}" in shown.stdout for e in step.evidence), shown.stdout
    assert '"ORDER"' in shown.stdout and "REFUND" in shown.stdout  # the distribution kept with the answer


def test_old_rows_with_top_alternatives_still_read(tmp_path: Path) -> None:
    from shoal.engine.views import CallLine

    old = {
        "text": '{"label": "A"}',
        "logprobs": [{"token": "A", "logprob": -0.1, "top": [{"token": "A", "logprob": -0.1}]}],
    }
    line = CallLine(id=1, step_id="s", model="m", request_json="{}", reply_json=json.dumps(old), raw_text="same")
    assert exchange(line).reply == '{"label": "A"}'


# --- shoal prune -------------------------------------------------------------------------------


async def test_prune_by_age_deletes_old_runs_with_everything_they_recorded(tmp_path: Path) -> None:
    old, new = await done_run(), await done_run()
    age_run(old, 40)
    dry = shoal_cli("prune", "--older-than", "30d", "--dry-run", cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert "would delete 1 runs" in dry.stdout and "1 model calls" in dry.stdout
    assert count("run", old) == 1 and count("modelcall", old) == 1  # a dry run deletes nothing
    pruned = shoal_cli("prune", "--older-than", "30d", cwd=tmp_path)
    assert pruned.returncode == 0, pruned.stderr
    assert "deleted 1 runs" in pruned.stdout and "freed" in pruned.stdout
    for table in ("run", "step", "modelcall"):
        assert count(table, old) == 0, table
        assert count(table, new) == 1, table
    again = shoal_cli("prune", "--older-than", "12h", cwd=tmp_path)
    assert again.returncode == 0 and "deleted 0 runs" in again.stdout


async def test_prune_by_status_and_retention_setting(tmp_path: Path) -> None:
    done, failed = await done_run(), await done_run()
    with db() as connection:
        connection.execute("UPDATE run SET status = 'failed' WHERE id = ?", [failed])
    age_run(done, 3)
    age_run(failed, 3)
    by_status = shoal_cli("prune", "--status", "failed", "--older-than", "0d", cwd=tmp_path)
    assert by_status.returncode == 0 and "deleted 1 runs (failed;" in by_status.stdout, by_status.stdout
    assert count("run", failed) == 0 and count("run", done) == 1
    kept = shoal_cli("prune", cwd=tmp_path)  # default retention: 30 days
    assert kept.returncode == 0 and "deleted 0 runs" in kept.stdout and count("run", done) == 1
    (tmp_path / "shoal.toml").write_text("[store]\nretention_days = 2\n")
    gone = shoal_cli("prune", "--no-vacuum", cwd=tmp_path)
    assert gone.returncode == 0 and "older than 2 days" in gone.stdout and "sqlite3" in gone.stdout, gone.stdout
    assert count("run", done) == 0


@pytest.mark.parametrize("status", ["bogus", "done,nope"])
def test_prune_refuses_a_status_that_is_not_a_run_status(tmp_path: Path, status: str) -> None:
    out = shoal_cli("prune", "--status", status, cwd=tmp_path)
    assert out.returncode == 2 and "is not a run status" in one_line_error(out) and "waiting" in out.stderr


def test_prune_refuses_an_age_it_cannot_read(tmp_path: Path) -> None:
    out = shoal_cli("prune", "--older-than", "30 parsecs", cwd=tmp_path)
    assert out.returncode == 2 and "--older-than" in one_line_error(out)


async def test_waiting_runs_are_kept_unless_named(tmp_path: Path) -> None:
    outcome, reviews = await waiting_ticket()
    run_id = outcome.run_id
    assert run_id is not None
    age_run(run_id, 400)
    with db() as connection:
        connection.execute("UPDATE run SET status = ? WHERE id = ?", [RunStatus.WAITING.value, run_id])
    kept = shoal_cli("prune", "--older-than", "1d", cwd=tmp_path)
    assert kept.returncode == 0 and "deleted 0 runs" in kept.stdout
    assert count("run", run_id) == 1 and count("review", run_id) == len(reviews)
    named = shoal_cli("prune", "--older-than", "1d", "--status", "waiting", cwd=tmp_path)
    assert named.returncode == 0 and "deleted 1 runs" in named.stdout, named.stdout
    assert "1 tickets were marked failed" in named.stdout
    for table in ("run", "step", "modelcall", "review", "escalation"):
        assert count(table, run_id) == 0, table
    with db() as connection:
        threads = connection.execute("SELECT COUNT(*) FROM checkpoints WHERE thread_id = ?", [run_id]).fetchone()[0]
        ticket = connection.execute("SELECT status, run_id, result_json FROM ticket WHERE key = 'T1'").fetchone()
    assert threads == 0
    assert ticket[0] == "failed" and ticket[1] is None and ticket[2]  # the row and its fields stay


def test_long_prompt_texts_are_kept_once_and_read_back_whole(tmp_path: Path) -> None:
    from shoal.store import Store
    from shoal.store.prompts import KEY, pack, unpack

    system = "Classify the customer's message. " * 20
    schema = {"properties": {"label": {"enum": [f"L{i}" for i in range(40)]}}, "type": "object"}
    request = json.dumps(
        {
            "model": "m",
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": "short"}],
            "output_schema": schema,
        }
    )
    packed, parts = pack(request)
    assert len(parts) == 2 and len(packed) < len(request) / 3 and '"short"' in packed and KEY in packed
    assert json.loads(unpack(packed, parts)) == json.loads(request)
    assert pack("not json") == ("not json", {}) and pack('{"model": "m"}') == ('{"model": "m"}', {})

    store = Store(tmp_path / "shoal.db")
    try:
        store.create_run("r1", "task")
        for n in range(3):  # three calls, one copy of each long text
            call = {"run_id": "r1", "step_id": f"s{n}", "model": "m", "request_json": request}
            store.insert_step({"run_id": "r1", "step_id": f"s{n}", "specialist": "c"}, [call])
        with store.engine.connect() as connection:
            kept = connection.exec_driver_sql("SELECT COUNT(*) FROM prompt").scalar()
            raw = [r[0] for r in connection.exec_driver_sql("SELECT request_json FROM modelcall")]
        assert kept == 2 and all(len(r) < len(request) / 3 for r in raw)
        assert all(json.loads(c.request_json) == json.loads(request) for c in store.model_calls("r1"))
        (first, *_) = run_detail(store, "r1").calls
        assert json.loads(first.request_json) == json.loads(request)
    finally:
        store.close()
