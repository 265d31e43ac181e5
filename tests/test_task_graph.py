"""Whole tasks through the real LangGraph graph, the real SQLite file and the real embedded
model: end to end, crash and resume, a person answering from another process, two processes
on one database, and bad input."""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from langgraph.runtime import Runtime
from langgraph.types import Command, Send

from shoal.agents.escalation import Budget, LadderConfig
from shoal.agents.planner import Plan, Planner
from shoal.config import Settings, SpecialistSettings
from shoal.engine import Shoal
from shoal.errors import PlanError, TaskError
from shoal.graphs import nodes
from shoal.graphs.state import RunState, StepOutcome, StepPayload
from shoal.graphs.task import TaskRuntime, record_call
from shoal.models.router import ModelRouter
from shoal.models.scripted import ScriptedBackend
from shoal.specialists.classifier import Classifier
from shoal.status import RunStatus
from shoal.store import Store

TICKET = "Ticket from Anna (anna@example.com): my order 70012345 arrived broken and I want a refund."
TWO = {
    "steps": [
        {
            "id": "kind",
            "specialist": "classifier",
            "instruction": "categorise the ticket",
            "inputs": ["task"],
        },
        {"id": "ids", "specialist": "extractor", "instruction": "order ids and emails", "inputs": ["task"]},
    ]
}
CHAIN = {
    "steps": [
        {"id": "s1", "specialist": "extractor", "instruction": "ids", "inputs": ["task"]},
        {"id": "s2", "specialist": "classifier", "instruction": "category", "inputs": ["task", "s1"]},
        {"id": "s3", "specialist": "extractor", "instruction": "emails", "inputs": ["task", "s2"]},
        {"id": "s4", "specialist": "classifier", "instruction": "category again", "inputs": ["task", "s3"]},
        {"id": "s5", "specialist": "extractor", "instruction": "amounts", "inputs": ["task", "s4"]},
    ]
}


def settings(db: Path, *, threshold: float = 0.0) -> Settings:
    """Every specialist accepted at `threshold` (0: never escalates), no frontier key."""
    s = Settings.load(env={"SHOAL_DB": str(db)})
    s.specialists = {n: SpecialistSettings(threshold=threshold) for n in ("classifier", "extractor", "summarizer")}
    return s


def shoal_cli(*args: str, db: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shoal.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "SHOAL_DB": str(db), "COLUMNS": "200"},
        timeout=timeout,
        cwd=db.parent,
    )


@pytest.mark.embedded
async def test_two_specialists_end_to_end(tmp_path: Path) -> None:
    db = tmp_path / "shoal.db"
    shoal = Shoal(settings(db))
    report = await shoal.run(TICKET, plan=TWO)
    await shoal.aclose()
    assert report.status == "done", report
    assert report.answer is not None and set(report.answer["answer"]) == {"kind", "ids"}
    assert report.answer["steps"]["kind"]["label"] in shoal.settings.classifier_labels
    assert report.model_calls == 2 and report.tokens_in > 0

    store = Store(db)
    steps = {s.step_id: s for s in store.steps(report.run_id)}
    assert set(steps) == {"kind", "ids"} and all(s.status == "done" for s in steps.values())
    assert all(s.confidence is not None and json.loads(s.evidence_json) for s in steps.values())
    calls = store.model_calls(report.run_id)
    assert sorted(c.step_id for c in calls if c.step_id) == ["ids", "kind"]
    assert all(json.loads(c.request_json)["messages"] and c.reply_json for c in calls)
    # a finished run's LangGraph snapshots are pruned; shoal's rows keep its history
    with store.engine.connect() as conn:
        left = conn.exec_driver_sql("SELECT count(*) FROM checkpoints WHERE thread_id = ?", (report.run_id,)).scalar()
    assert left == 0

    shown = shoal_cli("show", report.run_id[:6], db=db)
    assert shown.returncode == 0, shown.stderr
    for text in ("kind", "ids", "classifier", "extractor", "label_probability", "grounded", "model calls"):
        assert text in shown.stdout
    listed = shoal_cli("runs", "--status", "done", db=db)
    assert report.run_id in listed.stdout


