"""One local Ray cluster and one Serve app, deployed from config/serve.yaml, per test session."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import ray
from ray import serve
from ray.serve.handle import DeploymentHandle

from actors.deploy import deploy_config
from relay.cli import load_serve_config
from tests.fakes.openai_upstream import FakeOpenAI, free_port

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Relay:
    url: str
    directory: DeploymentHandle
    upstream: FakeOpenAI
    upstream_url: str


@pytest.fixture(scope="session")
def relay(tmp_path_factory: pytest.TempPathFactory, fake_openai: tuple[FakeOpenAI, str]) -> Iterator[Relay]:
    upstream, upstream_url = fake_openai
    port = free_port()
    config = load_serve_config(
        ROOT / "config" / "serve.yaml", host="127.0.0.1", port=port, data_dir=tmp_path_factory.mktemp("relay-data")
    )
    args: dict[str, Any] = config["applications"][0]["args"]
    args["providers"] = [
        {"provider_id": "echo", "provider_type": "echo", "model": "echo"},
        {
            "provider_id": "up",
            "provider_type": "openai_compatible",
            "model": "fake",
            "base_url": upstream_url,
            "max_retries": 0,
        },
        # Configured as when ANTHROPIC_API_KEY is set; its adapter is not built yet.
        {"provider_id": "claude", "provider_type": "anthropic", "api_key_env": "RELAY_TEST_UNSET_KEY"},
    ]
    # Passivation is driven by the tests, never by a timer racing them.
    args["sessions"] = {"warm_pool_size": 2, "idle_ttl_s": 3600}
    ray.init(namespace="serve", include_dashboard=False, log_to_driver=False)
    try:
        deploy_config(config)
        yield Relay(
            f"http://127.0.0.1:{port}",
            serve.get_deployment_handle("SessionDirectory", app_name="relay"),
            upstream,
            upstream_url,
        )
    finally:
        serve.shutdown()
        ray.shutdown()
