"""Relay's messages on the OpenAI Chat Completions wire, and its stream back (``relay.wire.openai``)."""

from __future__ import annotations

import base64

from relay.wire.openai import OpenAIStream, prepare_messages
from tests.cases import PDF


def test_url_citations_from_the_openai_stream() -> None:
    annotation = {
        "type": "url_citation",
        "url_citation": {"url": "https://e.com", "title": "E", "start_index": 1, "end_index": 4},
    }
    assert OpenAIStream().feed({"choices": [{"index": 0, "delta": {"annotations": [annotation]}}]}) == [
        {"type": "citation", "url": "https://e.com", "title": "E", "start_index": 1, "end_index": 4}
    ]


def test_openai_text_files_travel_as_text() -> None:
    text_file = {
        "type": "file",
        "file": {"file_data": "data:text/plain;base64," + base64.b64encode(b"hi").decode(), "filename": "n.txt"},
    }
    pdf = {"type": "file", "file": {"file_data": f"data:application/pdf;base64,{PDF}"}}
    [message] = prepare_messages([{"role": "user", "content": [text_file, pdf]}])
    assert message["content"] == [{"type": "text", "text": "n.txt:\nhi"}, pdf]
