"""The task graph: plan -> dispatch (Send) -> step (run, gate, escalate) -> compose.

```
START -> plan -> [plan_review] -> dispatch -> step* ---> dispatch -> ... -> compose -> END
                                          \\-> review* -/
```

The nodes (`shoal.graphs.nodes`) are plain functions; what they depend on (store, planner,
specialists, ladder settings, budgets) is the `TaskRuntime` that the caller passes as the run's
context: `graph.ainvoke(state, config, context=task_runtime)`.

Crash safety does not rest on LangGraph's checkpoints alone: every finished step is written to
the store (with its model calls and escalations) in one transaction before the node returns,
and a step node first looks for its own finished row. A resumed run therefore never repeats
a paid call, whatever the checkpoint durability. The human rung is a node of its own
(`review`), after the node that made the model calls, because a node that calls `interrupt()`
runs again from its start on resume.
"""

from __future__ import annotations

import time
from typing import Any

from langgraph.errors import GraphInterrupt
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph

from shoal.graphs import nodes
from shoal.graphs.context import TaskRuntime, record_call
from shoal.graphs.persist import kept_answer
from shoal.graphs.state import RunState
from shoal.status import RunStatus

__all__ = ["TaskRuntime", "build_task_graph", "record_call", "task_subgraph"]


def build_task_graph() -> StateGraph[RunState, TaskRuntime]:
    """The graph, not yet compiled. It holds nothing of any run or any engine: invoke the
    compiled graph with `context=` a `TaskRuntime`."""
    graph: StateGraph[RunState, TaskRuntime] = StateGraph(RunState, context_schema=TaskRuntime)
    graph.add_node("plan", nodes.plan)
    graph.add_node("plan_review", nodes.plan_review)
    graph.add_node("dispatch", nodes.dispatch, destinations=("step", "review", "compose", "plan_review"))
    graph.add_node("step", nodes.step, destinations=("step", "dispatch"))  # type: ignore[arg-type]
    graph.add_node("review", nodes.review)  # type: ignore[arg-type]
    graph.add_node("compose", nodes.compose)
    graph.add_edge(START, "plan")
    graph.add_conditional_edges("plan", nodes.after_plan)
    graph.add_edge("plan_review", "dispatch")
    graph.add_edge("review", "dispatch")
    graph.add_edge("compose", END)
    return graph


class WithRuntime:
    """A node that runs the task graph under its own `TaskRuntime`.

    A compiled graph used as a node gets its parent's context, which a parent graph of someone
    else's does not have (or has for its own nodes); this node supplies the task graph's.
    """

    def __init__(self, graph: CompiledStateGraph[RunState, TaskRuntime, RunState, RunState], ctx: TaskRuntime):
        self.graph = graph
        self.ctx = ctx

    async def __call__(self, state: RunState) -> dict[str, Any]:
        # no config: LangGraph hands the caller's (checkpointer, thread, namespace) down, so
        # an interrupt inside pauses the caller and a resume picks the task graph up again
        started = time.perf_counter()
        try:
            result: dict[str, Any] = await self.graph.ainvoke(state, context=self.ctx)
        except GraphInterrupt:
            await self._close(state, RunStatus.WAITING, started)
            raise
        except Exception as exc:
            await self._close(state, RunStatus.FAILED, started, error=str(exc))
            raise
        await self._close(state, RunStatus.DONE, started, answer=result.get("answer"))
        return result

    async def _close(
        self, state: RunState, status: RunStatus, started: float, *, error: str | None = None, answer: Any = None
    ) -> None:
        """No engine drives this run, so its row is closed here: status, time and totals, as
        `shoal show` and `shoal runs` expect of every run."""
        run_id = state.get("run_id")
        if not run_id:
            return
        store = self.ctx.store
        result_json = kept_answer(answer)
        await store.offload(
            store.finish_run, run_id, status, time.perf_counter() - started, error=error, result_json=result_json
        )


def task_subgraph(ctx: TaskRuntime, checkpointer: Any = None) -> CompiledStateGraph[RunState, Any, RunState, RunState]:
    """The task graph compiled for a caller that passes no context, e.g. as a node of another
    graph: it carries `ctx`. Without a checkpointer it uses its parent's."""
    outer: StateGraph[RunState, Any] = StateGraph(RunState)
    outer.add_node("task", WithRuntime(build_task_graph().compile(), ctx))
    outer.add_edge(START, "task")
    outer.add_edge("task", END)
    return outer.compile(checkpointer=checkpointer)
