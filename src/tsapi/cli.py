"""The ``tsapi`` command. It only parses options and delegates; ``serve`` is the default."""

import asyncio
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

import asyncpg
import click
import structlog
from click_default_group import DefaultGroup

from tsapi import exporter, import_sources, importer, keys, middleware, server
from tsapi import status as db_status
from tsapi.embedded import EmbeddedPostgresError
from tsapi.errors import ApiError
from tsapi.logs import configure_logging
from tsapi.migrate import MigrationError
from tsapi.settings import Settings, SettingsError, load_settings
from tsapi.workers import WorkersFailed

log = structlog.get_logger(__name__)

T = TypeVar("T")

F = TypeVar("F", bound=Callable[..., Any])


def database_options(command: F) -> F:
    """Options every command that touches the database takes."""
    for option in reversed(
        [
            click.option(
                "--config",
                "config_file",
                type=click.Path(dir_okay=False, path_type=Path),
                help="TOML settings file (default: ./tsapi.toml if present).",
            ),
            click.option("--database-url", help="PostgreSQL URL; unset: embedded PostgreSQL."),
            click.option(
                "--data-dir",
                type=click.Path(file_okay=False, path_type=Path),
                help="Embedded PostgreSQL's data directory (default ./tsapi-data).",
            ),
        ]
    ):
        command = option(command)
    return command


def _settings(**flags: Any) -> Settings:
    try:
        settings = load_settings(**flags)
    except SettingsError as exc:
        raise click.ClickException(f"invalid settings:\n{exc}") from None
    configure_logging(settings)
    return settings


# What keeps tsapi from starting: the data directory, the database or its schema. Logged as one
# error event, without a traceback, since the message says all there is to say.
STARTUP_ERRORS = (
    EmbeddedPostgresError,
    MigrationError,
    WorkersFailed,
    OSError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
)


def _run(what: str, action: Callable[[], T]) -> T:
    try:
        return action()
    except STARTUP_ERRORS as exc:
        log.error(f"{what} failed", error=str(exc) or type(exc).__name__)
        raise SystemExit(1) from None


@click.group(cls=DefaultGroup, default="serve", default_if_no_args=True)
@click.version_option(package_name="tsapi")
def _cli() -> None:
    """tsapi: an HTTP API for time-series sensor readings, stored in PostgreSQL."""


cli: click.Group = _cli  # DefaultGroup has no type hints


@cli.command()
@database_options
@click.option("--host", help="Address to listen on (default 127.0.0.1).")
@click.option("--port", type=int, help="Port to listen on (default 8000).")
@click.option("--workers", type=click.IntRange(min=1), help="HTTP server processes (default 1).")
def serve(**flags: Any) -> None:
    """Serve the HTTP API (the default command)."""
    settings = _settings(**flags)
    refusal = middleware.insecure_bind(settings)
    if refusal is not None:
        raise click.ClickException(refusal)
    _run("tsapi serve", lambda: server.serve(settings))


@cli.group("db")
def db_group() -> None:
    """Manage the database schema."""


@db_group.command()
@database_options
def upgrade(**flags: Any) -> None:
    """Apply the schema migrations the database lacks."""
    settings = _settings(**flags)
    applied = _run("tsapi db upgrade", lambda: server.upgrade(settings))
    names = ", ".join(f"{m.version:04d}_{m.name}" for m in applied) or "none: already up to date"
    click.echo(f"applied migrations: {names}")


@db_group.command()
@database_options
def status(**flags: Any) -> None:
    """Show partitions or chunks, rollup freshness and the policies that apply."""
    settings = _settings(**flags)
    found = _run("tsapi db status", lambda: server.on_database(settings, db_status.gather))
    click.echo("\n".join(db_status.report(found, settings)))


@cli.group("rollups")
def rollups_group() -> None:
    """Manage the rollups that answer aggregates."""


