"""One local Ray cluster and one Serve app, deployed from config/serve.yaml, per test session.

Tracing is on for the whole session: every Ray process exports its spans to one
OTLP/HTTP receiver on 127.0.0.1 (``Relay.otlp``), named by the standard
variables set before ``ray.init`` (the processes Ray starts inherit them). Spans
change no response, so the other tests run as they would untraced.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import ray
from cryptography.fernet import Fernet
from ray import serve
from ray.serve.handle import DeploymentHandle

from actors.deploy import apply_ray_env, deploy_config
from relay.cli.serve import load_serve_config
from tests.conftest import pg_schema
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.openai_upstream import FakeOpenAI, ServerThread, free_port
from tests.fakes.otlp_receiver import OtlpReceiver

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Relay:
    url: str
    directory: DeploymentHandle
    upstream: FakeOpenAI
    upstream_url: str
    anthropic: FakeAnthropic
    anthropic_url: str
    store_url: str
    otlp: OtlpReceiver


@pytest.fixture(scope="session")
def relay(
    tmp_path_factory: pytest.TempPathFactory,
    fake_openai: tuple[FakeOpenAI, str],
    fake_anthropic: tuple[FakeAnthropic, str],
) -> Iterator[Relay]:
    upstream, upstream_url = fake_openai
    anthropic, anthropic_url = fake_anthropic
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
        # The key reaches the pool replicas through the environment, as ANTHROPIC_API_KEY would.
        {
            "provider_id": "claude",
            "provider_type": "anthropic",
            "model": "fake-claude",
            "base_url": anthropic_url,
            "api_key_env": "RELAY_TEST_ANTHROPIC_KEY",
            "max_retries": 0,
        },
        # A route whose chain is anthropic -> openai -> echo, with the first two failing.
        {
            "provider_id": "chain",
            "provider_type": "anthropic",
            "model": "fake-status-529",
            "base_url": anthropic_url,
            "api_key_env": "RELAY_TEST_ANTHROPIC_KEY",
            "max_retries": 0,
            "fallbacks": ["up/fake-status-500", "echo"],
        },
        {"provider_id": "mystery", "provider_type": "telepathy"},
        # The one configured provider with a pool of its own; every other one shares pool-shared.
        {
            "provider_id": "own",
            "provider_type": "openai_compatible",
            "model": "fake",
            "base_url": upstream_url,
            "max_retries": 0,
            "dedicated": True,
            "num_replicas": 1,
        },
    ]
    # Load-balanced routes (relay.session.balancer): one balances on the pools' in-flight counters, one whose first pool
    # always fails, and one answered from the response cache when it can.
    args["routes"] = [
        {"name": "duo", "strategy": "least-busy", "pools": [{"provider": "up"}, {"provider": "echo"}]},
        {"name": "sturdy", "pools": [{"provider": "up", "model": "fake-status-500"}, {"provider": "echo"}]},
        {"name": "cached", "pools": [{"provider": "up"}], "cache": {"ttl_s": 600}},
        {"name": "mixed", "pools": [{"provider": "own"}, {"provider": "echo"}]},
    ]
    # A dedicated pool Ray cannot place is refused after this long (tests/integration/test_pools.py).
    args["pool_placement_timeout_s"] = 5
    # Passivation is driven by the tests, never by a timer racing them.
    args["sessions"] = {"warm_pool_size": 2, "idle_ttl_s": 3600}
    # RELAY_TEST_STORE=postgres runs the same suite on this machine's PostgreSQL (CI runs both).
    store = contextlib.ExitStack()
    if os.environ.get("RELAY_TEST_STORE") == "postgres":
        args["store_url"] = store.enter_context(pg_schema())
        os.environ.setdefault("RELAY_SECRET_KEY", Fernet.generate_key().decode())  # no key file beside a shared DB
    os.environ["RELAY_TEST_ANTHROPIC_KEY"] = anthropic.api_key
    otlp = OtlpReceiver()
    receiver = store.enter_context(ServerThread(otlp.app))
    tracing_env = {
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"{receiver.url}/v1/traces",  # traces only: Ray's own metrics stay put
        "OTEL_BSP_SCHEDULE_DELAY": "100",  # each process exports its spans within 0.1 s of their end
        "OTEL_SERVICE_NAME": "relay-integration",
    }
    saved = {name: os.environ.get(name) for name in tracing_env}
    os.environ.update(tracing_env)
    apply_ray_env()  # the suite runs Serve the way `relay serve` does
    # "local": always a cluster of its own, never the latest one a Cluster-based test on this machine recorded.
    ray.init(address="local", namespace="serve", include_dashboard=False, log_to_driver=False)
    try:
        deploy_config(config)
        yield Relay(
            f"http://127.0.0.1:{port}",
            serve.get_deployment_handle("SessionDirectory", app_name="relay"),
            upstream,
            upstream_url,
            anthropic,
            anthropic_url,
            args["store_url"],
            otlp,
        )
    finally:
        serve.shutdown()
        ray.shutdown()
        store.close()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
