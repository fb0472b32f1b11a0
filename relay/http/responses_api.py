"""The Responses API (``/v1/responses``) on session actors: a response is a run, a chain of responses is a session.

- ``previous_response_id`` continues that response's session in its actor: the history is not resent. When the id
  is not the session's latest run, the new response starts a branch whose context is exactly the chain ending at
  that response (parent pointers on the append-only runs; nothing is copied). Concurrent answers to one response
  queue in the actor and each sees only its own chain.
- ``conversation`` runs in that conversation's session (a conversation is a session, ``relay.http.conversations_api``).
- A response is durable before its first token (its row and the run's user message); its output is the run's stored
  events, encoded again on ``GET`` (the encoder is deterministic), never a second copy.
- ``store: false`` keeps nothing after the stream: no row, no messages, no run, no memory extraction.
- ``background: true`` answers at once (``queued``); the run goes on in its actor whatever the client does, and
  ``GET …?stream=true&starting_after=N`` replays it from the store and then follows it live, on any ingress replica.
- Every route is owner-checked: another user's response is a 404, as an unknown one.
The wire is ``relay.wire.responses`` (out) and ``relay.wire.responses_input`` (in).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from relay.errors import InvalidRequest, NotFound, RelayError, from_event
from relay.http.gateway import SESSION_HEADER, SSE_HEADERS, Gateway
from relay.http.io import caller, error_response, int_param, read_json
from relay.http.keepalive import event_stream
from relay.providers.media import normalize_messages
from relay.request import ChatRequest
from relay.session.runlog import Cursor
from relay.store import Store, new_id
from relay.types import Batches
from relay.wire.responses import ResponsesEncoder, response_skeleton
from relay.wire.responses_input import (
    ResponsesBody,
    call_ids,
    chat_params,
    check_body,
    conversation_id,
    input_items,
    input_messages,
    parse_body,
)
from relay.wire.responses_object import ECHO_FIELDS

__all__ = ["responses_routes"]

log = logging.getLogger("relay.responses")


class _Unfound(NotFound):
    """OpenAI's 404 body: ``invalid_request_error`` with ``param`` null (RESPONSES.md §4 "Errors")."""

    error_type = "invalid_request_error"


def _not_found(response_id: str) -> NotFound:
    return _Unfound(f"Response with id '{response_id}' not found.")


def _previous_not_found(response_id: str) -> InvalidRequest:
    return InvalidRequest(
        f"Previous response with id '{response_id}' not found.",
        param="previous_response_id",
        code="previous_response_not_found",
    )


# The helpers below read the store synchronously: the routes run each whole on the store's threads (``offload``).


def _output_item(store: Store, user_id: str, item_id: str) -> dict[str, Any] | None:
    """An output item by its id: ``<prefix>_<response hex>_<index>``, read from that response's stored run."""
    _, _, rest = item_id.partition("_")
    hex_id, _, index = rest.rpartition("_")
    if not hex_id or not index.isdigit():
        return None
    row = store.get_response(f"resp_{hex_id}", user_id)
    if row is None:
        return None
    output = _finished(store, row)["output"]
    return output[int(index)] if int(index) < len(output) else None


def _finished(store: Store, row: dict[str, Any]) -> dict[str, Any]:
    """The Response object as it stands: a finished run's events encoded again, else the skeleton in progress."""
    run = store.get_run(row["response_id"])
    skeleton = row["skeleton"]
    if run is None or run["status"] == "running":
        return skeleton | {"status": "in_progress" if run is not None else skeleton["status"]}
    stamp = run.get("finished_at") or time.time()
    encoder = ResponsesEncoder(skeleton, clock=lambda: stamp, **_encoding(row))
    encoder.start(queued=row["background"])
    encoder.encode(store.run_events(row["response_id"], 0))
    return encoder.response


def _encoding(row: dict[str, Any]) -> dict[str, Any]:
    """The encoder options the response was first streamed with (stored with its row)."""
    stored = row.get("encoding") or {}
    return {
        "include_encrypted": bool(stored.get("include_encrypted")),
        "server_tools": frozenset(stored.get("server_tools") or ()),
    }


def _earlier_items(store: Store, row: dict[str, Any], user_id: str) -> list[dict[str, Any]]:
    """What the responses before ``row`` in its chain (by ``previous_response_id``) each sent and answered."""
    chain = [row]
    while chain[-1]["previous_response_id"] and len(chain) < 10_000:
        parent = store.get_response(chain[-1]["previous_response_id"], user_id)
        if parent is None:
            break
        chain.append(parent)
    return [item for earlier in chain[:0:-1] for item in earlier["input_items"] + _finished(store, earlier)["output"]]


