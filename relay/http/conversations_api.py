"""The Conversations API (RESPONSES.md §5), as openai-python 3.60's ``client.conversations`` calls it.

A conversation is a Relay session whose id is ``conv_<32 hex>``: one id space, so
the same thread is visible through ``/api/sessions``, the WebSocket and
``X-Session-Id`` under the same owner rules. Its items are the session's stored
messages, mapped by ``relay.wire.conversation_items`` (which also defines the
item ids). Writing items while the session is live would leave its actor with a
stale history, so every write first evicts the live copy (a 409 while a turn
runs) and the next turn reloads from the store.

Another user's conversation, an unknown one and a malformed id all answer the
same 404, in OpenAI's words and with OpenAI's ``invalid_request_error`` type.
"""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from relay.errors import InvalidRequest, NotFound
from relay.http.io import caller, int_param, read_json
from relay.http.schemas import parse_body
from relay.session.backend import Backend
from relay.wire.conversation_items import ItemRef, items_messages, message_items, parse_item_id
from relay.wire.responses_input import call_ids

__all__ = ["conversation_routes", "CreateConversationBody", "UpdateConversationBody", "AddItemsBody"]

MAX_ITEMS = 20
_PREFIX = "conv_"


class _Unfound(NotFound):
    """OpenAI answers a missing conversation or item with ``invalid_request_error`` (§4 "Errors"), not Relay's type."""

    error_type = "invalid_request_error"


def _metadata(metadata: dict[str, str] | None) -> dict[str, str]:
    """The §1 limits: at most 16 pairs, keys up to 64 characters, values up to 512."""
    metadata = metadata or {}
    if len(metadata) > 16:
        raise InvalidRequest("'metadata' holds at most 16 key-value pairs", param="metadata")
    for key, value in metadata.items():
        if len(key) > 64 or len(value) > 512:
            raise InvalidRequest(
                f"metadata {key[:64]!r}: keys are at most 64 characters, values at most 512", param="metadata"
            )
    return metadata


class CreateConversationBody(BaseModel):
    """``POST /v1/conversations``; unknown fields are ignored, as clients add fields in every release (§1)."""

    model_config = ConfigDict(extra="ignore")
    items: list[dict[str, Any]] | None = Field(default=None, max_length=MAX_ITEMS)
    metadata: dict[str, str] | None = None
    safety_identifier: str | None = None


class UpdateConversationBody(BaseModel):
    """``POST /v1/conversations/{id}``: ``metadata`` is required and nullable (null clears it)."""

    model_config = ConfigDict(extra="ignore")
    metadata: dict[str, str] | None


class AddItemsBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    items: list[dict[str, Any]] = Field(max_length=MAX_ITEMS)


def _conversation(session: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": session["session_id"],
        "object": "conversation",
        "created_at": int(session["created_at"]),
        "metadata": session.get("metadata") or {},
    }