@rollups_group.command()
@database_options
@click.option(
    "--from", "start", required=True, type=click.DateTime(), help="Start (UTC), inclusive."
)
@click.option("--to", "end", required=True, type=click.DateTime(), help="End (UTC), exclusive.")
def rebuild(start: datetime, end: datetime, **flags: Any) -> None:
    """Recompute the rollups over a time range from the readings (after changes made to
    readings behind tsapi's back)."""
    if start >= end:
        raise click.BadParameter("--from must be earlier than --to", param_hint="--from")
    settings = _settings(**flags)
    start, end = start.replace(tzinfo=UTC), end.replace(tzinfo=UTC)
    kept_from, written = _run(
        "tsapi rollups rebuild", lambda: server.rebuild_rollups(settings, start, end)
    )
    if kept_from > start:
        click.echo(
            f"rollups before {min(kept_from, end):%Y-%m-%d %H:%M:%S} UTC were left as they are:"
            " no readings are kept before then (retention drops them, and their rollups are"
            " all that is left of them)"
        )
    if kept_from < end:
        click.echo(
            f"rebuilt rollups from {kept_from:%Y-%m-%d %H:%M:%S} to {end:%Y-%m-%d %H:%M:%S} UTC:"
            f" {written} rollup rows written"
        )


@cli.group("keys")
def keys_group() -> None:
    """Manage the API keys that requests authenticate with."""


@keys_group.command("create")
@database_options
@click.option(
    "--scope",
    required=True,
    type=click.Choice(keys.SCOPES),
    help="read: the GET routes; write: POST /readings only; admin: everything.",
)
@click.option("--name", help="What or who the key is for, shown by `tsapi keys list`.")
@click.option(
    "--sensor",
    "sensors",
    multiple=True,
    type=click.UUID,
    help="Restrict the key to this sensor's readings; repeat it for more.",
)
def create_key(
    scope: keys.Scope, name: str | None, sensors: tuple[UUID, ...], **flags: Any
) -> None:
    """Create a key and print it; it cannot be shown again."""
    settings = _settings(**flags)
    key_id, key = _run(
        "tsapi keys create",
        lambda: server.on_database(settings, lambda conn: keys.create(conn, scope, name, sensors)),
    )
    click.echo(f"created key {key_id} ({scope}); store it now, it cannot be shown again:", err=True)
    click.echo(key)


@keys_group.command("list")
@database_options
def list_keys(**flags: Any) -> None:
    """List the keys, revoked ones included (never their secrets)."""
    settings = _settings(**flags)
    found = _run("tsapi keys list", lambda: server.on_database(settings, keys.listing))
    click.echo("\n".join(keys.table(found)))


@keys_group.command("revoke")
@database_options
@click.argument("key_id")
def revoke_key(key_id: str, **flags: Any) -> None:
    """Revoke a key: every tsapi process refuses it within key_cache_seconds."""
    settings = _settings(**flags)
    revoked = _run(
        "tsapi keys revoke",
        lambda: server.on_database(settings, lambda conn: keys.revoke(conn, key_id)),
    )
    if revoked is None:
        raise click.ClickException(f"there is no key {key_id}")
    when, now = revoked
    click.echo(
        f"revoked key {key_id}"
        if now
        else f"key {key_id} was already revoked on {when.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"
    )


def http_options(command: F) -> F:
    """Options of commands that may go through a running tsapi's HTTP API."""
    for option in reversed(
        [
            click.option(
                "--url",
                help="A running tsapi to go through, e.g. http://127.0.0.1:8000"
                " (default: the configured host and port).",
            ),
            click.option("--token", help="API key, sent as Authorization: Bearer."),
        ]
    ):
        command = option(command)
    return command


def _on_ready(settings: Settings, action: Callable[[Settings], Coroutine[Any, Any, T]]) -> T:
    """What ``action`` returns, given settings pointing at a running database (an embedded one
    is started for it, and so needs its data directory not to be in use)."""
    with server.database(settings) as ready:
        return asyncio.run(action(ready))


