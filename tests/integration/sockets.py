"""A WebSocket scenario two ingress tests share: two chats on one socket, one of them cancelled mid-stream."""

from __future__ import annotations

from typing import Any

import orjson
import websockets

__all__ = ["cancel_one_of_two"]


async def cancel_one_of_two(url: str, fast_text: str) -> tuple[dict[str, str], str]:
    """Send a slow chat and a fast one on one socket and cancel the slow one after its third word.

    Returns each request's finish reason and the fast one's text.
    """
    async with websockets.connect(url) as ws:

        async def send(message_type: str, request_id: str, **data: Any) -> None:
            await ws.send(orjson.dumps({"message_type": message_type, "request_id": request_id, "data": data}).decode())

        slow = {"messages": [{"role": "user", "content": "x " * 300}]}
        await send("chat_request", "slow", **slow, options={"provider_options": {"tokens_per_s": 20}})
        await send("chat_request", "fast", messages=[{"role": "user", "content": fast_text}])
        finished: dict[str, str] = {}
        text = {"slow": "", "fast": ""}
        async for raw in ws:
            message = orjson.loads(raw)
            data = message["data"]
            if data.get("event_type") == "text-delta":
                text[message["request_id"]] += data["event_data"]["content"]
                if message["request_id"] == "slow" and len(text["slow"].split()) == 3:
                    await send("cancel", "slow")
            if data.get("event_type") == "finish":
                finished[message["request_id"]] = data["event_data"]["reason"]
                if len(finished) == 2:
                    break
    return finished, text["fast"]
