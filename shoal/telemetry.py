"""OpenTelemetry spans for runs, steps and model calls, named and labelled after the GenAI
semantic conventions (`gen_ai.operation.name`, `gen_ai.request.model`, `gen_ai.usage.*`, ...).

Off unless asked for, and then free: tracing is on when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, in which case spans go out over OTLP/HTTP in
batches, or when the process already configured an OpenTelemetry tracer provider of its own
(an application that embeds shoal, a test), or after `use(provider)`. Which of these holds is
decided once, at the first span; while off, a span is a shared no-op context manager and no
OpenTelemetry module is imported. Tracing never fails a run: the SDK drops what it cannot send.

A leaf module: it imports nothing from shoal, so models/ and graphs/ may import it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")

_OFF: AbstractContextManager[None] = nullcontext()
# None: not decided yet; False: off; else the tracer every span comes from
_tracer: Any = None


def use(provider: Any | None) -> None:
    """Trace with `provider` (an OpenTelemetry `TracerProvider`) from now on; None decides again
    at the next span, from the environment."""
    global _tracer
    _tracer = None if provider is None else provider.get_tracer("shoal")


def enabled() -> bool:
    return _current() is not False


def _current() -> Any:
    global _tracer
    if _tracer is None:
        _tracer = _resolve()
    return _tracer


def _resolve() -> Any:
    if any(os.environ.get(name) for name in ENDPOINT_VARIABLES):
        return _exporting()
    if "opentelemetry.trace" in sys.modules:  # someone set OpenTelemetry up in this process
        from opentelemetry import trace

        provider = trace.get_tracer_provider()
        if not isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
            return provider.get_tracer("shoal")
    return False


def _exporting() -> Any:
    """A provider that batches spans to the OTLP/HTTP endpoint the standard variables name
    (`OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_SERVICE_NAME` and the rest are read by the SDK)."""
    try:
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:  # the `serve` extra is not installed: say so once, run without traces
        print(
            "shoal: OTEL_EXPORTER_OTLP_ENDPOINT is set but OpenTelemetry is not installed; "
            "install shoal[serve] to export traces",
            file=sys.stderr,
        )
        return False
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "shoal")})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return trace.get_tracer_provider().get_tracer("shoal")


@contextmanager
def _span(tracer: Any, name: str, attributes: dict[str, Any]) -> Iterator[Any]:
    with tracer.start_as_current_span(name, attributes=attributes) as span:
        try:
            yield span
        except BaseException as exc:
            # the SDK records the exception and the error status; the conventions add its type
            span.set_attribute("error.type", type(exc).__name__)
            raise


def run_span(run_id: str, workflow: str) -> AbstractContextManager[Any]:
    """A run of a graph: the agent shoal invoked (one span per drive: start, resume, review)."""
    tracer = _current()
    if tracer is False:
        return _OFF
    attributes = {
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.agent.name": f"shoal.{workflow}",
        "gen_ai.conversation.id": run_id,
        "shoal.run.id": run_id,
        "shoal.workflow": workflow,
    }
    return _span(tracer, f"invoke_agent shoal.{workflow}", attributes)


def step_span(run_id: str, step_id: str, specialist: str) -> AbstractContextManager[Any]:
    """A plan step: a specialist working, with its ladder's calls inside."""
    tracer = _current()
    if tracer is False:
        return _OFF
    attributes = {
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.agent.name": specialist,
        "gen_ai.conversation.id": run_id,
        "shoal.run.id": run_id,
        "shoal.step.id": step_id,
    }
    return _span(tracer, f"invoke_agent {specialist}", attributes)


def chat_span(backend: str, model: str, temperature: float, max_tokens: int | None) -> AbstractContextManager[Any]:
    """One model call; `replied` adds what came back."""
    tracer = _current()
    if tracer is False:
        return _OFF
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.system": backend,
        "gen_ai.provider.name": backend,
        "gen_ai.request.model": model,
        "gen_ai.request.temperature": temperature,
    }
    if max_tokens is not None:
        attributes["gen_ai.request.max_tokens"] = max_tokens
    return _span(tracer, f"chat {model}", attributes)


def replied(
    span: Any,
    *,
    model: str,
    input_tokens: int,
    output_tokens: int,
    finish_reason: str | None,
    cost_usd: float,
) -> None:
    if span is None:
        return
    span.set_attribute("gen_ai.response.model", model)
    span.set_attribute("gen_ai.usage.input_tokens", input_tokens)
    span.set_attribute("gen_ai.usage.output_tokens", output_tokens)
    if finish_reason:
        span.set_attribute("gen_ai.response.finish_reasons", [finish_reason])
    if cost_usd:
        span.set_attribute("shoal.cost_usd", cost_usd)


def mark(span: Any, key: str, value: str | int | float | bool) -> None:
    """One more attribute on a span (nothing when tracing is off)."""
    if span is not None:
        span.set_attribute(key, value)


__all__ = ["chat_span", "enabled", "mark", "replied", "run_span", "step_span", "use"]
