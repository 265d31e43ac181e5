"""What shoal's graph costs per step, against a bare LangGraph graph with a SQLite saver.

shoal: a chain of N classifier steps on a zero-latency scripted model, through the full task
graph with persistence (its own Run/Step/ModelCall rows and LangGraph's AsyncSqliteSaver in one
SQLite file, durability as configured). Bare: a LangGraph `StateGraph` of N no-op nodes with
`SqliteSaver` on its own file. Same N, same machine, runs interleaved; per-step time is a run's
wall time divided by N, and the table shows medians over the runs.

Run by hand: `uv run python benchmarks/orchestration_overhead.py [--n 20] [--runs 15]`.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, TypedDict

from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.graph import END, START, StateGraph
from rich.console import Console
from rich.table import Table

from shoal.config import Settings, SpecialistSettings
from shoal.engine import Shoal
from shoal.models.router import ModelRouter
from shoal.models.scripted import ScriptedBackend


class Bare(TypedDict, total=False):
    count: int


def bare_graph(n: int, path: Path) -> Any:
    import sqlite3

    graph = StateGraph(Bare)
    for i in range(n):
        graph.add_node(f"n{i}", lambda state: {"count": state.get("count", 0) + 1})
    graph.add_edge(START, "n0")
    for i in range(n - 1):
        graph.add_edge(f"n{i}", f"n{i + 1}")
    graph.add_edge(f"n{n - 1}", END)
    conn = sqlite3.connect(str(path), check_same_thread=False)
    return graph.compile(checkpointer=SqliteSaver(conn))


def chain(n: int) -> dict[str, Any]:
    return {
        "steps": [
            {
                "id": f"s{i}",
                "specialist": "classifier",
                "instruction": "label",
                "inputs": ["task"] if i == 0 else [f"s{i - 1}"],
            }
            for i in range(n)
        ]
    }


async def main(n: int, runs: int, durability: str) -> None:
    folder = Path(tempfile.mkdtemp(prefix="shoal-bench-"))
    settings = Settings.load(env={"SHOAL_DB": str(folder / "shoal.db")})
    settings.max_plan_steps = n
    settings.durability = durability  # type: ignore[assignment]
    settings.specialists = {"classifier": SpecialistSettings(threshold=0.0)}
    backend = ScriptedBackend(lambda request: '{"label": "ORDER"}')
    shoal = Shoal(settings, router=ModelRouter(lambda _: backend))
    bare = bare_graph(n, folder / "bare.db")
    plan = chain(n)

    shoal_ms: list[float] = []
    bare_ms: list[float] = []
    bare_sync_ms: list[float] = []
    async with shoal:
        for i in range(runs + 2):  # the first two warm caches and create tables
            order = ("shoal", "bare", "bare_sync") if i % 2 == 0 else ("bare_sync", "bare", "shoal")
            for which in order:
                started = time.perf_counter()
                if which == "shoal":
                    report = await shoal.run(f"ticket {i}", plan=plan)
                    assert report.status == "done", report
                    elapsed = shoal_ms
                elif which == "bare":
                    bare.invoke({"count": 0}, {"configurable": {"thread_id": f"t{i}"}})
                    elapsed = bare_ms
                else:
                    bare.invoke({"count": 0}, {"configurable": {"thread_id": f"s{i}"}}, durability="sync")
                    elapsed = bare_sync_ms
                if i >= 2:
                    elapsed.append((time.perf_counter() - started) * 1000 / n)
        calls = len(backend.requests)

    table = Table(title=f"per-step wall time, chain of {n} steps, {runs} interleaved runs")
    table.add_column("graph")
    table.add_column("median ms/step", justify="right")
    table.add_column("p90 ms/step", justify="right")
    for name, values in (
        (f"shoal task graph (durability={durability}, own rows)", shoal_ms),
        ("bare StateGraph + SqliteSaver (durability=async, the default)", bare_ms),
        ("bare StateGraph + SqliteSaver (durability=sync)", bare_sync_ms),
    ):
        table.add_row(name, f"{statistics.median(values):.3f}", f"{statistics.quantiles(values, n=10)[-1]:.3f}")
    console = Console()
    console.print(table)
    shoal_median = statistics.median(shoal_ms)
    console.print(f"ratio shoal / bare: [bold]{shoal_median / statistics.median(bare_ms):.2f}[/bold]")
    console.print(f"ratio shoal / bare with sync durability: {shoal_median / statistics.median(bare_sync_ms):.2f}")
    console.print(f"scripted model calls: {calls} (expected {(runs + 2) * n})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--durability", choices=["exit", "async", "sync"], default="exit")
    args = parser.parse_args()
    asyncio.run(main(args.n, args.runs, args.durability))