def _url(settings: Settings, url: str | None) -> str:
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    return url or f"http://{host}:{settings.port}"


@cli.command("import")
@database_options
@http_options
@click.argument("files", nargs=-1, required=True)
@click.option(
    "--format", "fmt", type=click.Choice(import_sources.FORMATS), help="Default: by name."
)
@click.option("--direct", is_flag=True, help="Write into the database, not through --url.")
@click.option("--chunk-size", type=click.IntRange(min=1), default=5000, show_default=True)
@click.option("--retries", type=click.IntRange(min=0), default=5, show_default=True)
@click.option("--bucket", default="import", show_default=True, help="Line protocol's bucket.")
@click.option(
    "--precision",
    type=click.Choice(list(import_sources.PRECISIONS)),
    default="ns",
    show_default=True,
    help="Line protocol's timestamps' unit.",
)
def import_readings(
    files: tuple[str, ...],
    fmt: str | None,
    bucket: str,
    precision: str,
    url: str | None,
    token: str | None,
    direct: bool,
    chunk_size: int,
    retries: int,
    **flags: Any,
) -> None:
    """Import readings from FILES (JSON, NDJSON, CSV or line protocol, gzipped or not; - for
    stdin) in chunks, each written once: run it again after an interruption to resume."""
    settings = _settings(log_level="warning", **flags)
    try:
        sources = importer.open_sources(files, fmt, bucket, precision)
        started = importer.clock()
        if direct:
            totals = _run(
                "tsapi import",
                lambda: _on_ready(
                    settings, lambda ready: importer.run_direct(ready, sources, chunk_size)
                ),
            )
        else:
            run = importer.run_http(_url(settings, url), token, retries, sources, chunk_size)
            totals = asyncio.run(run)
    except import_sources.SourceError as exc:
        raise click.ClickException(
            f"{exc}; what came before it in whole chunks was written: fix it and run the same"
            " command again to resume"
        ) from None
    except (OSError, importer.ImportStopped) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(importer.summary(files, totals, importer.clock() - started))


@cli.command("export")
@database_options
@http_options
@click.option("--sensor", "sensors", multiple=True, help="Only this sensor (repeat for more).")
@click.option("--from", "start", help="Earliest ts, inclusive: RFC 3339 or relative (-1d).")
@click.option("--to", "end", help="Latest ts, exclusive: RFC 3339 or relative.")
@click.option("--metadata", help="A JSON object the readings' metadata must contain.")
@click.option("--order", type=click.Choice(["asc", "desc"]), default="asc", show_default=True)
@click.option("--format", "fmt", type=click.Choice(exporter.FORMATS), help="Default: by name.")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--direct", is_flag=True, help="Read the database, not through --url.")
def export_readings(
    sensors: tuple[str, ...],
    start: str | None,
    end: str | None,
    metadata: str | None,
    order: str,
    fmt: str | None,
    output: Path | None,
    url: str | None,
    token: str | None,
    direct: bool,
    **flags: Any,
) -> None:
    """Export readings as CSV, NDJSON or JSON, to stdout or --output, streamed."""
    settings = _settings(log_level="warning", **flags)
    params = exporter.parameters(
        sensors, start, end, metadata, order, exporter.format_of(output, fmt)
    )
    try:
        exporter.query_of(params, settings)  # bad parameters stop it before anything starts
        with exporter.destination(output) as write:
            if direct:
                _run(
                    "tsapi export",
                    lambda: _on_ready(
                        settings, lambda ready: exporter.from_database(ready, params, write)
                    ),
                )
            else:
                asyncio.run(exporter.from_http(_url(settings, url), token, params, write))
    except ApiError as exc:
        raise click.ClickException(exc.message) from None
    except (OSError, exporter.ExportError) as exc:
        raise click.ClickException(str(exc)) from None
