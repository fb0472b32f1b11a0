"""Conversation items (RESPONSES.md §5) as Relay's stored chat messages, and back: pure, no HTTP, no store.

A conversation is a session, and its items are the session's ``messages`` rows, so
there is one history whichever API wrote it. A row maps to one or more items:

- a user, system or developer message → one ``message`` item (``input_text``,
  ``input_image``, ``input_file`` parts);
- an assistant message → a ``message`` item (``output_text`` parts with
  ``annotations: []``) if it has text or no tool calls, then one
  ``function_call`` item per tool call;
- a tool message → one ``function_call_output`` item.

Item ids are derived from the row's ``seq``, which the store allocates from one
sequence for every session: ids are stable across reads and globally unique
without being stored. The scheme:

- ``msg_<seq>``: the message item of row ``seq``;
- ``fc_<seq>_<k>``: the ``k``-th tool call (from 0) of assistant row ``seq``;
- ``fco_<seq>``: the function_call_output of tool row ``seq``.

``parse_item_id`` inverts it; the ``ItemRef.order`` key, ``(seq, 0)`` for msg
and fco and ``(seq, k + 1)`` for fc, sorts items as they are listed, so an item
id is also a paging cursor that survives the deletion of its item.
A seq has at most 19 digits (64-bit), so the Responses API's random
``msg_<32 hex>`` ids never parse as ours: the two id spaces cannot collide.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Literal

from ..errors import InvalidRequest, RelayError
from .responses_input import input_messages

__all__ = ["ItemKind", "ItemRef", "item_id", "parse_item_id", "message_items", "items_messages"]

ItemKind = Literal["message", "function_call", "function_call_output"]

_PREFIX: dict[str, ItemKind] = {"msg": "message", "fc": "function_call", "fco": "function_call_output"}
# A seq is a positive 64-bit integer (the store's column): at most 19 digits, so a 32-hex id never parses as one.
_MAX_SEQ = 2**63 - 1
_ITEM_ID = re.compile(r"^(msg|fco)_([1-9][0-9]{0,18})$|^fc_([1-9][0-9]{0,18})_(0|[1-9][0-9]{0,4})$")


@dataclass(frozen=True, slots=True)
class ItemRef:
    """Where an item lives: row ``seq``, its kind, and ``k``, the call's index for a ``function_call`` (else 0)."""

    seq: int
    kind: ItemKind
    k: int = 0

    @property
    def id(self) -> str:
        return item_id(self.seq, self.kind, self.k)

    @property
    def order(self) -> tuple[int, int]:
        """The listing order: a row's message item, then its calls."""
        return (self.seq, self.k + 1 if self.kind == "function_call" else 0)


def item_id(seq: int, kind: ItemKind, k: int = 0) -> str:
    if kind == "function_call":
        return f"fc_{seq}_{k}"
    return f"{'msg' if kind == 'message' else 'fco'}_{seq}"


def parse_item_id(raw: str) -> ItemRef | None:
    """The ``ItemRef`` an id names, or None when it is not one of ours (then it names no item)."""
    match = _ITEM_ID.match(raw)
    if match is None:
        return None
    prefix, seq, fc_seq, k = match.groups()
    ref = ItemRef(int(fc_seq), "function_call", int(k)) if fc_seq else ItemRef(int(seq), _PREFIX[prefix])
    return ref if ref.seq <= _MAX_SEQ else None  # a larger number would overflow the store's integer


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    parts = content if isinstance(content, list) else ()
    texts = (p.get("text") for p in parts if isinstance(p, dict) and p.get("type") in ("text", "output_text"))
    return "".join(text for text in texts if isinstance(text, str))


