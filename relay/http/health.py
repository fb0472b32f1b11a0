"""Probes: ``GET /healthz`` (liveness: the ingress answers) and ``GET /readyz`` (readiness).

Ready means the directory answers and every pool, configured or registered, has a
running replica; a 503 names the first pool (or the directory) that is not, so a
load balancer or Kubernetes holds traffic until a fresh deploy can serve it.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from relay.session.backend import Backend

__all__ = ["probe_routes"]


def probe_routes(backend: Backend) -> list[Route]:
    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        state = await backend.ready()
        waiting = [pool for pool in state["pools"] if pool["replicas"] < 1]
        if state["directory"] != "ok":
            reason = f"the session directory {state['directory']}"
        elif waiting:
            reason = f"pool '{waiting[0]['provider_id']}' has no running replica (status {waiting[0]['status']})"
        else:
            return JSONResponse({"status": "ready"} | state)
        return JSONResponse({"status": "not_ready", "reason": reason} | state, status_code=503)

    return [Route("/healthz", healthz, methods=["GET"]), Route("/readyz", readyz, methods=["GET"])]