@pytest.mark.embedded
def test_run_command_prints_result_and_summary(tmp_path: Path) -> None:
    db = tmp_path / "shoal.db"
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(TWO))
    done = shoal_cli("run", TICKET, "--plan", str(plan), "--json", db=db)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["status"] in ("done", "waiting")
    assert "model calls" in done.stderr and "escalations" in done.stderr


CRASHER = """
import asyncio, json, sys
from shoal.engine import Shoal
asyncio.run(Shoal.from_config().run(sys.argv[1], plan=json.loads(sys.argv[2])))
"""

NEVER_ESCALATE = """
[specialists.classifier]
threshold = 0.0
[specialists.extractor]
threshold = 0.0
"""


@pytest.mark.embedded
def test_sigkill_mid_run_then_resume_repeats_nothing(tmp_path: Path) -> None:
    db = tmp_path / "shoal.db"
    (tmp_path / "shoal.toml").write_text(NEVER_ESCALATE)  # read by both processes from their cwd
    env = {**os.environ, "SHOAL_DB": str(db)}
    proc = subprocess.Popen([sys.executable, "-c", CRASHER, TICKET, json.dumps(CHAIN)], env=env, cwd=tmp_path)
    store: Store | None = None
    deadline = time.monotonic() + 240
    done_before = 0
    while time.monotonic() < deadline:
        time.sleep(0.05)
        if store is None and db.exists():
            try:
                store = Store(db)
            except Exception:
                continue
        if store is not None:
            runs = store.list_runs()
            if runs:
                done_before = sum(s.status == "done" for s in store.steps(runs[0].id))
                if done_before >= 2:
                    break
        assert proc.poll() is None, "the run finished before it could be killed; the chain is too short"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert store is not None
    run = store.list_runs()[0]
    finished = {s.step_id for s in store.steps(run.id) if s.status == "done"}
    assert 2 <= len(finished) < 5
    calls_before = {c.step_id for c in store.model_calls(run.id)}
    assert finished <= calls_before

    resumed = shoal_cli("resume", run.id, db=db)
    assert resumed.returncode == 0, resumed.stderr
    assert store.get_run(run.id).status == "done"  # type: ignore[union-attr]
    steps = store.steps(run.id)
    assert sorted(s.step_id for s in steps) == ["s1", "s2", "s3", "s4", "s5"]
    per_step: dict[str, int] = {}
    for call in store.model_calls(run.id):
        per_step[call.step_id or ""] = per_step.get(call.step_id or "", 0) + 1
    # each step that had finished before the kill made its one call and no more; a step cut
    # off mid-call may have made one more, never a finished one
    for step_id in finished:
        assert per_step[step_id] == 1, per_step
    assert all(count <= 2 for count in per_step.values()), per_step


REVIEWER = """
import asyncio, sys
from shoal.config import Settings, SpecialistSettings
from shoal.engine import Shoal
s = Settings.load()
s.specialists = {"classifier": SpecialistSettings(threshold=1.0), "extractor": SpecialistSettings(threshold=0.0)}
report = asyncio.run(Shoal(s).run(sys.argv[1], plan={"steps": [
    {"id": "kind", "specialist": "classifier", "instruction": "category", "inputs": ["task"]},
    {"id": "ids", "specialist": "extractor", "instruction": "ids", "inputs": ["task", "kind"]}]}))
print(report.model_dump_json())
"""


