"""The one settings registry: every setting has a default and a line of help.

Precedence, highest first: command-line flags, ``TSAPI_*`` environment variables, ``tsapi.toml``.
"""

import os
import tomllib
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, Self
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import (
    BeforeValidator,
    Field,
    PlainSerializer,
    SecretStr,
    ValidationError,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from tsapi.durations import format_duration, parse_duration

CONFIG_FILE = Path("tsapi.toml")


class SettingsError(ValueError):
    """Settings tsapi cannot run with; the message names each bad setting and its source."""


def _to_duration(value: object) -> object:
    return parse_duration(value) if isinstance(value, str) else value


Duration = Annotated[
    timedelta,
    BeforeValidator(_to_duration),
    PlainSerializer(format_duration, return_type=str),
]


def _split_commas(value: object) -> object:
    return (
        [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, str)
        else value
    )


Durations = Annotated[tuple[Duration, ...], NoDecode, BeforeValidator(_split_commas)]
OptionalDuration = Duration | None
Origins = Annotated[tuple[str, ...], NoDecode, BeforeValidator(_split_commas)]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TSAPI_",
        env_ignore_empty=True,  # `TSAPI_DATABASE_URL=` in a compose file means unset
        extra="forbid",
        validate_default=True,
        frozen=True,
    )

    database_url: SecretStr | None = Field(
        None,
        description="PostgreSQL URL (postgresql://user:password@host:port/db). "
        "Unset: tsapi starts an embedded PostgreSQL in data_dir.",
    )
    data_dir: Path = Field(
        Path("tsapi-data"), description="Where the embedded PostgreSQL keeps its data."
    )
    host: str = Field("127.0.0.1", description="Address the HTTP server listens on.")
    port: int = Field(8000, ge=0, le=65535, description="Port the HTTP server listens on.")
    partition_interval: Duration = Field(
        timedelta(days=1),
        description="Width of each readings partition (or TimescaleDB chunk), e.g. 1d or 6h.",
    )
    max_body_bytes: int = Field(
        16 * 1024 * 1024, ge=1, description="Largest request body accepted, in bytes (413 above)."
    )
    max_rows_per_request: int = Field(
        100_000, ge=1, description="Most readings one POST may carry (413 above)."
    )
    max_body_bytes_ndjson: int = Field(
        4 * 1024**3,
        ge=1,
        description="Largest NDJSON body POST /readings accepts, decompressed, in bytes (413 "
        "above); streamed, so it bounds time, not memory.",
    )
    max_body_bytes_csv: int = Field(
        4 * 1024**3,
        ge=1,
        description="Largest CSV body POST /readings accepts, decompressed, in bytes (413 above).",
    )
    max_body_bytes_lineprotocol: int = Field(
        4 * 1024**3,
        ge=1,
        description="Largest line protocol body /api/v2/write and /write accept, decompressed, in "
        "bytes (413 above).",
    )
    idempotency_retention: Duration = Field(
        timedelta(hours=24),
        description="How long an Idempotency-Key is remembered: a retry within it answers the "
        "first answer and writes nothing again.",
    )
    dedupe: Literal["off", "skip", "replace"] = Field(
        "off",
        description="De-duplication on (sensor, ts): off (store every reading), skip (keep the "
        "stored one) or replace (the new one's value and metadata win); needs a unique index.",
    )
    default_limit: int = Field(100, ge=1, description="Rows GET /readings answers without ?limit.")
    max_limit: int = Field(10_000, ge=1, description="Largest ?limit GET /readings accepts.")
    pool_min_size: int = Field(2, ge=0, description="Database connections kept open per process.")
    pool_max_size: int = Field(10, ge=1, description="Most database connections per process.")
    pool_timeout: float = Field(
        10.0, gt=0, description="Seconds a request waits for a free database connection."
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Least severe log level written."
    )
    log_format: Literal["auto", "json", "console"] = Field(
        "auto", description="Log format; auto means console on a terminal, JSON otherwise."
    )
    rollup_widths: Durations = Field(
        (timedelta(minutes=1), timedelta(hours=1)),
        description="Bucket widths of the rollups kept for aggregates, e.g. 1m,1h; empty: none.",
    )
    rollup_refresh_interval: float = Field(
        5.0, gt=0, description="Seconds between rollup refreshes (in one process at a time)."
    )
    max_points: int = Field(
        100_000, ge=1, description="Most buckets one aggregate query may ask for (400 above)."
    )
    statement_timeout: float = Field(
        30.0, gt=0, description="Seconds a query may run before it is cancelled (503)."
    )
    connect_timeout: float = Field(
        5.0, gt=0, description="Seconds one attempt to open a database connection may take."
    )
    database_pooler: Literal["none", "pgbouncer"] = Field(
        "none",
        description="pgbouncer when database_url goes through PgBouncer in transaction pooling "
        "mode: no named prepared statements and no session state on it.",
    )
    direct_database_url: SecretStr | None = Field(
        None,
        description="Unpooled URL of the same database, for what needs a session (migrations, "
        "rollup refresh, maintenance, the cache's LISTEN). Unset: database_url.",
    )
    workers: int = Field(
        1, ge=1, description="HTTP server processes; they share only the database."
    )
    shutdown_timeout: float = Field(
        30.0, gt=0, description="Seconds a stop signal lets in-flight requests finish."
    )
    cache_ttl: float = Field(
        0.0, ge=0, description="Seconds a GET answer may be served from cache; 0: no cache."
    )
    cache_max_bytes: int = Field(
        64 * 1024 * 1024, ge=0, description="Most bytes of answers cached per process."
    )
    maintenance_interval: float = Field(
        600.0,
        gt=0,
        description="Seconds between maintenance rounds (partitions, retention, compression).",
    )
    retention: OptionalDuration = Field(
        None,
        description="Readings older than this are dropped, whole partitions or chunks at "
        "a time; unset: kept.",
    )
    rollup_retention: OptionalDuration = Field(
        None,
        description="Rollup rows older than this are dropped; unset: kept. At least retention.",
    )
    compress_after: OptionalDuration = Field(
        None,
        description="TimescaleDB: chunks older than this are compressed, segmented by "
        "sensor; unset: none.",
    )
    auth: Literal["auto", "required", "off"] = Field(
        "auto",
        description="Whether requests need an API key: auto (as soon as any key exists), "
        "required, or off.",
    )
    metrics: bool = Field(
        True,
        description="Count requests, readings and errors and serve them at GET /metrics; off, "
        "that route is a 404 and requests are not counted.",
    )
    allow_insecure_bind: bool = Field(
        False,
        description="Insecure: serve on a non-loopback host although auth is not required.",
    )
    key_cache_seconds: float = Field(
        5.0,
        ge=0,
        description="Seconds each process remembers an API key lookup: a revoked key is "
        "refused within this time.",
    )
    rate_limit: str | None = Field(
        None,
        pattern=r"^[1-9][0-9]*/[smh]$",
        description="Requests per key (per client address without one), per process: N/s, N/m "
        "or N/h; unset: no limit.",
    )
    rate_limit_burst: int | None = Field(
        None, ge=1, description="Requests a client may make at once; unset: rate_limit's N."
    )
    cors_origins: Origins | None = Field(
        None,
        description="Origins browsers may call the API from, comma-separated (* for any); "
        "unset: none.",
    )
    body_timeout: float = Field(
        60.0,
        gt=0,
        description="Seconds a request's body may stop arriving for, and its grace before "
        "body_min_rate applies (408 past either).",
    )
    body_min_rate: int = Field(
        1024,
        gt=0,
        description="Bytes per second a request's body must average once it has taken "
        "body_timeout seconds.",
    )
    keep_alive_timeout: int = Field(
        5, ge=1, description="Seconds an idle keep-alive connection is kept open."
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        for low, high in (("pool_min_size", "pool_max_size"), ("default_limit", "max_limit")):
            if getattr(self, low) > getattr(self, high):
                raise ValueError(
                    f"{low} ({getattr(self, low)}) is more than {high} ({getattr(self, high)})"
                )
        if self.database_pooler == "pgbouncer" and (
            self.database_url is None or self.direct_database_url is None
        ):
            # Migrations, the refresher's locks and LISTEN need a session of their own.
            raise ValueError(
                "database_pooler = pgbouncer needs database_url (through PgBouncer) and"
                " direct_database_url (to PostgreSQL itself)"
            )
        if self.rollup_retention is not None and (
            self.retention is None or self.rollup_retention < self.retention
        ):
            # Rollups answer aggregates wherever they exist: dropped before the readings, they
            # would hide readings that are still there.
            raise ValueError("rollup_retention must be set with retention, and be at least it")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, TomlConfigSettingsSource(settings_cls)


def load_settings(config_file: Path | None = None, **flags: Any) -> Settings:
    """Settings from flags (those not None), the environment and a TOML file.

    The file is ``config_file`` when given (it must exist), else ``./tsapi.toml`` if present.
    Raises SettingsError naming every bad setting and where its value came from.
    """
    if config_file is not None and not config_file.is_file():
        raise SettingsError(f"config file {config_file} does not exist")
    path = config_file or CONFIG_FILE
    given = {name: value for name, value in flags.items() if value is not None}

    class FromFile(Settings):
        model_config = SettingsConfigDict(toml_file=path)

    try:
        return FromFile(**given)
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{path}: {exc}") from None
    except ValidationError as exc:
        problems = [_describe(error, given, path) for error in exc.errors()]
        raise SettingsError("\n".join(problems)) from None


def _describe(error: Any, flags: dict[str, Any], path: Path) -> str:
    reason = str(error["ctx"]["error"]) if error["type"] == "value_error" else error["msg"]
    if not error["loc"]:  # a rule across settings; its reason names them
        return reason
    name = str(error["loc"][0])
    if error["type"] == "extra_forbidden":
        return f"{name} (in {path}) is not a setting"
    variable = f"TSAPI_{name.upper()}"
    if name in flags:
        source = f"--{name.replace('_', '-')}"
    else:
        source = variable if os.environ.get(variable) else str(path)
    # URLs may hold a password.
    shown = "" if name.endswith("database_url") else f" (got {error['input']!r})"
    return f"{name} (from {source}): {reason}{shown}"


def redact_url(url: str) -> str:
    """The URL with any password (in its user part or its query) replaced, safe to print."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "<unparsable URL>"
    if password is not None:
        host = parts.netloc.rsplit("@", 1)[1]
        parts = parts._replace(netloc=f"{parts.username or ''}:***@{host}")
    query = parse_qsl(parts.query, keep_blank_values=True)
    if any(key == "password" for key, _ in query):
        hidden = [(key, "***" if key == "password" else value) for key, value in query]
        parts = parts._replace(query=urlencode(hidden, safe="*/"))
    return urlunsplit(parts)