def responses_routes(gateway: Gateway) -> list[Route]:
    backend = gateway.backend
    store = backend.store

    async def create(request: Request) -> Response:
        body = parse_body(await read_json(request))
        check_body(body)
        user_id = caller(request)
        keep = body.store is not False
        conversation = conversation_id(body)
        parent = body.previous_response_id
        session_id: str | None = None
        earlier: list[dict[str, Any]] = []  # the context this response continues
        if parent is not None:
            parent_row = await store.offload(store.get_response, parent, user_id)
            if parent_row is None or await store.offload(store.get_run, parent) is None:
                raise _previous_not_found(parent)
            session_id = parent_row["session_id"]
            chain = await store.offload(store.run_chain, session_id, parent)
            earlier = await store.offload(store.chain_messages, session_id, chain)
        elif conversation is not None:
            session = await store.offload(store.get_session, conversation)
            if session is None or session["user_id"] != user_id:
                raise _Unfound(f"Conversation with id '{conversation}' not found.")
            session_id, earlier = conversation, await store.offload(store.messages, conversation)
        response_id = new_id("resp")
        messages = await store.offload(  # an item_reference is resolved from the store
            input_messages,
            body.input,
            resolve=lambda item_id: _output_item(store, user_id, item_id),
            known_call_ids=call_ids(earlier),
        )
        if not messages:
            raise InvalidRequest("'input' is required: a string or a list of items", param="input")
        params = chat_params(body)
        end_user = params.pop("user", None)

        def make(provider: str, model: str | None) -> ChatRequest:
            return ChatRequest(
                provider=provider,
                model=model,
                messages=normalize_messages(messages, gateway.media),
                params=params,
                provider_options=body.provider_options,
                user=end_user,
                memory=keep,
                run_id=response_id,
                parent_run_id=parent,
                instructions=body.instructions,
                store=keep,
            )

        chat = await gateway.plan(
            make, body.model, None, body.fallbacks, body.relay_tools, session_id=session_id, user_id=user_id
        )
        created_here = session_id is None
        if session_id is None:
            session_id = (await store.offload(store.create_session, user_id))["session_id"]
        skeleton = _skeleton(body, response_id, body.model or chat.model or chat.provider, conversation, keep)
        server_tools = frozenset(chat.tools.names if chat.tools else ())
        encoding = {"include_encrypted": body.include_encrypted, "server_tools": sorted(server_tools)}
        if keep:  # durable before the first token
            await store.offload(
                store.create_response,
                response_id,
                session_id,
                user_id,
                previous_response_id=parent,
                background=bool(body.background),
                skeleton=skeleton,
                input_items=input_items(body.input),
                encoding=encoding,
            )
        encoder = ResponsesEncoder(skeleton, include_encrypted=body.include_encrypted, server_tools=server_tools)
        headers = {SESSION_HEADER: session_id}
        if body.background:
            # Opened outside the request's context: a dropped caller must not cancel the run (Ray Serve cancels a
            # request's sub-tasks recursively); a task of the gateway's consumes it to its end.
            opening = gateway.open_run(session_id=session_id, user_id=user_id, request=chat)
            run = await asyncio.create_task(opening, context=contextvars.Context())
            started = _drain(gateway, run.batches, run.close)
            if body.stream:  # §4: created (queued), queued, in_progress, …: the stream a resume from 0 replays
                await started.wait()  # the run is in the store: its log can be followed
                stream = await follow(skeleton, user_id, -1, encoding)
                return event_stream(stream, gateway.keepalive_s, headers | SSE_HEADERS)
            return JSONResponse(skeleton, headers=headers)
        run = await gateway.open_run(session_id=session_id, user_id=user_id, request=chat)

        async def close() -> None:
            try:
                await run.close()
            finally:
                if not keep and created_here:  # store: false keeps nothing, not even the session it made
                    await backend.delete_session(session_id, user_id)

        if body.stream:
            return event_stream(_stream(encoder, run.batches, close), gateway.keepalive_s, headers | SSE_HEADERS)
        failure: dict[str, Any] | None = None
        try:
            async for batch in run.batches:
                failure = failure or next((event for event in batch if event["type"] == "error"), None)
                encoder.encode(batch)
        finally:
            await close()
        response = encoder.response
        if failure is not None and not response["output"]:
            return error_response(from_event(failure), headers)  # failed before any output: its real status
        return JSONResponse(response, headers=headers)

    async def retrieve(request: Request) -> Response:
        user_id = caller(request)
        response_id = request.path_params["response_id"]
        row = await store.offload(store.get_response, response_id, user_id)
        if row is None:
            raise _not_found(response_id)
        if request.query_params.get("stream") not in ("true", "1"):
            return JSONResponse(await store.offload(_finished, store, row))
        if not row["background"]:
            raise _not_found(response_id)  # only a background response streams again (RESPONSES.md §4)
        after = int_param(request, "starting_after", -1, None)
        stream = await follow(row["skeleton"], user_id, -1 if after is None else after, row["encoding"])
        return event_stream(stream, gateway.keepalive_s)

    async def follow(
        skeleton: dict[str, Any], user_id: str, after: int, encoding: dict[str, Any]
    ) -> AsyncIterator[bytes]:
        """A background response's stream from its run log (live, else stored), frames ``<= after`` left out."""
        encoder = ResponsesEncoder(skeleton, skip_through=after, **_encoding({"encoding": encoding}))
        batches = await gateway.run_events(skeleton["id"], user_id, Cursor.parse(0))
        return _stream(encoder, batches, _noop, queued=True)

    async def delete(request: Request) -> Response:
        response_id = request.path_params["response_id"]
        if not await store.offload(store.delete_response, response_id, caller(request)):
            raise _not_found(response_id)
        return JSONResponse({"id": response_id, "object": "response.deleted", "deleted": True})

    async def cancel(request: Request) -> Response:
        user_id = caller(request)
        response_id = request.path_params["response_id"]
        row = await store.offload(store.get_response, response_id, user_id)
        if row is None:
            raise _not_found(response_id)
        if not row["background"]:
            raise InvalidRequest("Only background responses can be cancelled.", param=None)
        run = await store.offload(store.get_run, response_id)
        if run is not None and run["status"] == "running" and await backend.cancel_run(row["session_id"], response_id):
            return JSONResponse(row["skeleton"] | {"status": "cancelled"})
        return JSONResponse(await store.offload(_finished, store, row))  # twice is idempotent: the final object

    async def list_input_items(request: Request) -> Response:
        user_id = caller(request)
        response_id = request.path_params["response_id"]
        row = await store.offload(store.get_response, response_id, user_id)
        if row is None:
            raise _not_found(response_id)
        items = await store.offload(_earlier_items, store, row, user_id) + row["input_items"]
        order = request.query_params.get("order", "desc")
        if order not in ("asc", "desc"):
            raise InvalidRequest("'order' must be 'asc' or 'desc'", param="order")
        if order == "desc":
            items.reverse()
        after = request.query_params.get("after")
        if after is not None:
            ids = [item.get("id") for item in items]
            if after not in ids:
                raise InvalidRequest(f"No item with id '{after}' in this list", param="after")
            items = items[ids.index(after) + 1 :]
        limit = int_param(request, "limit", 1, 100) or 20
        page = items[:limit]
        return JSONResponse(
            {
                "object": "list",
                "data": page,
                "first_id": page[0].get("id") if page else None,
                "last_id": page[-1].get("id") if page else None,
                "has_more": len(items) > limit,
            }
        )

    return [
        Route("/v1/responses", create, methods=["POST"]),
        Route("/v1/responses/{response_id}", retrieve, methods=["GET"]),
        Route("/v1/responses/{response_id}", delete, methods=["DELETE"]),
        Route("/v1/responses/{response_id}/cancel", cancel, methods=["POST"]),
        Route("/v1/responses/{response_id}/input_items", list_input_items, methods=["GET"]),
    ]


