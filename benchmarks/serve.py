"""`shoal serve` under load, on loopback, with a scripted model that answers at once (so what is
measured is the service and its database, never a model).

1. Submissions: `--clients` concurrent clients (default 50) POST `--tickets` tickets in all;
   submissions per second and the p50/p99 latency of a POST; then how long until every ticket
   is triaged (tickets per second through the in-process worker).
2. Webhook latency: from a ticket's row ending done to its delivery accepted by a receiver on
   loopback (p50/p99).
3. Outage: the receiver refuses every request for `--outage-s` seconds (the issue asks 60)
   while tickets finish; then it comes back. Deliveries lost: tickets done without exactly one
   accepted delivery (the goal is 0).
4. Tracing: the cost of a span per model call, `ModelRouter.chat` on the scripted backend with
   tracing off, then on (an SDK provider with an in-memory exporter).

The server runs in a child process (uvicorn, one worker) so the clients do not share its GIL.
Run by hand: `uv run python benchmarks/serve.py [--tickets 1000] [--clients 50] [--outage-s 10]`.
Prints a table and the machine's load average.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table


def answer(request: Any) -> str:
    schema = request.output_schema
    labels = schema.model_json_schema().get("properties", {}).get("label", {}).get("enum", [])
    return {
        "Label": json.dumps({"label": "PAYMENT" if "PAYMENT" in labels else (labels or ["?"])[0]}),
        "TicketEntities": '{"order_id": "12345"}',
        "Summary": '{"summary": "Customer wants order 12345 cancelled", "key_points": []}',
        "ReplyDraft": '{"reply": "Thanks for writing, we are looking at order 12345 now."}',
    }[schema.__name__]


def serve_child(db: str, port: int, hook: str) -> None:
    """The server: the app around a scripted engine, on uvicorn (runs in the child process)."""
    import uvicorn

    from shoal.config import ServeSettings, Settings, SpecialistSettings
    from shoal.engine import Shoal
    from shoal.models.router import ModelRouter
    from shoal.models.scripted import ScriptedBackend
    from shoal.serve.app import create_app
    from shoal.tickets.plan import FIELDS

    settings = Settings.load(env={"SHOAL_DB": db})
    settings.frontier_model = None
    settings.specialists = {name: SpecialistSettings(threshold=0.0) for name in FIELDS}
    settings.serve = ServeSettings(
        webhooks=[hook], rate_per_minute=0, concurrency=8, retry_initial_s=0.5, retry_max_s=2.0, max_attempts=100
    )
    backend = ScriptedBackend(answer)
    shoal = Shoal(settings, router=ModelRouter(lambda _: backend))
    uvicorn.run(create_app(shoal), host="127.0.0.1", port=port, log_level="warning")


class Receiver:
    """Webhook receiver on loopback; `down` refuses with 503. Records when each body arrived."""

    def __init__(self) -> None:
        self.down = False
        self.accepted: list[tuple[float, dict[str, Any]]] = []
        self.refused = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = 503 if receiver.down else 200
                if receiver.down:
                    receiver.refused += 1
                else:
                    receiver.accepted.append((time.time(), json.loads(body)))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


async def submit_all(url: str, token: str, prefix: str, n: int, clients: int) -> tuple[float, list[float]]:
    """`n` tickets POSTed by `clients` concurrent clients; (seconds, per-request latencies)."""
    keys = iter(range(n))
    latencies: list[float] = []

    async def client() -> None:
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as http:
            for i in keys:
                started = time.perf_counter()
                response = await http.post("/v1/tickets", json={"id": f"{prefix}-{i}", "text": f"cancel order {i}"})
                latencies.append(time.perf_counter() - started)
                assert response.status_code == 202, response.text

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return time.perf_counter() - started, latencies


def wait_done(store: Any, prefix: str, n: int, limit_s: float) -> float:
    """Seconds until `n` tickets of `prefix` have ended (bounded by `limit_s`)."""
    from sqlalchemy import text

    started = time.perf_counter()
    query = text("SELECT COUNT(*) FROM ticket WHERE key LIKE :p AND status IN ('done', 'waiting', 'failed')")
    while time.perf_counter() - started < limit_s:
        with store.engine.connect() as connection:
            if connection.execute(query, {"p": f"{prefix}-%"}).scalar_one() >= n:
                return time.perf_counter() - started
        time.sleep(0.2)
    raise SystemExit(f"tickets {prefix}-* not all triaged within {limit_s:g}s")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def tracing_cost(calls: int) -> tuple[float, float]:
    """Microseconds per `ModelRouter.chat` on the scripted backend: tracing off, then on."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from shoal import telemetry
    from shoal.models.base import ChatRequest, Message
    from shoal.models.router import ModelRouter
    from shoal.models.scripted import ScriptedBackend

    backend = ScriptedBackend(lambda _: "ok")
    router = ModelRouter(lambda _: backend)
    request = ChatRequest(model="m", messages=[Message(role="user", content="hello")])

    async def timed() -> float:
        started = time.perf_counter()
        for _ in range(calls):
            await router.chat("ollama:m", request)
        backend.requests.clear()
        return (time.perf_counter() - started) / calls * 1e6

    telemetry.use(None)
    off = min(asyncio.run(timed()) for _ in range(3))
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
    telemetry.use(provider)
    on = min(asyncio.run(timed()) for _ in range(3))
    telemetry.use(None)
    return off, on


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tickets", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--outage-s", type=float, default=10.0)
    parser.add_argument("--child", nargs=3, metavar=("DB", "PORT", "HOOK"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        serve_child(args.child[0], int(args.child[1]), args.child[2])
        return

    from shoal.store import Store

    folder = Path(tempfile.mkdtemp(prefix="shoal-serve-bench-"))
    db = str(folder / "shoal.db")
    store = Store(db)
    token = store.create_token("bench")
    receiver = Receiver()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "SHOAL_WEBHOOK_SECRET": "bench"}
    child = subprocess.Popen([sys.executable, __file__, "--child", db, str(port), receiver.url], env=env)
    rows: list[tuple[str, str]] = []
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        n = args.tickets
        seconds, latencies = asyncio.run(submit_all(url, token, "L", n, args.clients))
        rows.append((f"submissions/s ({args.clients} clients, {n} tickets)", f"{n / seconds:,.0f}"))
        p50, p99 = (percentile(latencies, p) * 1000 for p in (50, 99))
        rows.append(("POST latency p50 / p99", f"{p50:.1f} / {p99:.1f} ms"))
        triaged_s = wait_done(store, "L", n, limit_s=1800)
        rows.append(("tickets triaged/s (submitted to all done)", f"{n / (seconds + triaged_s):,.1f}"))
        until = time.time() + 120
        while time.time() < until and sum(1 for _, b in receiver.accepted if b["ticket"]["id"].startswith("L-")) < n:
            time.sleep(0.2)
        ended = {t.key: t.updated_at.replace(tzinfo=UTC).timestamp() for t in store.tickets("api")}
        delays = [at - ended[b["ticket"]["id"]] for at, b in receiver.accepted if b["ticket"]["id"] in ended]
        p50, p99 = (percentile(delays, p) * 1000 for p in (50, 99))
        rows.append(("webhook latency p50 / p99 (ticket done -> accepted)", f"{p50:.0f} / {p99:.0f} ms"))

        outage_n = min(200, n)
        receiver.down = True
        down_since = time.perf_counter()
        asyncio.run(submit_all(url, token, "O", outage_n, args.clients))
        wait_done(store, "O", outage_n, limit_s=600)
        time.sleep(max(0.0, args.outage_s - (time.perf_counter() - down_since)))
        receiver.down = False
        until = time.time() + 120
        while time.time() < until:
            got = [b["ticket"]["id"] for _, b in receiver.accepted if b["ticket"]["id"].startswith("O-")]
            if len(set(got)) >= outage_n:
                break
            time.sleep(0.2)
        got = [b["ticket"]["id"] for _, b in receiver.accepted if b["ticket"]["id"].startswith("O-")]
        lost = outage_n - len(set(got))
        extra = f"duplicates {len(got) - len(set(got))}, refused tries {receiver.refused}"
        rows.append((f"deliveries lost, {args.outage_s:g}s receiver outage ({outage_n} tickets)", f"{lost} ({extra})"))
    finally:
        child.terminate()
        child.wait(timeout=30)
        store.close()
    off, on = tracing_cost(2000)
    rows.append(("ModelRouter.chat, tracing off / on (scripted backend)", f"{off:.1f} / {on:.1f} µs per call"))
    rows.append(("cost of tracing per model call", f"{on - off:.1f} µs"))

    table = Table("measure", "value", title="shoal serve on loopback")
    for name, value in rows:
        table.add_row(name, value)
    console = Console()
    console.print(table)
    console.print(f"load average: {', '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
