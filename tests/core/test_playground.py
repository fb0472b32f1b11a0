"""The playground's static routes in-process: the page, its files and their types, and no way out of ``static/``."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from relay.config import ProviderConfig, RelaySettings
from relay.http.app import build_app
from relay.http.playground import STATIC_DIR
from relay.session.local_backend import LocalBackend
from tests.fakes.openai_upstream import ServerThread


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    path = Path(tmp_path_factory.mktemp("playground")) / "relay.db"
    providers = [ProviderConfig(provider_id="echo", provider_type="echo", model="echo")]
    backend = LocalBackend(RelaySettings(store_url=f"sqlite:///{path}", providers=providers))
    with ServerThread(build_app(backend)) as running:
        yield running.url


async def raw_get(url: str, target: str) -> tuple[int, bytes]:
    """A request line sent as written: httpx would normalize ``..`` away before the server saw it."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    writer.write(f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    response = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


async def test_index_is_html_with_a_strict_policy(server: str) -> None:
    async with httpx.AsyncClient(base_url=server) as http:
        page = await http.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.text == (STATIC_DIR / "index.html").read_text()
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"
    for asset in ('src="/static/app.js"', 'href="/static/style.css"', 'data-testid="cancel"'):
        assert asset in page.text


@pytest.mark.parametrize(
    ("path", "media_type"), [("/static/app.js", "text/javascript"), ("/static/style.css", "text/css")]
)
async def test_static_files_have_their_types(server: str, path: str, media_type: str) -> None:
    async with httpx.AsyncClient(base_url=server) as http:
        response = await http.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].split(";")[0] == media_type
    assert response.content == (STATIC_DIR / path.removeprefix("/static/")).read_bytes()


@pytest.mark.parametrize(
    "target",
    [
        "/static/../playground.py",
        "/static/%2e%2e/playground.py",
        "/static/..%2fplayground.py",
        "/static/../../pyproject.toml",
        "/static//etc/passwd",
        "/static/nothing.js",
    ],
)
async def test_paths_outside_static_are_refused(server: str, target: str) -> None:
    status, body = await raw_get(server, target)
    assert status == 404
    assert b"import" not in body and b"[project]" not in body and b"root:" not in body


async def test_api_routes_still_answer_beside_the_page(server: str) -> None:
    async with httpx.AsyncClient(base_url=server) as http:
        providers = await http.get("/api/streaming/providers")
        missing = await http.get("/no/such/route")
    assert [p["provider_id"] for p in providers.json()["data"]] == ["echo"]
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found_error"