@pytest.mark.embedded
def test_a_person_answers_from_another_process(tmp_path: Path) -> None:
    db = tmp_path / "shoal.db"
    # the answering process reads the same thresholds (./shoal.toml): with the defaults its
    # extractor, at a borderline 0.59 on this text, would queue the next step for a person too
    (tmp_path / "shoal.toml").write_text(
        "[specialists.classifier]\nthreshold = 1.0\n[specialists.extractor]\nthreshold = 0.0\n"
    )
    env = {**os.environ, "SHOAL_DB": str(db)}
    first = subprocess.run(
        [sys.executable, "-c", REVIEWER, TICKET], env=env, capture_output=True, text=True, timeout=300
    )
    assert first.returncode == 0, first.stderr
    waiting = json.loads(first.stdout)
    assert waiting["status"] == "waiting" and len(waiting["reviews"]) == 1
    review = waiting["reviews"][0]
    assert review["step_id"] == "kind" and "confidence" in review["question"]
    store = Store(db)
    assert not [s for s in store.steps(waiting["run_id"]) if s.step_id == "ids"], "ids waits for kind"

    listed = shoal_cli("review", db=db)
    assert str(review["id"]) in listed.stdout and "classifier" in listed.stdout
    answered = shoal_cli("review", str(review["id"]), "--answer", "REFUND", "--who", "tester", db=db)
    assert answered.returncode == 0, answered.stderr
    run = store.get_run(waiting["run_id"])
    assert run is not None and run.status == "done"
    # the run's row keeps its final answer; each step's output is in the step's row
    assert set(json.loads(run.result_json or "{}")) == {"answer"}
    kind = store.finished_step(run.id, "kind")
    assert kind is not None and kind.answered_by == "human" and kind.model == "human:tester"
    assert json.loads(kind.output_json or "{}")["label"] == "REFUND"
    assert store.reviews(status="pending") == []
    assert store.get_review(review["id"]).answered_by == "tester"
    human = [e for e in store.escalations(run.id) if e.rung == "human"]
    assert [e.outcome for e in human] == ["accepted"]
    # the downstream step ran after the answer, once, reading the human's label
    ids = store.finished_step(run.id, "ids")
    assert ids is not None and "REFUND" in json.loads(ids.input_json)["text"]
    assert sum(c.step_id == "kind" for c in store.model_calls(run.id)) == 1
    # answering twice is refused clearly
    again = shoal_cli("review", str(review["id"]), "--answer", "ORDER", db=db)
    assert again.returncode == 1 and "already answered" in again.stderr


TWIN = """
import asyncio, json, sys
from shoal.config import Settings, SpecialistSettings
from shoal.engine import Shoal
s = Settings.load()
s.specialists = {n: SpecialistSettings(threshold=0.0) for n in ("classifier", "extractor")}
async def main():
    shoal = Shoal(s)
    for i in range(3):
        r = await shoal.run(sys.argv[1] + f" (#{i})", plan=json.loads(sys.argv[2]))
        assert r.status == "done", r
    await shoal.aclose()
asyncio.run(main())
"""