def _skeleton(
    body: ResponsesBody, response_id: str, model: str, conversation: str | None, keep: bool
) -> dict[str, Any]:
    echo = {key: getattr(body, key, None) for key in ECHO_FIELDS}
    return response_skeleton(
        response_id=response_id,
        created_at=int(time.time()),
        model=model,
        previous_response_id=body.previous_response_id,
        conversation_id=conversation,
        background=bool(body.background),
        store=keep,
        queued=bool(body.background),
        reasoning=body.reasoning,
        **echo,
    )


async def _noop() -> None:
    return None


def _drain(gateway: Gateway, batches: Batches, close: Callable[[], Awaitable[None]]) -> asyncio.Event:
    """Consume a background run to its end in a task of its own; the event is set once the run has started.

    Not ``gateway.detach``: a ``DetachedRun`` waits for an attached reader once ``QUEUED_EVENTS`` are queued (and,
    detached, cancels the run after a grace period), and a background run has no reader: its readers follow the
    session's run log. A run of more than 1024 events stalled there forever.
    """
    started = asyncio.Event()

    async def pump() -> None:
        try:
            async for _ in batches:
                started.set()
        except Exception:  # recorded by the session as the run's status; nobody here to tell
            log.warning("background run ended with an error", exc_info=True)
        finally:
            started.set()
            await close()

    task = asyncio.create_task(pump(), context=contextvars.Context())
    gateway.draining.add(task)
    task.add_done_callback(gateway.draining.discard)
    return started


async def _stream(
    encoder: ResponsesEncoder, batches: Batches, close: Any, *, queued: bool = False
) -> AsyncIterator[bytes]:
    try:
        yield encoder.start(queued=queued)
        if queued:
            yield encoder.begin()
        async for batch in batches:
            chunk = encoder.encode(batch)
            if chunk:
                yield chunk
            if encoder.done:
                break
    except RelayError as error:
        if not encoder.done:
            yield encoder.encode([error.to_event(), {"type": "finish", "reason": "error"}])
    finally:
        await close()
