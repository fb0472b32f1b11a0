"""The documented provider examples stay valid, and none of them holds a key."""

from __future__ import annotations

from pathlib import Path

import yaml

from relay.config import RelaySettings
from relay.providers import adapter_class

EXAMPLES = Path(__file__).resolve().parents[2] / "config" / "providers.example.yaml"


def test_every_example_builds_a_provider_without_a_key_in_the_file() -> None:
    raw = yaml.safe_load(EXAMPLES.read_text())
    settings = RelaySettings.model_validate(raw)
    by_id = {p.provider_id: p for p in settings.providers}
    assert {"openai", "anthropic", "azure", "ollama", "vllm", "lmstudio", "deepseek", "zhipu"} <= set(by_id)
    for provider in settings.providers:
        assert provider.api_key is None and "api_key" not in raw["providers"][list(by_id).index(provider.provider_id)]
        adapter_class(provider)
        assert all(fallback in by_id for fallback in provider.fallbacks)
    assert by_id["azure"].deployment == "gpt-4o-prod" and by_id["azure"].api_version == "2024-10-21"
