"""Media normalization (``relay.providers.media``): paths, URLs and the seed's ``images``/``files`` fields."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from relay.errors import InvalidRequest, UnsupportedFeature
from relay.providers.media import MediaPolicy, normalize_messages
from tests.cases import PDF


def test_media_paths_urls_and_seed_fields(tmp_path: Path) -> None:
    image = tmp_path / "cat.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\nfake")
    doc = tmp_path / "report.pdf"
    doc.write_bytes(b"%PDF-1.4 fake")
    message = {
        "role": "user",
        "content": "Describe",
        "images": [str(image), "https://e.com/x.jpg"],
        "files": [str(doc)],
    }
    [out] = normalize_messages([message], MediaPolicy(allowed_dirs=(tmp_path,)))
    assert out["content"][0] == {"type": "text", "text": "Describe"}
    assert (
        out["content"][1]["image_url"]["url"]
        == f"data:image/png;base64,{base64.b64encode(image.read_bytes()).decode()}"
    )
    assert out["content"][2]["image_url"]["url"] == "https://e.com/x.jpg"
    assert out["content"][3] == {
        "type": "file",
        "file": {"file_data": f"data:application/pdf;base64,{PDF}", "filename": "report.pdf"},
    }
    assert "images" not in out and "files" not in out


def test_media_refuses_paths_outside_the_allowed_dirs(tmp_path: Path) -> None:
    message = {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "/etc/passwd"}}]}
    with pytest.raises(InvalidRequest) as exc:
        normalize_messages([message], MediaPolicy())
    assert exc.value.param == "messages[0].content[0].image_url" and "not accepted" in exc.value.message
    with pytest.raises(InvalidRequest) as bad:
        normalize_messages(
            [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64"}}]}],
            MediaPolicy(),
        )
    assert "data URI" in bad.value.message
    with pytest.raises(UnsupportedFeature):
        normalize_messages([{"role": "user", "content": "x", "videos": ["a.mp4"]}], MediaPolicy())
