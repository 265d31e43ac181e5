"""/metrics: Prometheus text, counted from the database at scrape time.

Everything is read from the store when Prometheus scrapes, not counted in this process: the
numbers are the same whichever process (this server, a worker, `shoal triage`) did the work,
and survive restarts. The latency histogram is built from the `modelcall` rows' `latency_s`
(bucket counts in one SQL pass), so it covers every call ever stored, pruned runs excepted; a
scrape costs a scan of that table (milliseconds for 100k calls on SQLite; prune old runs with
`shoal prune` to bound it). Counters therefore go down when runs are pruned, which Prometheus's
rate() reads as a counter reset.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import text

from shoal.store.db import Store

# seconds: small models answer in tens of milliseconds, the frontier in seconds
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

_BUCKET_SQL = ", ".join(f"SUM(CASE WHEN latency_s <= {b!r} THEN 1 ELSE 0 END)" for b in LATENCY_BUCKETS)

QUERIES = {
    "tickets": "SELECT status, COUNT(*) FROM ticket GROUP BY status",
    "runs": "SELECT status, COUNT(*) FROM run GROUP BY status",
    "reviews": "SELECT COUNT(*) FROM review WHERE status = 'pending'",
    "escalations": "SELECT specialist, rung, outcome, COUNT(*) FROM escalation GROUP BY specialist, rung, outcome",
    "calls": (
        "SELECT model, CASE WHEN error IS NULL THEN 'ok' ELSE 'error' END, COUNT(*), "
        "COALESCE(SUM(tokens_in), 0), COALESCE(SUM(tokens_out), 0), COALESCE(SUM(latency_s), 0), "
        f"COALESCE(SUM(cost_usd), 0), {_BUCKET_SQL} FROM modelcall GROUP BY 1, 2"
    ),
    "spend": "SELECT model, COALESCE(SUM(cost_usd), 0) FROM spend GROUP BY model",
    "deliveries": "SELECT status, COUNT(*) FROM webhook_delivery GROUP BY status",
}


def split_model(ref: str) -> tuple[str, str]:
    backend, _, model = ref.partition(":")
    return (backend, model) if model else ("", backend)


class StoreCollector(Collector):
    def __init__(self, store: Store) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        with self.store.engine.connect() as connection:
            rows = {name: [tuple(r) for r in connection.execute(text(sql))] for name, sql in QUERIES.items()}
        yield _gauge("shoal_tickets", "Tickets by status", ["status"], rows["tickets"])
        yield _gauge("shoal_runs", "Runs by status", ["status"], rows["runs"])
        pending = GaugeMetricFamily("shoal_reviews_pending", "Decisions waiting for a person")
        pending.add_metric([], float(rows["reviews"][0][0]))
        yield pending
        escalations = CounterMetricFamily(
            "shoal_escalations", "Rungs of the escalation ladder taken", labels=["specialist", "rung", "outcome"]
        )
        for specialist, rung, outcome, n in rows["escalations"]:
            escalations.add_metric([str(specialist), str(rung), str(outcome)], float(n))
        yield escalations
        yield from _calls(rows["calls"])
        spend = CounterMetricFamily("shoal_frontier_spend_usd", "Paid to the frontier, US dollars", labels=["model"])
        for model, usd in rows["spend"]:
            spend.add_metric([str(model)], float(usd))
        yield spend
        yield _gauge("shoal_webhook_deliveries", "Webhook deliveries by status", ["status"], rows["deliveries"])


def _gauge(name: str, documentation: str, labels: list[str], rows: list[tuple[Any, ...]]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=labels)
    for *values, n in rows:
        family.add_metric([str(v) for v in values], float(n))
    return family


def _calls(rows: list[tuple[Any, ...]]) -> Iterator[Metric]:
    calls = CounterMetricFamily("shoal_model_calls", "Model calls", labels=["backend", "model", "outcome"])
    tokens = CounterMetricFamily("shoal_model_tokens", "Tokens in and out", labels=["backend", "model", "direction"])
    cost = CounterMetricFamily("shoal_model_cost_usd", "Cost of model calls, US dollars", labels=["backend", "model"])
    latency = HistogramMetricFamily(
        "shoal_model_call_latency_seconds", "Model call latency", labels=["backend", "model"]
    )
    # ok and failed calls in one histogram (and one token count) per model
    merged: dict[tuple[str, str], list[float]] = {}
    for ref, outcome, n, *sums in rows:
        backend, model = split_model(str(ref))
        calls.add_metric([backend, model, str(outcome)], float(n))
        totals = merged.setdefault((backend, model), [0.0] * (len(sums) + 1))
        for i, value in enumerate((n, *sums)):
            totals[i] += float(value or 0)
    for (backend, model), (n, tokens_in, tokens_out, seconds, usd, *buckets) in merged.items():
        tokens.add_metric([backend, model, "input"], tokens_in)
        tokens.add_metric([backend, model, "output"], tokens_out)
        cost.add_metric([backend, model], usd)
        edges = [(repr(b), count) for b, count in zip(LATENCY_BUCKETS, buckets, strict=True)]
        latency.add_metric([backend, model], [*edges, ("+Inf", n)], sum_value=seconds)
    yield calls
    yield tokens
    yield cost
    yield latency
