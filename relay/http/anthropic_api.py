"""The Anthropic Messages surface, ``POST /v1/messages``, over any pool; its errors in Anthropic's shape."""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from relay.errors import RelayError, as_relay_error, from_event
from relay.http.gateway import (
    SESSION_HEADER,
    SSE_HEADERS,
    Gateway,
    RunFailed,
    chain,
    collect,
    encoded,
    first_batch,
    session_id_of,
)
from relay.http.io import caller, read_json
from relay.http.keepalive import ANTHROPIC_PING, event_stream
from relay.http.schemas import MessagesBody, parse_body
from relay.providers.features import check_features
from relay.providers.media import normalize_messages
from relay.request import ChatRequest
from relay.wire.anthropic import (
    AnthropicEncoder,
    anthropic_error_body,
    anthropic_message,
    from_anthropic_messages,
    from_anthropic_params,
)

__all__ = ["anthropic_routes"]

log = logging.getLogger("relay.ingress")


def _anthropic_error(error: RelayError, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(anthropic_error_body(error), status_code=error.status_code, headers=headers)


def anthropic_routes(gateway: Gateway) -> list[Route]:
    async def messages(request: Request) -> Response:
        try:
            body = parse_body(MessagesBody, await read_json(request))
            provider, model = await gateway.resolve(body.model, None)
            sent = body.model_dump(exclude_unset=True)
            chat = ChatRequest(
                provider=provider.provider_id,
                model=model,
                pool_app=provider.pool_app,
                messages=normalize_messages(
                    from_anthropic_messages(sent.get("system"), sent["messages"]), gateway.media
                ),
                params=from_anthropic_params(sent),
                user=(body.metadata or {}).get("user_id"),
            )
            check_features(provider, chat)
            run = await gateway.open_run(
                session_id=session_id_of(request.headers.get(SESSION_HEADER)), user_id=caller(request), request=chat
            )
            headers = {SESSION_HEADER: run.session_id}
            first = await first_batch(run)
        except RunFailed as failed:
            return _anthropic_error(from_event(failed.event), {SESSION_HEADER: failed.session_id})
        except Exception as exc:
            if not isinstance(exc, RelayError):
                log.exception("unhandled error on POST /v1/messages")
            return _anthropic_error(as_relay_error(exc))
        if not body.stream:
            reply = await collect(run, first)
            if reply.error:
                return _anthropic_error(from_event(reply.error), headers)
            return JSONResponse(anthropic_message(reply, body.model), headers=headers)
        encoder = AnthropicEncoder(body.model)
        return event_stream(
            encoded(chain(first, run), run.close, encoder.encode),
            gateway.keepalive_s,
            headers | SSE_HEADERS,
            keepalive=ANTHROPIC_PING,
        )

    return [Route("/v1/messages", messages, methods=["POST"])]
