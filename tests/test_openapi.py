"""The OpenAPI description tsapi serves, and its docs page as a browser renders it, offline."""

import shutil
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from openapi_spec_validator import validate
from playwright.sync_api import Request, Route, sync_playwright

from tests.conftest import Tsapi, start_tsapi

# A name the browser resolves to the loopback address and nothing else resolves at all: the page
# is seen as served from a real host (some docs pages only phone home from those), and any
# address other than tsapi's fails without leaving the machine.
DOCS_HOST = "tsapi.test"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    f"--host-resolver-rules=MAP {DOCS_HOST} 127.0.0.1, MAP * ~NOTFOUND",
]


def chromium_executable() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    raise RuntimeError(
        "no Chromium found on PATH: the docs page is tested in a real browser; "
        "install one (apt-get install chromium, or playwright install chromium)"
    )


@pytest.fixture(scope="module")
def docs_tsapi(make_database: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tsapi]:
    server = start_tsapi(make_database("embedded"), tmp_path_factory.mktemp("docs") / "tsapi.log")
    yield server
    server.stop()


def test_openapi_json_is_a_valid_openapi_3_0_description(docs_tsapi: Tsapi) -> None:
    response = httpx.get(f"{docs_tsapi.base_url}/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    spec = response.json()
    assert spec["openapi"].startswith("3.0.")
    validate(spec)


def test_the_docs_page_shows_both_readings_operations_without_leaving_tsapi(
    docs_tsapi: Tsapi,
) -> None:
    port = urlsplit(docs_tsapi.base_url).port
    origin = f"http://{DOCS_HOST}:{port}"
    requested: list[str] = []
    elsewhere: list[str] = []

    def only_tsapi(route: Route, request: Request) -> None:
        requested.append(request.url)
        if request.url.startswith(f"{origin}/"):
            route.continue_()
        else:
            elsewhere.append(request.url)
            route.abort()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium_executable(), args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page()
            page.route("**/*", only_tsapi)
            page.goto(f"{origin}/docs")
            for method in ("post", "get"):
                operation = page.locator(f".opblock-{method}").filter(
                    has=page.locator(".opblock-summary-path", has_text="/readings")
                )
                operation.first.wait_for(state="visible")
                assert operation.count() >= 1
            page.wait_for_load_state("networkidle")
        finally:
            browser.close()

    assert elsewhere == []
    assert f"{origin}/openapi.json" in requested
