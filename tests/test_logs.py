"""tsapi's logs: one JSON object a line when not on a terminal, its libraries' lines included, and
never the database password."""

import json
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import httpx

from tests.conftest import server_url, sql, start_tsapi


def with_credentials(url: str, user: str, password: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:{quote(password, safe='')}@{host}"))


def records(text: str) -> list[dict[str, Any]]:
    lines = text.splitlines()
    assert lines
    return [json.loads(line) for line in lines]


def test_the_database_password_appears_nowhere_in_the_output(
    backend: str, embedded_server: str, make_database: Any, tmp_path: Path
) -> None:
    role, password = f"tsapi_{uuid.uuid4().hex[:8]}", f"Pw-{uuid.uuid4().hex}/@?"
    admin = server_url(backend, embedded_server)
    url = make_database(backend)
    sql(admin, f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
    try:
        sql(admin, f'ALTER DATABASE "{urlsplit(url).path[1:]}" OWNER TO {role}')
        secret_url = with_credentials(url, role, password)
        upgrade = subprocess.run(
            [sys.executable, "-m", "tsapi", "db", "upgrade", "--database-url", secret_url],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert upgrade.returncode == 0, upgrade.stderr
        log = tmp_path / "tsapi.log"
        tsapi = start_tsapi(secret_url, log, TSAPI_LOG_LEVEL="debug")
        body = [{"sensor": str(uuid.uuid4()), "value": 1}]
        assert httpx.post(f"{tsapi.base_url}/readings", json=body).json() == 1
        assert httpx.get(f"{tsapi.base_url}/readings?from=yesterday").status_code == 400
        tsapi.process.send_signal(signal.SIGTERM)
        assert tsapi.process.wait(60) == 0
        output = upgrade.stdout + upgrade.stderr + log.read_text()
        assert role in output  # the URL is shown, its password hidden
        for form in (password, quote(password, safe="")):
            assert form not in output
    finally:
        sql(admin, f'DROP DATABASE "{urlsplit(url).path[1:]}" WITH (FORCE)')  # all it owns
        sql(admin, f"DROP ROLE {role}")


def test_a_startup_error_of_the_http_server_is_a_json_line_like_every_other(
    make_database: Any, tmp_path: Path
) -> None:
    url = make_database("embedded")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "tsapi", "serve", "--port", str(port), "--database-url", url],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode != 0
    lines = records(result.stderr)
    assert all({"event", "level", "timestamp", "logger"} <= set(line) for line in lines)
    assert {"uvicorn.error", "tsapi.migrate"} <= {line["logger"] for line in lines}
    errors = [line for line in lines if line["level"] == "error"]
    assert len(errors) == 1
    assert "address already in use" in errors[0]["event"]
    assert errors[0]["logger"] == "uvicorn.error"


def test_a_value_json_cannot_hold_is_written_as_its_repr_and_the_line_stays_json() -> None:
    program = (
        "import structlog; from tsapi.logs import configure_logging; "
        "from tsapi.settings import Settings; "
        "configure_logging(Settings(log_format='json')); "
        "structlog.get_logger('tsapi.test').warning('odd', thing=range(3), ratio=float('nan'))"
    )
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    [line] = records(result.stderr)
    assert line["event"] == "odd"
    assert line["thing"] == "range(0, 3)"
    assert line["ratio"] is None  # JSON has no NaN
    assert line["level"] == "warning"
    assert line["logger"] == "tsapi.test"
