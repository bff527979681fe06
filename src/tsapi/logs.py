"""Structured logs: readable on a terminal, one JSON object a line everywhere else.

tsapi's own structlog events and the stdlib logging of its libraries (uvicorn, asyncpg) go
through one handler and one chain, so a startup error from any of them is structured alike.
"""

import logging
import sys
from urllib.parse import parse_qs, unquote, urlsplit

import msgspec
import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from tsapi.settings import Settings


def secrets_of(settings: Settings) -> list[str]:
    """The passwords in the database URLs, as written and decoded: never to appear in a log."""
    found = []
    for setting in (settings.database_url, settings.direct_database_url):
        if setting is None:
            continue
        url = setting.get_secret_value()
        try:
            parts = urlsplit(url)
            found += [parts.password or "", *parse_qs(parts.query).get("password", [])]
        except ValueError:  # an unparsable URL is withheld whole
            found.append(url)
    return sorted({form for secret in found for form in (secret, unquote(secret)) if form})


def _redactor(secrets: list[str]) -> Processor:
    def redact(logger: WrappedLogger, method: str, line: str | EventDict) -> str | EventDict:
        # Runs on the rendered line, so exception texts and foreign messages are covered too.
        assert isinstance(line, str)
        for secret in secrets:
            line = line.replace(secret, "***")
        return line

    return redact


class _NamedWriteLogger(structlog.WriteLogger):
    """Writes tsapi's own lines straight to stderr: the stdlib's LogRecords, handler and
    formatter, which cost more than the request that an access line describes, are left to the
    libraries' logs."""

    def __init__(self, name: str) -> None:
        super().__init__(sys.stderr)
        self.name = name  # for add_logger_name


# A third of the stdlib json module's cost per line, which every request's access line pays.
# Values it cannot encode are written as their repr(), as structlog's own fallback does.
_ENCODER = msgspec.json.Encoder(enc_hook=repr)


def _dumps(event: EventDict, **_: object) -> str:
    return _ENCODER.encode(event).decode()


def _named_logger(name: str = "tsapi", *args: object) -> _NamedWriteLogger:
    return _NamedWriteLogger(name)


def configure_logging(settings: Settings) -> None:
    as_json = settings.log_format == "json" or (
        settings.log_format == "auto" and not sys.stderr.isatty()
    )
    # ConsoleRenderer formats exceptions itself and warns when format_exc_info did it first.
    render: list[Processor] = (
        [structlog.processors.format_exc_info, structlog.processors.JSONRenderer(serializer=_dumps)]
        if as_json
        else [structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())]
    )
    level = logging.getLevelNamesMapping()[settings.log_level.upper()]
    stamped: list[Processor] = [
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    redact = _redactor(secrets_of(settings))
    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, *stamped, *render, redact],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=_named_logger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=stamped,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                *render,
                redact,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)
