"""The session API: create, list, read, patch (versioned), delete; history, runs and user memories.

Every route resolves the caller first and checks ownership in the store: another
user's session answers exactly like a missing one (404).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from relay.errors import InvalidRequest, PermissionDenied
from relay.http.io import caller, int_param, read_json
from relay.http.schemas import SESSION_ID_PATTERN, parse_body
from relay.session.backend import Backend

__all__ = ["session_routes"]

_HIDDEN = ("summary_seq",)


class CreateSessionBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # The owner, by the rule of relay.http.io.caller: the X-User-Id header's meaning without auth; with auth only
    # the key's own user.
    user_id: str | None = None
    session_id: str | None = Field(default=None, pattern=SESSION_ID_PATTERN)
    name: str | None = Field(default=None, max_length=200)
    agent_id: str | None = None
    team_id: str | None = None
    workflow_id: str | None = None
    session_data: dict[str, Any] = Field(default_factory=dict)
    metadata: dict[str, Any] = Field(default_factory=dict)


class PatchSessionBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, max_length=200)
    session_data: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    # The version the writer read; or send it as ``If-Match``. Without either the write is unconditional.
    version: int | None = Field(default=None, ge=1)


def _public(session: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in session.items() if key not in _HIDDEN}


def _etag(session: dict[str, Any]) -> dict[str, str]:
    return {"ETag": f'"{session["version"]}"'}


def _if_match(request: Request) -> int | None:
    raw = request.headers.get("if-match")
    if raw is None:
        return None
    try:
        return int(raw.strip().removeprefix("W/").strip('"'))
    except ValueError:
        raise InvalidRequest('If-Match must be the session\'s ETag, e.g. "3"', param="If-Match") from None


def _cursor(raw: str | None) -> tuple[float, str] | None:
    if raw is None:
        return None
    created, _, session_id = raw.partition("~")
    try:
        return float(created), session_id
    except ValueError:
        raise InvalidRequest("'cursor' must be the next_cursor of a previous page", param="cursor") from None


class SessionRoutes:
    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.store = backend.store

    async def create(self, request: Request) -> Response:
        body = parse_body(CreateSessionBody, await read_json(request))
        owner = caller(request, body.user_id)
        if body.session_id and await self.store.offload(self.store.get_session, body.session_id) is not None:
            raise InvalidRequest(f"Session '{body.session_id}' already exists", param="session_id")
        session = await self.store.offload(
            self.store.create_session, owner, **body.model_dump(exclude_none=True, exclude={"user_id"})
        )
        return JSONResponse(_public(session), status_code=201, headers=_etag(session))

    async def list(self, request: Request) -> Response:
        user_id = caller(request)
        if request.query_params.get("user_id", user_id) != user_id:
            raise PermissionDenied("You can list only your own sessions", param="user_id")
        limit = int_param(request, "limit", 1, 200) or 20
        sessions = await self.store.offload(
            self.store.list_sessions, user_id, limit=limit, cursor=_cursor(request.query_params.get("cursor"))
        )
        last = sessions[-1] if len(sessions) == limit else None
        return JSONResponse(
            {
                "object": "list",
                "data": [_public(s) for s in sessions],
                "next_cursor": f"{last['created_at']!r}~{last['session_id']}" if last else None,
            }
        )

    async def get(self, request: Request) -> Response:
        session = await self.store.offload(self.store.owned_session, request.path_params["session_id"], caller(request))
        return JSONResponse(_public(session), headers=_etag(session))

    async def patch(self, request: Request) -> Response:
        body = parse_body(PatchSessionBody, await read_json(request))
        version = _if_match(request) or body.version
        session = await self.store.offload(
            self.store.update_session,
            request.path_params["session_id"],
            caller(request),
            version,
            **body.model_dump(exclude={"version"}, exclude_none=True),
        )
        return JSONResponse(_public(session), headers=_etag(session))

    async def delete(self, request: Request) -> Response:
        await self.backend.delete_session(request.path_params["session_id"], caller(request))
        return Response(status_code=204)

    async def messages(self, request: Request) -> Response:
        session_id = request.path_params["session_id"]
        await self.store.offload(self.store.owned_session, session_id, caller(request))
        limit = int_param(request, "limit", 1, 1000)
        before = int_param(request, "before", 0, None)
        return JSONResponse(
            {
                "session_id": session_id,
                "messages": await self.store.offload(self.store.messages, session_id, limit=limit, before=before),
            }
        )

    async def runs(self, request: Request) -> Response:
        session_id = request.path_params["session_id"]
        await self.store.offload(self.store.owned_session, session_id, caller(request))
        return JSONResponse({"session_id": session_id, "runs": await self.store.offload(self.store.runs, session_id)})

    def _own_user(self, request: Request) -> str:
        user_id = request.path_params["user_id"]
        if user_id != caller(request):
            raise PermissionDenied("You can read only your own memories", param="user_id")
        return user_id

    async def memories(self, request: Request) -> Response:
        user_id = self._own_user(request)
        return JSONResponse({"user_id": user_id, "memories": await self.store.offload(self.store.memories, user_id)})

    async def forget(self, request: Request) -> Response:
        user_id = self._own_user(request)
        deleted = await self.store.offload(self.store.delete_memories, user_id, request.query_params.get("memory_id"))
        return JSONResponse({"user_id": user_id, "deleted": deleted})


def session_routes(backend: Backend) -> list[Route]:
    routes = SessionRoutes(backend)
    return [
        Route("/api/sessions", routes.create, methods=["POST"]),
        Route("/api/sessions", routes.list, methods=["GET"]),
        Route("/api/sessions/{session_id}", routes.get, methods=["GET"]),
        Route("/api/sessions/{session_id}", routes.patch, methods=["PATCH"]),
        Route("/api/sessions/{session_id}", routes.delete, methods=["DELETE"]),
        Route("/api/sessions/{session_id}/messages", routes.messages, methods=["GET"]),
        Route("/api/sessions/{session_id}/runs", routes.runs, methods=["GET"]),
        Route("/api/users/{user_id}/memories", routes.memories, methods=["GET"]),
        Route("/api/users/{user_id}/memories", routes.forget, methods=["DELETE"]),
    ]
