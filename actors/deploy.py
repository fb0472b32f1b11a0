"""Deploy a Serve config dict the way ``serve run config/serve.yaml`` does."""

from __future__ import annotations

import os
import time
from typing import Any

from ray import serve
from ray.serve._private import api as serve_api
from ray.serve.schema import ServeDeploySchema

__all__ = ["RAY_ENV", "DeployFailed", "apply_ray_env", "deploy_config"]

# Serve's throughput mode: user code and each handle's router on the process's own event loop (no thread hop per
# message), gRPC between handles and replicas, GC frozen after start-up. Measured in benchmarks/README.md ("what
# each lever bought"). Three of its parts stay off: direct ingress (the proxy keeps the one port, its WebSockets
# and the loopback bind), and the buffered, stderr-less logs (Relay's JSON log lines leave at once, as
# operations expect). HAProxy mode (which forces direct ingress on) is `relay serve --ingress haproxy`, not a
# default: a client leaving a silent stream is missed through it ("Lever 1: the HAProxy ingress"). The GCS
# keeps the last 2,000 task records for the state API, not Ray's default 100,000: with the default it grew
# ~10 MiB/min under a 30-minute soak, flat with 2,000 (benchmarks/README.md).
# Every Ray process reads these at start or import, so they must be set before Ray starts.
RAY_ENV = {
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    "RAY_SERVE_ENABLE_DIRECT_INGRESS": "0",
    "RAY_SERVE_LOG_TO_STDERR": "1",
    "RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE": "1",
    "RAY_task_events_max_num_task_in_gcs": "2000",
}


def apply_ray_env() -> None:
    """Set ``RAY_ENV`` for the Ray processes this one starts; a value already in the environment wins."""
    for key, value in RAY_ENV.items():
        os.environ.setdefault(key, value)


class DeployFailed(RuntimeError):
    pass


def deploy_config(config: dict[str, Any], *, timeout_s: float = 300.0) -> ServeDeploySchema:
    """A declarative deploy (the config's ``deployments`` overrides apply); blocks until RUNNING."""
    schema = ServeDeploySchema.model_validate(config)
    # The config's logging_config reaches the controller and the proxies only here; deploy_apps gives it to replicas.
    client = serve_api.serve_start(
        http_options=schema.http_options.model_dump(),
        proxy_location=schema.proxy_location,
        global_logging_config=schema.logging_config,
    )
    client.deploy_apps(schema, _blocking=False)
    names = [application.name for application in schema.applications]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        statuses = serve.status().applications
        states = {name: statuses[name].status.value if name in statuses else "NOT_STARTED" for name in names}
        if all(state == "RUNNING" for state in states.values()):
            return schema
        for name, state in states.items():
            if state in ("DEPLOY_FAILED", "UNHEALTHY"):
                raise DeployFailed(f"application '{name}' {state}: {statuses[name].message}")
        time.sleep(0.25)
    raise DeployFailed(f"applications {names} not RUNNING after {timeout_s:.0f} s")