def _input_part(part: Any) -> dict[str, Any] | None:
    """A stored chat content part as a Conversations input part; kinds with no item form are left out."""
    if isinstance(part, str):
        return {"type": "input_text", "text": part}
    if not isinstance(part, dict):
        return None
    kind = part.get("type")
    if kind in ("text", "input_text", "output_text"):
        return {"type": "input_text", "text": part.get("text") or ""}
    if kind == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, dict) else image
        detail = image.get("detail") if isinstance(image, dict) else None
        return {"type": "input_image", "image_url": url, "file_id": None, "detail": detail or "auto"}
    if kind == "file":
        file = part.get("file") if isinstance(part.get("file"), dict) else {}
        out: dict[str, Any] = {"type": "input_file", "file_id": file.get("file_id")}
        if file.get("file_data"):
            out["file_data"] = file["file_data"]
        if file.get("url"):
            out["file_url"] = file["url"]
        if file.get("filename"):
            out["filename"] = file["filename"]
        return out
    if kind == "input_audio":
        audio = part.get("input_audio") if isinstance(part.get("input_audio"), dict) else {}
        data_uri = f"data:audio/{audio.get('format') or 'wav'};base64,{audio.get('data') or ''}"
        return {"type": "input_file", "file_id": None, "file_data": data_uri, "filename": "audio"}
    return None


def _input_parts(content: Any) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "input_text", "text": content}]
    return [part for part in map(_input_part, content if isinstance(content, list) else ()) if part is not None]


def message_items(message: dict[str, Any]) -> list[dict[str, Any]]:
    """A stored message (with its ``seq``, as ``Store.messages`` returns it) as its items, in listing order."""
    seq = int(message["seq"])
    role = message.get("role")
    if role == "tool":
        parts = _input_parts(message.get("content"))
        output: Any = message["content"] if isinstance(message.get("content"), str) else parts
        return [
            {
                "type": "function_call_output",
                "id": item_id(seq, "function_call_output"),
                "call_id": message.get("tool_call_id"),
                "output": output,
                "status": "completed",
            }
        ]
    if role != "assistant":
        return [
            {
                "type": "message",
                "id": item_id(seq, "message"),
                "status": "completed",
                "role": role if role in ("user", "system", "developer") else "user",
                "content": _input_parts(message.get("content")),
            }
        ]
    calls = [call for call in message.get("tool_calls") or () if isinstance(call, dict)]
    text = _text(message.get("content"))
    items: list[dict[str, Any]] = []
    if text or not calls:
        content = [{"type": "output_text", "text": text, "annotations": []}] if text else []
        mid = item_id(seq, "message")
        items.append({"type": "message", "id": mid, "status": "completed", "role": "assistant", "content": content})
    for k, call in enumerate(calls):
        function = call.get("function") or {}
        items.append(
            {
                "type": "function_call",
                "id": item_id(seq, "function_call", k),
                "call_id": call.get("id"),
                "name": function.get("name"),
                "arguments": function.get("arguments") or "",
                "status": "completed",
            }
        )
    return items


def _no_reference(_id: str) -> None:
    """A conversation stores items, never pointers: an ``item_reference`` resolves to nothing here."""
    return None


def _check_assistant(item: Any, param: str) -> None:
    """An assistant replay's content must be text or text parts: ``input_messages`` joins it as text."""
    if not isinstance(item, dict) or item.get("role") != "assistant":
        return
    content = item.get("content")
    if content is None or isinstance(content, str):
        return
    if not isinstance(content, list):
        raise InvalidRequest("content must be a string or a list of parts", param=f"{param}.content")
    for j, part in enumerate(content):
        for key in ("text", "refusal"):
            if isinstance(part, dict) and part.get(key) is not None and not isinstance(part[key], str):
                raise InvalidRequest(f"'{key}' must be a string", param=f"{param}.content[{j}].{key}")


def items_messages(items: list[dict[str, Any]], *, known_call_ids: Collection[str] = ()) -> list[dict[str, Any]]:
    """Input items (§2) as the chat-shaped messages to store; every error names its field as ``items[i]…``.

    ``known_call_ids``: the calls already in the conversation, which a ``function_call_output`` may answer.
    """
    for i, item in enumerate(items):
        _check_assistant(item, f"items[{i}]")
    try:
        return input_messages(items, resolve=_no_reference, known_call_ids=known_call_ids)
    except RelayError as exc:
        if exc.param is None or not exc.param.startswith("input"):
            raise
        raise type(exc)(exc.message, param="items" + exc.param.removeprefix("input"), code=exc.code) from None
