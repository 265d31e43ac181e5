"""`shoal serve` (the HTTP API) and `shoal tokens` (the bearer tokens it takes).

FastAPI, uvicorn and the Prometheus client load inside `serve` only, so `shoal --help` and
every other command start as fast as before; `tokens` needs the store, not the web stack.
"""

from __future__ import annotations

import importlib.util
import logging
from typing import Annotated

import typer

from shoal.cli.common import ConfigOption, console, engine, err, literal, settings
from shoal.errors import MissingExtraError

tokens_app = typer.Typer(
    help="Bearer tokens for `shoal serve`: create (shown once), list, revoke.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


def serve(
    host: Annotated[
        str | None, typer.Option("--host", help="Address to listen on (default: [serve] host, 127.0.0.1)")
    ] = None,
    port: Annotated[int | None, typer.Option("--port", help="Port to listen on (default: [serve] port, 8000)")] = None,
    work: Annotated[
        bool,
        typer.Option("--worker/--no-worker", help="Also triage queued tickets here, as a `shoal worker` would."),
    ] = True,
    config: ConfigOption = None,
) -> None:
    """Serve the HTTP API: submit tickets, read results, answer reviews, /metrics, OpenAPI at /docs.

    Every /v1 route needs `Authorization: Bearer TOKEN` (`shoal tokens create NAME`). Submitted
    tickets go on the database's work queue; this process works on it too unless --no-worker
    (then `shoal worker` processes do). Results go to the [serve] webhooks, signed with the
    secret in SHOAL_WEBHOOK_SECRET."""
    for module in ("fastapi", "uvicorn", "prometheus_client"):
        if importlib.util.find_spec(module) is None:
            raise MissingExtraError("`shoal serve`", "serve", module)
    import uvicorn

    from shoal.serve.app import create_app

    shoal = engine(config)
    chosen = shoal.settings.serve
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    console.print(
        literal(f"shoal serving on http://{host or chosen.host}:{port or chosen.port} (docs at /docs), "
                f"database {shoal.store.where}")
    )  # fmt: skip
    uvicorn.run(create_app(shoal, work=work), host=host or chosen.host, port=port or chosen.port, log_level="info")


@tokens_app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="Who or what uses the token, e.g. helpdesk-prod")],
    config: ConfigOption = None,
) -> None:
    """Make a token and print it; only its hash is kept, so it cannot be shown again."""
    from shoal.store import Store

    store = Store(settings(config).db_path)
    try:
        token = store.create_token(name)
    finally:
        store.close()
    typer.echo(token)
    err.print(literal(f"token '{name}' created: keep it now, it is not shown again"))


@tokens_app.command("list")
def list_(config: ConfigOption = None) -> None:
    """The tokens: name, first characters, created, last used, revoked."""
    from shoal.store import Store

    store = Store(settings(config).db_path)
    try:
        rows = store.api_tokens()
    finally:
        store.close()
    if not rows:
        console.print("no tokens: `shoal tokens create NAME` makes one")
        return
    from rich.table import Table

    table = Table("name", "token", "created", "last used", "revoked")
    for row in rows:
        table.add_row(
            literal(row.name),
            f"{row.prefix}…",
            f"{row.created_at:%Y-%m-%d %H:%M}",
            f"{row.last_used_at:%Y-%m-%d %H:%M}" if row.last_used_at else "never",
            f"{row.revoked_at:%Y-%m-%d %H:%M}" if row.revoked_at else "",
        )
    console.print(table)


@tokens_app.command("revoke")
def revoke(
    name: Annotated[str, typer.Argument(help="The token's name (`shoal tokens list`)")],
    config: ConfigOption = None,
) -> None:
    """Revoke a token at once: requests with it get 403."""
    from shoal.store import Store

    store = Store(settings(config).db_path)
    try:
        store.revoke_token(name)
    finally:
        store.close()
    console.print(literal(f"token '{name}' revoked"))