@pytest.mark.embedded
def test_two_processes_share_one_database(tmp_path: Path) -> None:
    db = tmp_path / "shoal.db"
    env = {**os.environ, "SHOAL_DB": str(db)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", TWIN, TICKET, json.dumps(TWO)],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    errors = [p.communicate(timeout=600)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    assert not any("locked" in e for e in errors)
    store = Store(db)
    runs = store.list_runs()
    assert len(runs) == 6 and all(r.status == "done" for r in runs)
    assert all(len(store.model_calls(r.id)) == 2 for r in runs)


@pytest.mark.parametrize(
    ("task", "match"),
    [
        ("", "empty"),
        ("   \n", "empty"),
        ("x" * 10_000_000, "over the limit"),
        (b"\xff\xfe\x00binary", "not UTF-8"),
        ("text\x00with NUL", "NUL bytes"),
    ],
    ids=["empty", "blank", "10MB", "binary", "nul"],
)
async def test_bad_tasks_are_refused_before_anything_is_written(tmp_path: Path, task: Any, match: str) -> None:
    shoal = Shoal(settings(tmp_path / "shoal.db"))
    with pytest.raises(TaskError, match=match):
        await shoal.run(task, plan=TWO)
    assert shoal.store.list_runs() == []
    await shoal.aclose()


@pytest.mark.parametrize(
    ("plan", "match"),
    [
        (
            {"steps": [{"id": "a", "specialist": "translator", "inputs": ["task"]}]},
            "unknown specialist 'translator'",
        ),
        (
            {
                "steps": [
                    {"id": "a", "specialist": "classifier", "inputs": ["b"]},
                    {"id": "b", "specialist": "extractor", "inputs": ["a"]},
                ]
            },
            "cycle: a -> b -> a",
        ),
        ({"steps": [{"id": "a", "specialist": "classifier", "inputs": ["zz"]}]}, "reads 'zz'"),
        ({"steps": []}, "at least 1"),
    ],
    ids=["unknown", "cycle", "dangling", "empty"],
)
async def test_bad_explicit_plans(tmp_path: Path, plan: dict[str, Any], match: str) -> None:
    shoal = Shoal(settings(tmp_path / "shoal.db"))
    with pytest.raises((PlanError, ValueError), match=match):
        await shoal.run(TICKET, plan=plan)
    assert shoal.store.list_runs() == []
    await shoal.aclose()


def scripted_shoal(db: Path, *answers: str) -> tuple[Shoal, ScriptedBackend]:
    backend = ScriptedBackend(list(answers))
    s = settings(db)
    s.default_model = "scripted:plan"
    return Shoal(s, router=ModelRouter(lambda _: backend)), backend


async def test_a_planned_cycle_is_escalated_with_its_reason(tmp_path: Path) -> None:
    cycle = json.dumps(
        {
            "steps": [
                {"id": "a", "specialist": "classifier", "instruction": "x", "inputs": ["b"]},
                {"id": "b", "specialist": "extractor", "instruction": "y", "inputs": ["a"]},
            ]
        }
    )
    shoal, _ = scripted_shoal(tmp_path / "shoal.db", cycle)
    report = await shoal.run(TICKET)
    assert report.status == "waiting"
    (item,) = report.reviews
    assert item.step_id == "plan" and item.specialist == "planner"
    assert "cycle" in json.dumps(item.question["evidence"])
    escalations = shoal.store.escalations(report.run_id)
    assert [e.rung for e in escalations] == ["frontier", "human"]
    assert "no usable answer" in escalations[0].reason or "below threshold" in escalations[0].reason
    # a person gives a plan that runs; the scripted model answers the two steps
    good = {"steps": [{"id": "a", "specialist": "classifier", "instruction": "x", "inputs": ["task"]}]}
    shoal2, backend = scripted_shoal(tmp_path / "shoal.db", '{"label": "REFUND"}')
    done = await shoal2.review(item.id, good, who="planner-person")
    assert done.status == "done" and done.answer is not None
    assert done.answer["answer"]["a"]["label"] == "REFUND"
    assert len(backend.requests) == 1
    await shoal.aclose()
    await shoal2.aclose()


async def test_a_plan_naming_an_unknown_specialist_is_refused(tmp_path: Path) -> None:
    # the schema's enum keeps a small model to known names; a person's answer is checked too
    shoal, _ = scripted_shoal(tmp_path / "shoal.db", '{"steps": []}')
    report = await shoal.run(TICKET)
    assert report.status == "waiting" and report.reviews[0].specialist == "planner"
    with pytest.raises(PlanError, match="unknown specialist 'poet'"):
        await shoal.review(report.reviews[0].id, {"steps": [{"id": "a", "specialist": "poet", "inputs": ["task"]}]})
    assert [r.id for r in shoal.store.reviews()] == [report.reviews[0].id], "still waiting for a good answer"
    await shoal.aclose()


async def test_backend_down_fails_the_run_and_resume_retries(tmp_path: Path) -> None:
    from shoal.errors import BackendUnavailableError

    db = tmp_path / "shoal.db"
    shoal, _ = scripted_shoal(db, BackendUnavailableError("cannot reach Ollama"))  # type: ignore[arg-type]
    with pytest.raises(BackendUnavailableError):
        await shoal.run(TICKET, plan={"steps": [TWO["steps"][0]]})
    run = shoal.store.list_runs()[0]
    assert run.status == "failed" and "cannot reach Ollama" in (run.error or "")
    await shoal.aclose()
    again, _ = scripted_shoal(db, '{"label": "ORDER"}')
    report = await again.resume(run.id)
    assert report.status == "done"
    await again.aclose()


async def test_parallel_branches_joins_and_chains_run_each_step_once(tmp_path: Path) -> None:
    # a and b start together; a2 follows a alone (launched by a directly); j joins a2 and b;
    # lone runs beside everything and ends early
    plan = {
        "steps": [
            {"id": "a", "specialist": "classifier", "inputs": ["task"]},
            {"id": "b", "specialist": "classifier", "inputs": ["task"]},
            {"id": "lone", "specialist": "classifier", "inputs": ["task"]},
            {"id": "a2", "specialist": "classifier", "inputs": ["a"]},
            {"id": "a3", "specialist": "classifier", "inputs": ["a2"]},
            {"id": "j", "specialist": "classifier", "inputs": ["a3", "b"]},
            {"id": "end", "specialist": "classifier", "inputs": ["j"]},
        ]
    }
    backend = ScriptedBackend(lambda request: '{"label": "ORDER"}')
    s = settings(tmp_path / "shoal.db")
    s.max_plan_steps = 8
    shoal = Shoal(s, router=ModelRouter(lambda _: backend))
    report = await shoal.run(TICKET, plan=plan)
    await shoal.aclose()
    assert report.status == "done"
    assert report.answer is not None and set(report.answer["answer"]) == {"lone", "end"}
    assert set(report.answer["steps"]) == {"a", "b", "lone", "a2", "a3", "j", "end"}
    assert len(backend.requests) == 7, "every step ran exactly once"
    joined = json.loads(shoal.store.finished_step(report.run_id, "j").input_json)["text"]  # type: ignore[union-attr]
    assert "[a3, classifier]" in joined and "[b, classifier]" in joined
    # every step says when it started and finished, and a join starts after what it joins
    steps = {row.step_id: row for row in shoal.store.steps(report.run_id)}
    assert all(row.finished_at is not None and row.started_at <= row.finished_at for row in steps.values())
    assert steps["j"].started_at >= max(steps["a3"].finished_at, steps["b"].finished_at)  # type: ignore[type-var]


# --- nodes alone, with a context built by hand ------------------------------------------------


def task_runtime(db: Path, *answers: str) -> tuple[TaskRuntime, ScriptedBackend]:
    """The nodes' dependencies without an engine: a store, a scripted model, two specialists."""
    backend = ScriptedBackend(list(answers))
    router = ModelRouter(lambda _: backend)
    router.recorder = record_call  # calls land with the step that made them, as in the engine
    classifier = Classifier(router, "scripted:small", ["ORDER", "REFUND", "OTHER"], threshold=0.0)
    planner = Planner(router, "scripted:plan", {"classifier": "assigns a category label"}, threshold=0.0)
    ctx = TaskRuntime(
        store=Store(db),
        planner=planner,
        specialists={"classifier": classifier},
        ladder_config=lambda name, threshold: LadderConfig(threshold=threshold, human=False),
        budget=lambda run_id: Budget(),
    )
    return ctx, backend


CHAIN3 = {
    "steps": [
        {"id": "a", "specialist": "classifier", "instruction": "category", "inputs": ["task"]},
        {"id": "b", "specialist": "classifier", "instruction": "again", "inputs": ["a"]},
        {"id": "c", "specialist": "classifier", "instruction": "joined", "inputs": ["a", "b"]},
    ]
}


async def test_a_step_node_runs_alone_and_launches_its_successor(tmp_path: Path) -> None:
    ctx, backend = task_runtime(tmp_path / "shoal.db", '{"label": "REFUND"}')
    ctx.store.create_run("r1", TICKET)
    payload = StepPayload(run_id="r1", task=TICKET, plan=CHAIN3, step=CHAIN3["steps"][0], upstream={})
    command = await nodes.step(payload, Runtime(context=ctx))
    assert isinstance(command.update, dict)
    done = command.update["results"]["a"]
    assert done["output"]["label"] == "REFUND" and done["answered_by"] == "specialist"
    assert command.update["running"] == {"a": None, "b": True}
    # b reads only a: launched at once; c also reads b, so a wakes dispatch for it as well
    sends = [g for g in command.goto if isinstance(g, Send)]  # type: ignore[union-attr]
    assert [s.arg["step"]["id"] for s in sends] == ["b"] and sends[0].arg["upstream"] == {"a": done}
    assert "dispatch" in command.goto  # type: ignore[operator]
    row = ctx.store.finished_step("r1", "a")
    assert row is not None and row.status == "done" and json.loads(row.output_json or "{}")["label"] == "REFUND"
    assert [c.step_id for c in ctx.store.model_calls("r1")] == ["a"] and len(backend.requests) == 1
    # called again (a resumed run), it reuses the row instead of asking the model twice
    again = await nodes.step(payload, Runtime(context=ctx))
    assert isinstance(again.update, dict) and again.update["results"]["a"] == done
    assert len(backend.requests) == 1
    ctx.store.close()


async def test_the_plan_node_runs_alone_and_records_its_step_like_any_other(tmp_path: Path) -> None:
    ctx, _ = task_runtime(tmp_path / "shoal.db", json.dumps(CHAIN3))
    ctx.store.create_run("r2", TICKET)
    update = await nodes.plan(RunState(run_id="r2", task=TICKET, plan=None), Runtime(context=ctx))
    assert Plan.model_validate(update["plan"]) == Plan.model_validate(CHAIN3)
    run = ctx.store.get_run("r2")
    assert run is not None and json.loads(run.plan_json or "{}") == update["plan"]
    row = ctx.store.finished_step("r2", "plan")
    assert row is not None and row.specialist == "planner" and row.status == "done"
    assert row.answered_by == "specialist" and row.confidence is not None
    assert [c.step_id for c in ctx.store.model_calls("r2")] == ["plan"]
    ctx.store.close()


async def test_dispatch_and_compose_run_alone_on_the_state() -> None:
    state = RunState(run_id="r3", task=TICKET, plan=CHAIN3, results={}, waiting={}, running={})
    first = await nodes.dispatch(state)
    assert [s.arg["step"]["id"] for s in first.goto] == ["a"]  # type: ignore[union-attr]
    assert first.update == {"running": {"a": True}}
    outcome = StepOutcome(
        step_id="a", specialist="classifier", status="done", output={"label": "ORDER"}, text="", confidence=1.0,
        answered_by="specialist",
    )  # fmt: skip
    results = {sid: {**outcome, "step_id": sid} for sid in ("a", "b", "c")}
    assert (await nodes.dispatch(RunState(**{**state, "results": results}))).goto == "compose"  # type: ignore[typeddict-item]
    composed = await nodes.compose(RunState(**{**state, "results": results}))  # type: ignore[typeddict-item]
    assert composed["answer"]["answer"] == {"c": {"label": "ORDER"}}
    assert set(composed["answer"]["steps"]) == {"a", "b", "c"}


def keyed_by(run_id: str) -> list[Any]:
    """Every live dict with the run's id as a key and every live set holding it."""
    gc.collect()
    found = []
    for obj in gc.get_objects():
        try:
            if isinstance(obj, dict | set | frozenset) and run_id in obj:
                found.append(obj)
        except TypeError:  # an unhashable key type somewhere
            continue
    return found


@pytest.mark.parametrize("fails", ["planner", "step"])
async def test_a_failed_run_leaves_no_per_run_entry_behind(tmp_path: Path, fails: str) -> None:
    from shoal.errors import BackendUnavailableError

    down = BackendUnavailableError("cannot reach Ollama")
    answers: list[Any] = [down] if fails == "planner" else ['{"label": "ORDER"}', down]
    shoal, _ = scripted_shoal(tmp_path / "shoal.db", *answers)
    with pytest.raises(BackendUnavailableError):
        await shoal.run(TICKET, plan=None if fails == "planner" else CHAIN3)
    (run,) = shoal.store.list_runs()
    assert run.status == "failed"
    assert run.id not in shoal.wiring.fresh and run.id not in shoal.wiring._budgets
    assert keyed_by(run.id) == []
    await shoal.aclose()


async def test_the_task_graph_as_a_subgraph_carries_its_runtime_through_a_review(tmp_path: Path) -> None:
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.graph import END, START, StateGraph

    s = settings(tmp_path / "shoal.db", threshold=1.0)  # every answer goes to a person
    s.default_model = "scripted:small"
    backend = ScriptedBackend(lambda request: '{"label": "ORDER"}')
    shoal = Shoal(s, router=ModelRouter(lambda _: backend))
    parent: StateGraph[RunState, Any] = StateGraph(RunState)
    parent.add_node("shoal", shoal.task_graph())
    parent.add_edge(START, "shoal")
    parent.add_edge("shoal", END)
    graph = parent.compile(checkpointer=InMemorySaver())
    config: Any = {"configurable": {"thread_id": "t"}}
    plan = {"steps": [TWO["steps"][0]]}
    # a parent with a context of its own: shoal's nodes still get theirs
    first = await graph.ainvoke({"run_id": "sub1", "task": TICKET, "plan": plan}, config, context={"mine": 1})
    (pending,) = first["__interrupt__"]
    assert pending.value["step_id"] == "kind" and shoal.store.reviews()[0].step_id == "kind"
    run = shoal.store.get_run("sub1")
    assert run is not None and run.status == RunStatus.WAITING and run.model_calls == 1
    answer = {"label": "REFUND", "labels": ["REFUND"]}
    shoal.store.answer_review(pending.value["review_id"], answer, "tester")
    done = await graph.ainvoke(Command(resume={pending.id: {"answer": answer}}), config)
    assert done["answer"]["answer"]["kind"]["label"] == "REFUND"
    assert len(backend.requests) == 1, "the resumed subgraph did not ask the model again"
    # no engine drove it, and still the run is closed with its totals, as shoal show expects
    run = shoal.store.get_run("sub1")
    assert run is not None and run.status == RunStatus.DONE and run.model_calls == 1 and run.tokens_in > 0
    assert run.result_json is not None and json.loads(run.result_json)["answer"]["kind"]["label"] == "REFUND"
    await shoal.aclose()


async def test_a_cancelled_run_is_stopped_with_a_reason_a_person_can_read(tmp_path: Path) -> None:
    import asyncio

    backend = ScriptedBackend(lambda request: '{"label": "ORDER"}', delay_s=30)
    shoal = Shoal(settings(tmp_path / "shoal.db"), router=ModelRouter(lambda _: backend))
    started = asyncio.Event()
    task = asyncio.create_task(shoal.run(TICKET, plan=TWO, on_start=lambda _: started.set()))
    await started.wait()
    while not backend.requests:  # noqa: ASYNC110 - the scripted backend has no event to wait on
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    (run,) = shoal.store.list_runs()
    await shoal.aclose()
    assert run.status == "stopped"
    assert run.error is not None and run.error.startswith("cancelled; `shoal resume`"), run.error
