"""Deploy a Serve config dict the way ``serve run config/serve.yaml`` does."""

from __future__ import annotations

import time
from typing import Any

from ray import serve
from ray.serve._private import api as serve_api
from ray.serve.schema import ServeDeploySchema

__all__ = ["deploy_config", "DeployFailed"]


class DeployFailed(RuntimeError):
    pass


def deploy_config(config: dict[str, Any], *, timeout_s: float = 300.0) -> ServeDeploySchema:
    """A declarative deploy (the config's ``deployments`` overrides apply); blocks until RUNNING."""
    schema = ServeDeploySchema.model_validate(config)
    client = serve_api.serve_start(http_options=schema.http_options.model_dump(), proxy_location=schema.proxy_location)
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
