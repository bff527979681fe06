"""The one settings registry: every setting has a default and a line of help.

Precedence, highest first: command-line flags, ``TSAPI_*`` environment variables, ``tsapi.toml``.
"""

from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, PlainSerializer, SecretStr
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from tsapi.durations import format_duration, parse_duration

CONFIG_FILE = Path("tsapi.toml")


def _to_duration(value: object) -> object:
    return parse_duration(value) if isinstance(value, str) else value


Duration = Annotated[
    timedelta,
    BeforeValidator(_to_duration),
    PlainSerializer(format_duration, return_type=str),
]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TSAPI_", extra="forbid", validate_default=True, frozen=True
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
    """
    if config_file is not None and not config_file.is_file():
        raise FileNotFoundError(f"config file {config_file} does not exist")
    given = {name: value for name, value in flags.items() if value is not None}

    class FromFile(Settings):
        model_config = SettingsConfigDict(toml_file=config_file or CONFIG_FILE)

    return FromFile(**given)


def redact_url(url: str) -> str:
    """The URL with any password replaced, safe to print and log."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))
