"""How shoal's work queue scales: tickets per minute with 1, 2 and 4 `shoal worker` processes on a
SQLite file and on PostgreSQL, per-step overhead on each engine, and bytes per finished ticket.

The model is the tests' fake Ollama on loopback with a fixed latency per call (default 200 ms), so
the figures show shoal's own scaling, not a model's. PostgreSQL is a throwaway server started from
Debian's binaries as the tests start it (`tests/pg.py`). Throughput is measured from the first
run's start to the last run's end, as the database recorded them (process start-up is left out).

Run by hand: `uv run python benchmarks/workers.py [--tickets 60] [--latency 0.2]`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from fakeollama import fake_ollama  # noqa: E402
from pg import start, stop  # noqa: E402

from shoal.config import Settings, SpecialistSettings  # noqa: E402
from shoal.engine import Shoal  # noqa: E402
from shoal.models.router import ModelRouter  # noqa: E402
from shoal.models.scripted import ScriptedBackend  # noqa: E402
from shoal.store import Store  # noqa: E402

TEXTS = [
    "my order {n} arrived broken, I want a refund",
    "how do I change the shipping address of order {n}?",
    "I was charged twice for order {n}, please help",
]
SPECIALISTS = ("category", "intent", "priority", "entities", "summary", "reply")


def prepare(folder: Path, url: str, n: int) -> None:
    (folder / "shoal.toml").write_text(
        'default_model = "ollama:fake"\nfrontier_model = "openai:gpt-4o-mini"\n'
        f'[ollama]\nhost = "{url}"\n[workers]\nlease_s = 30\npoll_s = 0.2\n'
        + "".join(f"[specialists.{name}]\nthreshold = 0.0\n" for name in SPECIALISTS),
        encoding="utf-8",
    )
    rows = ["ticket_id,instruction"] + [f"T{i:04d},{TEXTS[i % 3].format(n=10000 + i)}" for i in range(n)]
    (folder / "tickets.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")


def shoal_cli(folder: Path, database: str, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "SHOAL_DB": database}
    env.pop("OPENAI_API_KEY", None)
    return subprocess.Popen(
        [sys.executable, "-m", "shoal.cli", *args, "--config", str(folder / "shoal.toml")],
        cwd=folder,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def throughput(database: str, folder: Path, n: int, workers: int) -> tuple[float, int]:
    """Tickets per minute with `workers` processes draining `n` queued tickets; bytes per ticket."""
    store = Store(database)
    _, before = store.vacuum()
    enqueue = shoal_cli(folder, database, "triage", "tickets.csv", "--id", "ticket_id", "--enqueue")
    _, err = enqueue.communicate(timeout=300)
    assert enqueue.returncode == 0, err
    procs = [shoal_cli(folder, database, "worker", "--drain") for _ in range(workers)]
    for proc in procs:
        _, err = proc.communicate(timeout=1800)
        assert proc.returncode == 0, err
    runs = store.list_runs(limit=n * 2)
    assert len(runs) == n and all(r.status == "done" for r in runs), "not every ticket finished"
    span = (max(r.updated_at for r in runs) - min(r.created_at for r in runs)).total_seconds()
    _, after = store.vacuum()  # what the rows take, not the free pages a busy file keeps
    per_ticket = (after - before) // n
    store.close()
    return n / span * 60, per_ticket


async def per_step_ms(database: str, steps: int = 20, runs: int = 12) -> float:
    """Median wall time per step of a chain of classifier steps on a zero-latency scripted model."""
    settings = Settings.load(env={"SHOAL_DB": database})
    settings.max_plan_steps = steps
    settings.specialists = {"classifier": SpecialistSettings(threshold=0.0)}
    backend = ScriptedBackend(lambda _: '{"label": "ORDER"}')
    chain = {
        "steps": [
            {
                "id": f"s{i}",
                "specialist": "classifier",
                "instruction": "label",
                "inputs": ["task"] if i == 0 else [f"s{i - 1}"],
            }
            for i in range(steps)
        ]
    }
    times: list[float] = []
    async with Shoal(settings, router=ModelRouter(lambda _: backend)) as shoal:
        for i in range(runs + 2):
            started = time.perf_counter()
            report = await shoal.run(f"ticket {i}", plan=chain)
            assert report.status == "done", report
            if i >= 2:
                times.append((time.perf_counter() - started) * 1000 / steps)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tickets", type=int, default=60, help="tickets queued for each measurement")
    parser.add_argument("--latency", type=float, default=0.2, help="seconds the fake model takes per call")
    parser.add_argument("--workers", default="1,2,4", help="worker counts to measure")
    args = parser.parse_args()
    counts = [int(k) for k in args.workers.split(",")]
    server = start()
    table = Table(title=f"{args.tickets} tickets, {args.latency * 1000:.0f} ms per model call, {os.cpu_count()} CPUs")
    for column in ("engine", "workers", "tickets/min", "× one worker", "bytes/ticket"):
        table.add_column(column, justify="left" if column == "engine" else "right")
    try:
        with fake_ollama(latency_s=args.latency) as fake:
            for engine in ("sqlite", "postgresql"):
                single = 0.0
                for k in counts:
                    folder = Path(tempfile.mkdtemp(prefix=f"shoal-workers-{engine}-{k}-"))
                    prepare(folder, fake.url, args.tickets)
                    database = str(folder / "shoal.db") if engine == "sqlite" else server.new_database(f"w{k}")
                    rate, size = throughput(database, folder, args.tickets, k)
                    single = single or rate
                    table.add_row(engine, str(k), f"{rate:.1f}", f"{rate / single:.2f}", f"{size:,}")
                    Console(stderr=True).print(f"{engine}, {k} workers: {rate:.1f} tickets/min")
        steps = Table(title="shoal's own time per step (chain of 20, zero-latency scripted model)")
        steps.add_column("engine")
        steps.add_column("median ms/step", justify="right")
        folder = Path(tempfile.mkdtemp(prefix="shoal-steps-"))
        for engine, database in (("sqlite", str(folder / "s.db")), ("postgresql", server.new_database("steps"))):
            steps.add_row(engine, f"{asyncio.run(per_step_ms(database)):.2f}")
    finally:
        stop(server)
    Console().print(table)
    Console().print(steps)


if __name__ == "__main__":
    main()
