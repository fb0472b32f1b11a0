"""The web playground: one static page at ``/`` and its files under ``/static``, no build step.

The page talks to the WebSocket and session routes like any other client; it
renders model output with ``textContent`` only, and the CSP keeps it to this
origin (Chromium counts same-origin ``ws:``/``wss:`` as ``'self'``).
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

__all__ = ["STATIC_DIR", "playground_routes"]

STATIC_DIR = Path(__file__).resolve().parent / "static"
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; connect-src 'self'; img-src 'self' data:; object-src 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


async def _index(request: Request) -> Response:
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)


def playground_routes() -> list[BaseRoute]:
    """``GET /`` and ``GET /static/{file}``; StaticFiles refuses any path that resolves outside ``static/``."""
    return [
        Route("/", _index, methods=["GET", "HEAD"]),
        Mount("/static", app=StaticFiles(directory=STATIC_DIR), name="static"),
    ]
