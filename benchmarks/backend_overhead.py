"""What shoal's EmbeddedBackend costs on top of calling llama.cpp directly.

The same 50 schema-constrained prompts go through `EmbeddedBackend.chat` and through
`llama_cpp.Llama.create_chat_completion` with exactly the arguments shoal sends (same grammar,
same sampling, a second Llama on the same file with the same settings), interleaved and
alternating which goes first, so drift in machine load hits both alike.

A third column times llama.cpp with `logits_all=False`, to show what keeping logprobs
available (the confidence signal) costs at the model level; that is a design choice, not
framework overhead, so it is reported apart from the ratio.

Run by hand: `uv run python benchmarks/backend_overhead.py [--n 50]`.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import llama_cpp
from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

from shoal.models.base import ChatRequest, Message
from shoal.models.embedded import BUNDLED, EmbeddedBackend, bundled_path, llama_kwargs


class Triage(BaseModel):
    category: str
    order_id: str | None
    urgent: bool


TEMPLATES = [
    "I want to cancel order {n}, please help",
    "Where is my package? Order number {n}",
    "I was charged twice for order {n}!!",
    "How do I change the shipping address on order {n}?",
    "My order {n} arrived broken, I need a refund now",
]


def prompts(n: int) -> list[ChatRequest]:
    return [
        ChatRequest(
            model="smollm2-135m",
            messages=[
                Message(role="system", content="Triage the support ticket. Answer with JSON only."),
                Message(role="user", content=TEMPLATES[i % len(TEMPLATES)].format(n=10_000 + i)),
            ],
            output_schema=Triage,
            max_tokens=96,
            seed=i,
        )
        for i in range(n)
    ]


async def main(n: int) -> None:
    path = bundled_path(BUNDLED["smollm2-135m"])
    backend = EmbeddedBackend()
    loaded = backend.model("smollm2-135m")
    direct = llama_cpp.Llama(model_path=str(path), n_ctx=2048, logits_all=True, verbose=False)
    lean = llama_cpp.Llama(model_path=str(path), n_ctx=2048, logits_all=False, verbose=False)
    requests = prompts(n)
    for warm in requests[:3]:  # first calls pay for page faults and grammar parsing
        await backend.chat(warm)
        direct.create_chat_completion(**llama_kwargs(warm))
        lean.create_chat_completion(**llama_kwargs(warm))

    shoal_s: list[float] = []
    direct_s: list[float] = []
    lean_s: list[float] = []
    tokens_equal = 0
    for i, request in enumerate(requests):
        order = [0, 1, 2] if i % 2 == 0 else [2, 1, 0]
        out: dict[int, str] = {}
        for which in order:
            started = time.perf_counter()
            if which == 0:
                out[0] = (await backend.chat(request)).text
                shoal_s.append(time.perf_counter() - started)
            elif which == 1:
                out[1] = direct.create_chat_completion(**llama_kwargs(request))["choices"][0]["message"]["content"]
                direct_s.append(time.perf_counter() - started)
            else:
                lean.create_chat_completion(**llama_kwargs(request))
                lean_s.append(time.perf_counter() - started)
        tokens_equal += out[0] == out[1]

    med = {
        name: statistics.median(v) * 1000 for name, v in [("shoal", shoal_s), ("direct", direct_s), ("lean", lean_s)]
    }
    table = Table(title=f"EmbeddedBackend vs llama_cpp, {n} schema-constrained prompts, SmolLM2-135M Q4_1")
    table.add_column("path")
    table.add_column("median ms", justify="right")
    table.add_column("p90 ms", justify="right")
    for name, values in [
        ("shoal EmbeddedBackend.chat", shoal_s),
        ("llama_cpp direct (same args)", direct_s),
        ("llama_cpp, logits_all=False", lean_s),
    ]:
        table.add_row(
            name,
            f"{statistics.median(values) * 1000:.1f}",
            f"{statistics.quantiles(values, n=10)[-1] * 1000:.1f}",
        )
    console = Console()
    console.print(table)
    console.print(f"ratio shoal / direct (median): [bold]{med['shoal'] / med['direct']:.3f}[/bold] (goal <= 1.03)")
    console.print(f"cost of logits_all (direct / lean): {med['direct'] / med['lean']:.3f}")
    console.print(f"identical outputs shoal vs direct: {tokens_equal}/{n}")
    del loaded


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50)
    asyncio.run(main(parser.parse_args().n))
