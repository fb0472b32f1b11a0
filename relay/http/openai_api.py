"""The OpenAI-compatible surface: ``POST /v1/chat/completions`` (streamed and not) and ``GET /v1/models``."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from relay.errors import InvalidRequest, from_event
from relay.http.auth import identity_of
from relay.http.encoders import OpenAIChunkEncoder, openai_completion
from relay.http.gateway import SESSION_HEADER, SSE_HEADERS, Gateway, chain, collect, encoded, first_batch, session_id_of
from relay.http.io import USER_HEADER, caller, error_response, read_json
from relay.http.keepalive import event_stream
from relay.http.schemas import ChatCompletionBody, parse_body

__all__ = ["openai_routes"]


def openai_routes(gateway: Gateway) -> list[Route]:
    async def chat_completions(request: Request) -> Response:
        body = parse_body(ChatCompletionBody, await read_json(request))
        if body.stream_options is not None and not body.stream:
            raise InvalidRequest("stream_options is only allowed when stream is true", param="stream_options")
        # OpenAI's ``user`` tags an end user; without auth it names the session's owner, with auth the key does.
        owner = body.user if identity_of(request) is None and USER_HEADER not in request.headers else None
        session_id, user_id = session_id_of(request.headers.get(SESSION_HEADER)), caller(request, owner)
        chat = await gateway.chat_request(body, body.model, None, session_id=session_id, user_id=user_id)
        run = await gateway.open_run(session_id=session_id, user_id=user_id, request=chat)
        headers = {SESSION_HEADER: run.session_id}
        first = await first_batch(run)
        headers |= gateway.planner.cache_header(chat, first)
        if not body.stream:
            reply = await collect(run, first)
            if reply.error:  # a non-streamed reply is whole or an error; partial text stays in the stored run
                return error_response(from_event(reply.error), headers)
            return JSONResponse(openai_completion(reply, body.model, relay_events=body.relay_events), headers=headers)
        encoder = OpenAIChunkEncoder(
            body.model,
            include_usage=bool((body.stream_options or {}).get("include_usage")),
            server_tools=frozenset(chat.tools.names if chat.tools else ()),
            relay_events=body.relay_events,
        )
        return event_stream(
            encoded(chain(first, run), run.close, encoder.encode), gateway.keepalive_s, headers | SSE_HEADERS
        )

    async def models(request: Request) -> Response:
        data = []
        for provider in await gateway.backend.providers(refresh=True):
            for model in dict.fromkeys([provider.provider_id, provider.default_model, *provider.models]):
                data.append({"id": model, "object": "model", "created": 0, "owned_by": provider.provider_id})
        return JSONResponse({"object": "list", "data": data})

    return [
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
    ]