def _page(items: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {
        "object": "list",
        "data": items,
        "first_id": items[0]["id"] if items else None,
        "last_id": items[-1]["id"] if items else None,
        "has_more": has_more,
    }


class ConversationRoutes:
    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.store = backend.store
        self.rows = backend.store

    async def _owned(self, request: Request) -> dict[str, Any]:
        """The caller's conversation named in the path, or the one 404 for missing, foreign and malformed ids."""
        conversation_id = request.path_params["conversation_id"]
        is_ours = conversation_id.startswith(_PREFIX)
        session = await self.store.offload(self.store.get_session, conversation_id) if is_ours else None
        if session is None or session["user_id"] != caller(request):
            raise _Unfound(f"Conversation with id '{conversation_id}' not found.")
        return session

    async def _evict(self, session_id: str) -> None:
        """Passivate the live copy (409 while a turn runs) so that the next turn reads the edited history.

        Every backend has ``evict`` (``StoredSessions``, ``RayBackend``); the ``Backend`` protocol does not declare it.
        """
        await self.backend.evict(session_id)  # type: ignore[attr-defined]

    async def _item(self, session_id: str, raw_id: str) -> tuple[ItemRef, dict[str, Any]]:
        ref = parse_item_id(raw_id)
        message = await self.rows.offload(self.rows.message_at, session_id, ref.seq) if ref is not None else None
        item = next((item for item in message_items(message) if item["id"] == raw_id), None) if message else None
        if ref is None or item is None:
            raise _Unfound(f"Item with id '{raw_id}' not found.")
        return ref, item

    async def _append(self, session_id: str, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Store the messages; answer the items the new rows hold, with their new ids."""
        added: list[dict[str, Any]] = []
        for message in messages:
            seq = await self.store.offload(self.store.append_message, session_id, message, None)
            added += message_items(message | {"seq": seq})
        return added

    async def create(self, request: Request) -> Response:
        body = parse_body(CreateConversationBody, await read_json(request))
        metadata = _metadata(body.metadata)
        owner = caller(request)
        messages = items_messages(body.items or [])  # a bad item is a 400 before anything is written
        session = await self.store.offload(
            self.store.create_session, owner, session_id=f"{_PREFIX}{uuid.uuid4().hex}", metadata=metadata
        )
        await self._append(session["session_id"], messages)
        return JSONResponse(_conversation(session))

    async def get(self, request: Request) -> Response:
        return JSONResponse(_conversation(await self._owned(request)))

    async def update(self, request: Request) -> Response:
        body = parse_body(UpdateConversationBody, await read_json(request))
        session = await self._owned(request)
        metadata = _metadata(body.metadata)
        updated = await self.store.offload(
            self.store.update_session, session["session_id"], session["user_id"], None, metadata=metadata
        )
        return JSONResponse(_conversation(updated))

    async def delete(self, request: Request) -> Response:
        session = await self._owned(request)
        await self.backend.delete_session(session["session_id"], session["user_id"])
        return JSONResponse({"id": session["session_id"], "object": "conversation.deleted", "deleted": True})

    async def list_items(self, request: Request) -> Response:
        session = await self._owned(request)
        limit = int_param(request, "limit", 1, 100) or 20
        order = request.query_params.get("order", "desc")
        if order not in ("asc", "desc"):
            raise InvalidRequest("'order' must be 'asc' or 'desc'", param="order")
        after: ItemRef | None = None
        if "after" in request.query_params:
            after = parse_item_id(request.query_params["after"])
            if after is None:
                raise InvalidRequest("'after' must be the id of an item of this conversation", param="after")
        descending = order == "desc"
        # Every row holds at least one item, and only the cursor's own row can be passed over entirely:
        # limit + 2 rows always give limit + 1 items past the cursor when there are that many.
        seq = after.seq if after is not None else None
        rows = await self.rows.offload(
            self.rows.message_rows,
            session["session_id"],
            from_seq=None if descending else seq,
            to_seq=seq if descending else None,
            limit=limit + 2,
            descending=descending,
        )
        items: list[dict[str, Any]] = []
        for row in rows:
            row_items = message_items(row)
            items += reversed(row_items) if descending else row_items
        if after is not None:
            items = [item for item in items if _past(item, after, descending)]
        return JSONResponse(_page(items[:limit], len(items) > limit))

    async def add_items(self, request: Request) -> Response:
        body = parse_body(AddItemsBody, await read_json(request))
        session = await self._owned(request)
        session_id = session["session_id"]
        # An output may answer a call made earlier in the conversation; a bad item is a 400 before the eviction.
        messages = items_messages(
            body.items, known_call_ids=call_ids(await self.store.offload(self.store.messages, session_id))
        )
        await self._evict(session_id)
        return JSONResponse(_page(await self._append(session_id, messages), False))

    async def get_item(self, request: Request) -> Response:
        session = await self._owned(request)
        return JSONResponse((await self._item(session["session_id"], request.path_params["item_id"]))[1])

    async def delete_item(self, request: Request) -> Response:
        session = await self._owned(request)
        session_id = session["session_id"]
        ref, _ = await self._item(session_id, request.path_params["item_id"])
        await self._evict(session_id)
        await self.rows.offload(self.rows.delete_message, session_id, ref.seq)
        return JSONResponse(_conversation(await self.store.offload(self.store.get_session, session_id) or session))


def _past(item: dict[str, Any], after: ItemRef, descending: bool) -> bool:
    ref = parse_item_id(item["id"])
    assert ref is not None  # message_items only makes ids that parse
    return ref.order < after.order if descending else ref.order > after.order


def conversation_routes(backend: Backend) -> list[Route]:
    routes = ConversationRoutes(backend)
    base = "/v1/conversations"
    item = base + "/{conversation_id}/items/{item_id}"
    return [
        Route(base, routes.create, methods=["POST"]),
        Route(base + "/{conversation_id}", routes.get, methods=["GET"]),
        Route(base + "/{conversation_id}", routes.update, methods=["POST"]),
        Route(base + "/{conversation_id}", routes.delete, methods=["DELETE"]),
        Route(base + "/{conversation_id}/items", routes.list_items, methods=["GET"]),
        Route(base + "/{conversation_id}/items", routes.add_items, methods=["POST"]),
        Route(item, routes.get_item, methods=["GET"]),
        Route(item, routes.delete_item, methods=["DELETE"]),
    ]
