"""Multimodal input, normalized to OpenAI content parts before a request goes anywhere.

Callers may send images as URLs, ``data:`` URIs or local file paths, audio and
files likewise, either as content parts or as the seed's message-level
``images`` / ``audio`` / ``files`` lists. Everything becomes an ``image_url``,
``input_audio`` or ``file`` part with the bytes inline, so every provider's
translator sees one shape. Local paths are read only from the directories the
server allows (``media_dirs``); over HTTP the default allows none.
"""

from __future__ import annotations

import base64
import binascii
import mimetypes
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from relay.errors import InvalidRequest, PayloadTooLarge, UnsupportedFeature

__all__ = ["MediaPolicy", "DataURI", "parse_data_uri", "normalize_messages"]

MAX_FILE_BYTES = 20 * 1024 * 1024
AUDIO_FORMATS = ("wav", "mp3", "flac")


@dataclass(frozen=True, slots=True)
class MediaPolicy:
    """Where local paths may be read from: ``None`` trusts the caller (the in-process Python API)."""

    allowed_dirs: tuple[Path, ...] | None = ()

    def read(self, raw: str, param: str) -> tuple[bytes, str]:
        path = Path(raw.removeprefix("file://")).expanduser()
        if self.allowed_dirs is not None:
            resolved = path.resolve()
            if not any(resolved.is_relative_to(root.resolve()) for root in self.allowed_dirs):
                raise InvalidRequest(
                    f"Local file paths are not accepted here ({raw!r}); send a URL or a base64 data URI, "
                    "or list the directory in the server's media_dirs",
                    param=param,
                )
        try:
            size = path.stat().st_size
            if size > MAX_FILE_BYTES:
                raise PayloadTooLarge(f"{raw!r} is {size} bytes; the limit is {MAX_FILE_BYTES}", param=param)
            data = path.read_bytes()
        except OSError as exc:
            raise InvalidRequest(f"Cannot read {raw!r}: {exc.strerror}", param=param) from None
        return data, mimetypes.guess_type(path.name)[0] or "application/octet-stream"


@dataclass(frozen=True, slots=True)
class DataURI:
    media_type: str
    data: str  # base64

    @property
    def uri(self) -> str:
        return f"data:{self.media_type};base64,{self.data}"


def parse_data_uri(uri: str, param: str) -> DataURI:
    header, sep, data = uri.partition(",")
    if not sep or not header.startswith("data:") or not header.endswith(";base64"):
        raise InvalidRequest("Expected a data URI of the form data:<media type>;base64,<data>", param=param)
    try:
        # All of it: a provider would refuse a payload that goes bad past its start, after the turn was stored.
        decoded = base64.b64decode(data + "=" * (-len(data) % 4), validate=True)
    except binascii.Error:
        raise InvalidRequest("The data URI's payload is not valid base64", param=param) from None
    if not decoded:
        raise InvalidRequest("The data URI's payload is empty", param=param)
    return DataURI(header[5:-7] or "application/octet-stream", data)


def _inline(value: str, policy: MediaPolicy, param: str) -> DataURI:
    if value.startswith("data:"):
        return parse_data_uri(value, param)
    data, media_type = policy.read(value, param)
    return DataURI(media_type, base64.b64encode(data).decode())


def _image(value: Any, policy: MediaPolicy, param: str) -> dict[str, Any]:
    detail = None
    if isinstance(value, dict):
        detail = value.get("detail")
        value = value.get("url") or value.get("path") or value.get("filepath")
    if not isinstance(value, str) or not value:
        raise InvalidRequest("An image needs a URL, a data URI or a file path", param=param)
    if value.startswith(("http://", "https://")):
        url = value
    else:
        inline = _inline(value, policy, param)
        if not inline.media_type.startswith("image/"):
            raise InvalidRequest(f"Not an image: {inline.media_type}", param=param)
        url = inline.uri
    return {"type": "image_url", "image_url": {"url": url} | ({"detail": detail} if detail else {})}


def _audio(value: Any, policy: MediaPolicy, param: str) -> dict[str, Any]:
    if isinstance(value, dict) and "data" in value:
        fmt = value.get("format")
        data = value["data"]
    else:
        raw = value.get("path") if isinstance(value, dict) else value
        if not isinstance(raw, str):
            raise InvalidRequest("Audio needs base64 data with a format, or a file path", param=param)
        inline = _inline(raw, policy, param)
        fmt = inline.media_type.rsplit("/", 1)[-1].replace("mpeg", "mp3").replace("x-wav", "wav").replace("x-", "")
        data = inline.data
    if fmt not in AUDIO_FORMATS:
        raise InvalidRequest(f"Audio format must be one of {', '.join(AUDIO_FORMATS)}", param=f"{param}.format")
    return {"type": "input_audio", "input_audio": {"data": data, "format": fmt}}


def _file(value: Any, policy: MediaPolicy, param: str) -> dict[str, Any]:
    spec = value if isinstance(value, dict) else {"path": value}
    if spec.get("file_id"):
        return {"type": "file", "file": {"file_id": spec["file_id"]}}
    raw = spec.get("file_data") or spec.get("path") or spec.get("filepath") or spec.get("url")
    if not isinstance(raw, str) or not raw:
        raise InvalidRequest("A file needs file_data (a data URI), a file path or a file_id", param=param)
    if raw.startswith(("http://", "https://")):
        raise UnsupportedFeature("Files by URL are not supported; send the bytes as a data URI", param=param)
    inline = _inline(raw, policy, param)
    filename = spec.get("filename") or (Path(raw).name if not raw.startswith("data:") else None)
    return {"type": "file", "file": {"file_data": inline.uri} | ({"filename": filename} if filename else {})}


def _part(part: dict[str, Any], policy: MediaPolicy, param: str) -> dict[str, Any]:
    kind = part["type"]
    if kind == "image_url":
        return _image(part.get("image_url"), policy, f"{param}.image_url")
    if kind == "input_audio":
        return _audio(part.get("input_audio"), policy, f"{param}.input_audio")
    if kind == "file":
        return _file(part.get("file") or {}, policy, f"{param}.file")
    if kind == "text":
        if not isinstance(part.get("text"), str):
            raise InvalidRequest("A text part needs 'text'", param=f"{param}.text")
        return part
    raise InvalidRequest(
        f"Unknown content part type {kind!r}; use text, image_url, input_audio or file", param=f"{param}.type"
    )


def normalize_messages(messages: list[dict[str, Any]], policy: MediaPolicy) -> list[dict[str, Any]]:
    """OpenAI-shaped messages with every attachment inline, in content parts."""
    out = []
    for i, message in enumerate(messages):
        message = dict(message)
        extras = [(key, message.pop(key)) for key in ("images", "audio", "files", "videos") if message.get(key)]
        content = message.get("content")
        if not extras and not isinstance(content, list):
            out.append(message)
            continue
        if isinstance(content, list):
            parts = [_part(part, policy, f"messages[{i}].content[{j}]") for j, part in enumerate(content)]
        else:
            parts = [{"type": "text", "text": content}] if content else []
        for key, values in extras:
            if key == "videos":
                raise UnsupportedFeature(
                    "Video input is not supported by any provider yet", param=f"messages[{i}].videos"
                )
            convert = {"images": _image, "audio": _audio, "files": _file}[key]
            for j, value in enumerate(values if isinstance(values, list) else [values]):
                parts.append(convert(value, policy, f"messages[{i}].{key}[{j}]"))
        message["content"] = parts
        out.append(message)
    return out
