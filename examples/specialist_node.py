"""shoal specialists as nodes of your own LangGraph graph.

A classifier routes a support ticket; an extractor pulls the order id only for order tickets;
a low-confidence answer goes to a "needs a person" node instead of being trusted.

    uv run python examples/specialist_node.py "My order 70012345 never arrived"
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any, TypedDict

from langgraph.graph import END, START, StateGraph
from pydantic import BaseModel, Field

from shoal import Settings
from shoal.backends import build_router
from shoal.specialists import Classifier, Extractor


class OrderRef(BaseModel):
    order_id: str | None = Field(default=None, description="the order number")


class Ticket(TypedDict, total=False):
    text: str
    category: dict[str, Any]
    order: dict[str, Any]
    route: str


def build() -> Any:
    router = build_router(Settings.load())
    classify = Classifier(router, "embedded:smollm2-135m", ["ORDER", "REFUND", "ACCOUNT", "OTHER"])
    extract = Extractor(router, "embedded:smollm2-135m", OrderRef)

    def route(state: Ticket) -> str:
        category = state["category"]
        if category["confidence"] < 0.3:
            return "person"
        return "order" if category["output"]["label"] in ("ORDER", "REFUND") else END

    async def person(state: Ticket) -> Ticket:
        return {"route": "queued for a person: " + "; ".join(state["category"]["evidence"])}

    graph = StateGraph(Ticket)
    graph.add_node("classify", classify.as_node(output_key="category"))
    graph.add_node("order", extract.as_node(output_key="order"))
    graph.add_node("person", person)
    graph.add_edge(START, "classify")
    graph.add_conditional_edges("classify", route, ["order", "person", END])
    graph.add_edge("order", END)
    graph.add_edge("person", END)
    return graph.compile()


async def main(text: str) -> dict[str, Any]:
    result: dict[str, Any] = await build().ainvoke({"text": text})
    return result


if __name__ == "__main__":
    final = asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "My order 70012345 never arrived"))
    print("category:", final["category"]["output"]["label"], f"(confidence {final['category']['confidence']:.2f})")
    if "order" in final:
        print("order:", final["order"]["output"], f"(confidence {final['order']['confidence']:.2f})")
    if "route" in final:
        print(final["route"])
