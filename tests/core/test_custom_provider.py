"""Custom providers: by import path in config, and by a ``relay.providers`` entry point of an installed package."""

from __future__ import annotations

import importlib
from pathlib import Path

import openai
import pytest

from relay.config import ProviderConfig, RelaySettings
from relay.errors import InvalidRequest
from relay.http.app import build_app
from relay.manager import MultiProviderManager
from relay.providers import adapter_class
from relay.session.local_backend import LocalBackend
from tests.fakes.custom_adapter import ShoutAdapter
from tests.fakes.openai_upstream import ServerThread


async def test_a_custom_adapter_by_import_path_serves_over_http(tmp_path: Path) -> None:
    provider = ProviderConfig(
        provider_id="loud",
        provider_type="shout",
        adapter="tests.fakes.custom_adapter:ShoutAdapter",
        options={"suffix": "!!"},
    )
    backend = LocalBackend(RelaySettings(store_url=f"sqlite:///{tmp_path / 'r.db'}", providers=[provider]))
    with ServerThread(build_app(backend)) as server:
        client = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
        reply = await client.chat.completions.create(model="loud", messages=[{"role": "user", "content": "hi you"}])
        assert reply.choices[0].message.content == "HI!! YOU!! "
        with pytest.raises(openai.BadRequestError) as exc:
            await client.chat.completions.create(
                model="loud",
                messages=[{"role": "user", "content": "x"}],
                tools=[{"type": "function", "function": {"name": "f"}}],
            )
        assert "Provider 'loud' (shout) does not support tools" in exc.value.message


def test_a_custom_adapter_from_an_entry_point(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dist = tmp_path / "relay_shout-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: relay-shout\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[relay.providers]\nshout = tests.fakes.custom_adapter:ShoutAdapter\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    assert adapter_class(ProviderConfig(provider_id="s", provider_type="shout")) is ShoutAdapter


def test_bad_adapter_references_are_clear_errors() -> None:
    with pytest.raises(InvalidRequest, match="unknown provider_type 'nope'"):
        adapter_class(ProviderConfig(provider_id="s", provider_type="nope"))
    with pytest.raises(InvalidRequest, match="Cannot load adapter") as missing:
        adapter_class(ProviderConfig(provider_id="s", provider_type="x", adapter="no.such.module:Thing"))
    assert missing.value.param == "adapter"
    with pytest.raises(InvalidRequest, match="not a BaseProviderAdapter"):
        adapter_class(ProviderConfig(provider_id="s", provider_type="x", adapter="relay.config:ProviderConfig"))


async def test_the_seed_manager_api(fake_anthropic: tuple[object, str]) -> None:
    from pydantic import BaseModel

    class Person(BaseModel):
        name: str
        age: int

    manager = MultiProviderManager()
    manager.register_anthropic_provider(
        "claude", api_key="sk-ant-test", model_name="fake-claude", base_url=fake_anthropic[1]
    )
    manager.register(
        ProviderConfig(provider_id="loud", provider_type="shout", adapter="tests.fakes.custom_adapter:ShoutAdapter")
    )
    events = [e async for e in manager.stream_chat("loud", [{"role": "user", "content": "hey"}])]
    assert [e["type"] for e in events] == ["text-delta", "usage", "finish"]
    person = await manager.complete(
        "claude", [{"role": "user", "content": '{"name": "Ada", "age": 36}'}], response_model=Person
    )
    assert person == Person(name="Ada", age=36)
    assert isinstance(manager.get_adapter("loud"), ShoutAdapter)
    health = await manager.health_check_all()
    assert health["claude"]["reachable"] and health["loud"]["ok"]
    await manager.aclose()
