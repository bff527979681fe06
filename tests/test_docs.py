"""README.md documents every setting (with its true default), route and command, and nothing that
does not exist; the OpenAPI description covers exactly the API's routes."""

import re
from pathlib import Path
from typing import Any

import click
import pytest
from starlette.routing import Route

from tsapi import openapi
from tsapi.app import create_app
from tsapi.cli import cli
from tsapi.settings import Settings

README = Path(__file__).parent.parent / "README.md"


def section(title: str) -> str:
    """The text of README's ``## title`` section up to its first subsection."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^##|\Z)", README.read_text(), re.M | re.S)
    assert match, f"README.md has no '## {title}' section"
    return match.group(1)


def table_rows(text: str) -> list[list[str]]:
    """The cells of every table row in ``text`` but the headers and rules."""
    rows = []
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("|") and not set(cells[0]) <= {"-", " "}:
            rows.append(cells)
    return [row for row in rows if row[0] not in ("setting", "route", "command")]


def app_routes(settings: Settings) -> set[str]:
    """Every ``METHOD /path`` the app answers (HEAD aside, which comes with GET)."""
    found = set()
    for route in create_app(settings).routes:
        if isinstance(route, Route):
            methods = set(route.methods or ()) - {"HEAD"}
            found |= {f"{method} {route.path}" for method in methods}
    return found


def shown(value: Any) -> str:
    """A default as README writes it."""
    if value is None:
        return "unset"
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value)


def test_every_setting_is_documented_with_its_default() -> None:
    documented = {
        row[0].strip("`"): row[1].strip("`") for row in table_rows(section("Configuration"))
    }
    defaults = Settings.model_construct().model_dump(mode="json")
    assert sorted(documented) == sorted(defaults)
    assert documented == {name: shown(value) for name, value in defaults.items()}


def test_every_route_is_documented(clean_env: Path) -> None:
    documented = {row[0].strip("`") for row in table_rows(section("Routes"))}
    assert documented == app_routes(Settings())


def test_the_openapi_description_covers_exactly_the_apis_routes(clean_env: Path) -> None:
    described = {
        f"{method.upper()} {path}"
        for path, operations in openapi.SPEC["paths"].items()
        for method in operations
    }
    # The description and its page describe the API; they are not part of it.
    documentation = {
        f"{method} {route.path}"
        for route in openapi.routes
        if isinstance(route, Route)
        for method in route.methods or ()
        if method != "HEAD"
    }
    assert described == app_routes(Settings()) - documentation


def test_every_command_is_documented() -> None:
    documented = {
        name.strip("`") for row in table_rows(section("Commands")) for name in row[0].split(" / ")
    }
    commands: list[tuple[str, click.Command]] = [("tsapi", cli)]
    found = set()
    while commands:
        name, command = commands.pop()
        if isinstance(command, click.Group):
            commands += [(f"{name} {sub}", c) for sub, c in command.commands.items()]
        else:
            found.add(name)
    assert found <= documented, "undocumented commands"
    assert documented - found <= {"tsapi"}  # serve's short form


@pytest.mark.parametrize("title", ["Configuration", "Routes", "Commands"])
def test_the_tables_read_here_exist(title: str) -> None:
    assert table_rows(section(title))
