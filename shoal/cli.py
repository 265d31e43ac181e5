"""The `shoal` command."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel, create_model
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn
from rich.table import Table

from shoal.backends import build_backend, build_router
from shoal.config import Settings
from shoal.errors import ShoalError
from shoal.models.base import BACKENDS, ChatRequest, Message, ModelRef, RetryPolicy

app = typer.Typer(
    name="shoal",
    help="A graph of small specialist models that knows when to ask a bigger one.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
models_app = typer.Typer(help="Backends, their health and their models.", invoke_without_command=True)
app.add_typer(models_app, name="models")

console = Console()
err = Console(stderr=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", help="shoal.toml to use (default: SHOAL_CONFIG, ./shoal.toml, user config dir)"
    ),
]

_FIELD_TYPES: dict[str, Any] = {"str": str, "int": int, "float": float, "bool": bool, "list": list[str]}


def _settings(config: Path | None) -> Settings:
    return Settings.load(config)


def fields_model(spec: str) -> type[BaseModel]:
    """`order_id:str,urgent:bool` -> a pydantic model with those required fields."""
    fields: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, kind = part.partition(":")
        kind = kind.strip() or "str"
        if not name.strip().isidentifier() or kind not in _FIELD_TYPES:
            raise typer.BadParameter(
                f"field {part!r} must be NAME:TYPE with TYPE one of {', '.join(_FIELD_TYPES)}",
                param_hint="--fields",
            )
        fields[name.strip()] = (_FIELD_TYPES[kind], ...)
    if not fields:
        raise typer.BadParameter("give at least one NAME:TYPE", param_hint="--fields")
    model: type[BaseModel] = create_model("Answer", **fields)
    return model


@app.command()
def ask(
    prompt: Annotated[str, typer.Argument(help="What to ask; '-' reads standard input.")],
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="backend:model, e.g. ollama:qwen2.5:3b")
    ] = None,
    fields: Annotated[
        str | None,
        typer.Option(help="Structured answer with these fields, e.g. 'order_id:str,urgent:bool'."),
    ] = None,
    max_tokens: Annotated[int, typer.Option(help="Most tokens to generate.")] = 256,
    config: ConfigOption = None,
) -> None:
    """One model call through shoal's backends; with --fields the answer is validated JSON."""
    settings = _settings(config)
    text = sys.stdin.read() if prompt == "-" else prompt
    ref = ModelRef.parse(model or settings.default_model)
    schema = fields_model(fields) if fields else None
    system = "Answer with a JSON object only." if schema else "You are a helpful assistant. Answer briefly."
    request = ChatRequest(
        model=ref.name,
        messages=[Message(role="system", content=system), Message(role="user", content=text)],
        output_schema=schema,
        max_tokens=max_tokens,
        logprobs=True,
        top_logprobs=1,
    )

    async def go() -> None:
        router = build_router(settings)
        try:
            reply = await router.chat(ref, request)
        finally:
            await router.aclose()
        if reply.parsed is not None:
            console.print_json(reply.parsed.model_dump_json())
        else:
            console.print(reply.text)
        mean_p = sum(t.prob for t in reply.logprobs) / len(reply.logprobs) if reply.logprobs else None
        confidence = f", mean token p={mean_p:.2f}" if mean_p is not None else ""
        err.print(
            f"[dim]{reply.ref}: {reply.usage.input_tokens} in / {reply.usage.output_tokens} out, "
            f"{reply.latency_s:.2f}s{confidence}[/dim]"
        )

    asyncio.run(go())


@models_app.callback()
def models(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    config: ConfigOption = None,
) -> None:
    """List each backend: reachable or not (and why), and its models."""
    if ctx.invoked_subcommand is not None:
        return
    settings = _settings(config)
    # A health check should answer quickly: one attempt, no backoff.
    settings.retry = RetryPolicy(attempts=1)

    async def check() -> list[Any]:
        results: list[Any] = []
        for name in BACKENDS:
            try:
                backend = build_backend(name, settings)
            except ShoalError as exc:
                results.append(
                    {"backend": name, "reachable": False, "where": "", "reason": str(exc), "models": []}
                )
                continue
            try:
                results.append((await backend.health()).model_dump())
            finally:
                await backend.aclose()
        return results

    results = asyncio.run(check())
    if as_json:
        console.print_json(json.dumps(results))
        return
    table = Table(title="shoal backends", show_lines=True)
    table.add_column("backend")
    table.add_column("status")
    table.add_column("where")
    table.add_column("models")
    for row in results:
        status = "[green]ready[/green]" if row["reachable"] else f"[red]unavailable[/red]\n{row['reason']}"
        names = "\n".join(
            f"{m['name']}"
            + (f" ({m['size_bytes'] / 1e6:.0f} MB)" if m["size_bytes"] else "")
            + (f"\n  [dim]{m['detail']}[/dim]" if m["detail"] else "")
            for m in row["models"]
        )
        table.add_row(row["backend"], status, row["where"], names or "-")
    console.print(table)
    console.print(
        f"default model: [bold]{settings.default_model}[/bold]   frontier: {settings.frontier_model or '-'}"
    )


@models_app.command("pull")
def models_pull(
    name: Annotated[str, typer.Argument(help="Ollama model to pull, e.g. qwen2.5:3b")],
    config: ConfigOption = None,
) -> None:
    """Pull a model into the Ollama server, with a progress bar."""
    from shoal.models.ollama import OllamaBackend

    settings = _settings(config)

    async def pull() -> None:
        backend = OllamaBackend(settings.ollama.host, retry=RetryPolicy(attempts=1))
        try:
            with Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                console=console,
            ) as progress:
                tasks: dict[str, Any] = {}
                async for step in backend.pull(name):
                    key = step.digest or step.status
                    if key not in tasks:
                        tasks[key] = progress.add_task(step.status[:40], total=step.total or None)
                    progress.update(tasks[key], completed=step.completed or 0, total=step.total or None)
        finally:
            await backend.aclose()
        console.print(f"pulled [bold]{name}[/bold] into {settings.ollama.host}")

    asyncio.run(pull())


def main() -> None:
    try:
        app()
    except ShoalError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        sys.exit(1)
    except ValueError as exc:  # bad model references and the like, already worded for people
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
