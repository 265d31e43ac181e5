"""`shoal models`: backends, their health and their models; `shoal models pull`."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer

from shoal.cli.common import ConfigOption, console, engine, escape, literal, print_json, real

if TYPE_CHECKING:
    from rich.progress import TaskID

models_app = typer.Typer(
    help="Backends, their health and their models.", invoke_without_command=True, rich_markup_mode=None
)


@models_app.callback()
def models(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output (the backends).")] = False,
    config: ConfigOption = None,
) -> None:
    """List each backend: reachable or not (and why), and its models; then how each specialist answers."""
    import asyncio

    if ctx.invoked_subcommand is not None:
        return
    shoal = engine(config)
    results = asyncio.run(shoal.closing(shoal.health()))
    if as_json:
        print_json(json.dumps([row.model_dump(mode="json") for row in results]))
        return
    from rich.table import Table

    table = Table(title="shoal backends", show_lines=True)
    table.add_column("backend")
    table.add_column("status")
    table.add_column("where")
    table.add_column("models")
    for row in results:
        # the reason and the names come from servers and config: escaped, so `[ollama]` stays in the text
        status = "[green]ready[/green]" if row.reachable else f"[red]unavailable[/red]\n{escape(row.reason)}"
        names = "\n".join(
            escape(m.name)
            + (f" ({m.size_bytes / 1e6:.0f} MB)" if m.size_bytes else "")
            + (f"\n  [dim]{escape(m.detail)}[/dim]" if m.detail else "")
            for m in row.models
        )
        table.add_row(row.backend, status, literal(row.where), names or "-")
    console.print(table)
    setups = Table(title="specialists")
    for column in ("specialist", "model", "threshold", "answers with"):
        setups.add_column(column, overflow="fold")
    for setup in shoal.specialist_settings():
        setups.add_row(literal(setup.name), literal(setup.model), f"{setup.threshold:.2f}", literal(setup.how))
    console.print(setups)
    trained = [f"{h.specialist} v{h.version}" + (" (active)" if h.active else "") for h in shoal.heads()]
    if trained:
        console.print(literal(f"trained heads: {', '.join(trained)} (`shoal heads` for their metrics)"))
    settings = shoal.settings
    console.print(
        f"default model: [bold]{escape(settings.default_model)}[/bold]   "
        f"frontier: {escape(settings.frontier_model or '-')}"
    )


@models_app.command("pull")
def models_pull(
    name: Annotated[str, typer.Argument(help="Ollama model to pull, e.g. qwen2.5:3b")],
    config: ConfigOption = None,
) -> None:
    """Pull a model into the Ollama server, with a progress bar."""
    import asyncio

    shoal = engine(config)

    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    async def pull() -> None:
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            console=real(console),
        ) as progress:
            tasks: dict[str, TaskID] = {}
            async for step in shoal.pull(name):
                key = step.digest or step.status
                if key not in tasks:
                    tasks[key] = progress.add_task(escape(step.status[:40]), total=step.total or None)
                progress.update(tasks[key], completed=step.completed or 0, total=step.total or None)

    asyncio.run(shoal.closing(pull()))
    console.print(f"pulled [bold]{escape(name)}[/bold] into {escape(shoal.settings.ollama.host)}")
