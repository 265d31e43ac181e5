"""shoal's task graph as a subgraph of your own LangGraph graph.

The parent graph prepares a ticket, hands it to shoal's compiled task graph (plan given, so no
planner call), and formats what comes back. shoal still records every step, model call and
escalation in its store (`shoal show RUN_ID`).

    uv run python examples/subgraph.py
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, TypedDict

from langgraph.graph import END, START, StateGraph

from shoal import Shoal

PLAN = {
    "steps": [
        {"id": "category", "specialist": "classifier", "instruction": "categorise the ticket", "inputs": ["task"]},
        {"id": "facts", "specialist": "extractor", "instruction": "ids and emails", "inputs": ["task"]},
    ]
}


class Parent(TypedDict, total=False):
    run_id: str
    task: str
    plan: dict[str, Any]
    answer: dict[str, Any]
    message: str


def build(shoal: Shoal) -> Any:
    async def prepare(state: Parent) -> Parent:
        return {"run_id": uuid.uuid4().hex[:12], "task": state["task"].strip(), "plan": PLAN}

    async def report(state: Parent) -> Parent:
        steps = state["answer"]["steps"]
        return {"message": f"category {steps['category']['label']}, ids {steps['facts']['ids']}"}

    graph = StateGraph(Parent)
    graph.add_node("prepare", prepare)
    # a plain compiled LangGraph graph; it carries the shoal's runtime (its nodes' context), so
    # this graph needs no context of its own for it
    graph.add_node("shoal", shoal.task_graph())
    graph.add_node("report", report)
    graph.add_edge(START, "prepare")
    graph.add_edge("prepare", "shoal")
    graph.add_edge("shoal", "report")
    graph.add_edge("report", END)
    return graph.compile()


async def main(task: str) -> Parent:
    async with Shoal.from_config() as shoal:
        # specialists here accept every answer; see README for thresholds and escalation
        for specialist in shoal.specialists.values():
            specialist.threshold = 0.0
        result: Parent = await build(shoal).ainvoke({"task": task})
        return result


if __name__ == "__main__":
    final = asyncio.run(main("  Ticket from anna@example.com: order 70012345 arrived broken, refund please.  "))
    print(final["message"])
    print(f"records: shoal show {final['run_id']}")
