"""``relay serve``: a local Ray cluster (or ``RAY_ADDRESS``'s) serving the Serve config, until Ctrl-C.

Quiet by default: one banner (address, providers, store), then only warnings
and errors, from this process and from every Ray process (Relay's JSON lines,
Serve's own). ``--verbose`` brings back Serve's INFO lines and access log.
Ctrl-C or SIGTERM stops Serve and Ray and prints ``Relay stopped.``; the exit
code is then 0, because stopping is how a server is meant to end.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from relay.logs import LOG_LEVEL_ENV

__all__ = ["INGRESS_CHOICES", "QUIET_SERVE_LOGGING", "check_ingress", "is_loopback", "load_serve_config", "run_serve"]

log = logging.getLogger("relay")

# Serve's logging for the controller, the proxies and every replica when --verbose is off: its INFO lines and the
# access log (a line per request, e.g. each `CALL stats OK`) would bury the warnings a user has to see.
QUIET_SERVE_LOGGING: dict[str, Any] = {"log_level": "WARNING", "enable_access_log": False}


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# Serve's HTTP ingress: its Python proxy, or HAProxy in front of the ingress replicas' own HTTP ports (Ray's
# direct ingress). The proxy stays the default: through HAProxy a client that leaves a silent stream is missed
# about one time in three, so its run is not cancelled (benchmarks/README.md, "Lever 1: the HAProxy ingress").
INGRESS_CHOICES = ("python", "haproxy")


def check_ingress(ingress: str, host: str, *, auth: bool) -> None:
    """ValueError when HAProxy would publish ports that a loopback bind without auth promises not to.

    Relay passes its host to Serve explicitly, so in HAProxy mode the frontend, the replicas' direct-ingress
    ports (30000 up) and the fallback proxy (8500) all stay on that host. But Ray 2.60's HAProxy config binds
    its stats page (8404: every backend, replica address and counter) and its Prometheus exporter (9101) on all
    interfaces, with no setting to hold them to loopback.
    """
    if ingress == "haproxy" and is_loopback(host) and not auth:
        raise ValueError(
            "refusing --ingress haproxy on a loopback bind without auth: Ray 2.60's HAProxy serves its stats page "
            "(port 8404) and metrics (port 9101) on all interfaces. Create a key first (`relay keys create --user "
            "NAME --admin`), or keep the Python proxy (--ingress python, the default)."
        )


def load_serve_config(path: Path, *, host: str | None, port: int | None, data_dir: Path) -> dict[str, Any]:
    """The Serve config file with the command line's overrides; SQLite paths made absolute."""
    config = yaml.safe_load(path.read_text())
    http = config.setdefault("http_options", {})
    if host is not None:
        http["host"] = host
    if port is not None:
        http["port"] = port
    http.setdefault("host", "127.0.0.1")
    http.setdefault("port", 8000)
    for application in config.get("applications", []):
        args = application.setdefault("args", {})
        for provider in args.get("providers") or ():
            if "api_key" in provider:
                raise ValueError(
                    f"{path}: provider '{provider.get('provider_id')}' has an api_key in the file; put the key in "
                    "an environment variable and name it with api_key_env"
                )
        url = args.get("store_url", "sqlite:///relay.db")
        prefix = "sqlite:///"
        if url.startswith(prefix) and not Path(url[len(prefix) :]).is_absolute():
            args["store_url"] = prefix + str((data_dir / url[len(prefix) :]).resolve())
    return config


def run_serve(args: argparse.Namespace) -> int:
    config_path = Path(args.config)
    if not config_path.is_file():
        log.error("config file %s not found", config_path)
        return 2
    data_dir = Path(args.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        config = load_serve_config(config_path, host=args.host, port=args.port, data_dir=data_dir)
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    host, port = config["http_options"]["host"], config["http_options"]["port"]
    auth = _auth_configured(config)
    if not is_loopback(host) and not auth:
        log.error(
            "refusing to bind %s: auth is not configured, so anyone who can reach this address could chat as any "
            "user and use your provider keys. Create a key first: `relay keys create --user NAME --admin "
            "--data-dir %s` (auth turns on once a key exists), or set `auth: required` in the application's args "
            "in %s. To stay local, bind to 127.0.0.1.",
            host,
            args.data_dir,
            config_path,
        )
        return 2
    ingress = args.ingress
    try:
        check_ingress(ingress, host, auth=auth)
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    # Read by every Ray process at import (serve/_private/constants.py): set before this process starts Ray.
    os.environ["RAY_SERVE_ENABLE_HA_PROXY"] = "1" if ingress == "haproxy" else "0"
    if not args.verbose:
        config.setdefault("logging_config", QUIET_SERVE_LOGGING)  # a logging_config in the file wins
        os.environ.setdefault(LOG_LEVEL_ENV, "WARNING")  # Relay's own lines in every Ray process
    try:
        return _serve_until_stopped(config, host, port, ingress, verbose=args.verbose, dashboard=args.dashboard)
    except KeyboardInterrupt:
        return 0


def _serve_until_stopped(
    config: dict[str, Any], host: str, port: int, ingress: str, *, verbose: bool, dashboard: bool
) -> int:
    from actors.deploy import DeployFailed, apply_ray_env, deploy_config

    apply_ray_env()  # before ray.init: the local cluster's processes inherit it
    import ray
    from ray import serve

    level = logging.INFO if verbose else logging.WARNING
    # A cluster of its own, even when one that `ray start` began runs on this machine (ray.init would join it and
    # this command's shutdown would stop its Serve apps); RAY_ADDRESS still names one to join on purpose.
    address = os.environ.get("RAY_ADDRESS", "local")
    ray.init(
        address=address,
        namespace="serve",
        include_dashboard=dashboard,  # a chat runtime needs none of its UI; its port stays on 127.0.0.1 when on
        logging_level=level,
    )
    logging.getLogger("ray.serve").setLevel(level)  # the driver's "Started Serve", "Deploying app" lines
    # After ray.init, whose fatal-signal handler would take SIGTERM; SIGINT too, in case this process was started
    # with it ignored (a background job of a script). Both stop the server the way Ctrl-C does.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.default_int_handler)
    try:
        try:
            deploy_config(config)
        except DeployFailed as exc:
            log.error("deploy failed: %s", exc)
            return 1
        # /readyz answers without a key, so this works with auth on too
        ready = httpx.get(f"http://{host}:{port}/readyz", timeout=30).json()
        _print_banner(host, port, ingress, ready["pools"], config["applications"][0]["args"].get("store_url"))
        # Sleep in short steps: a signal may land on one of Ray's threads, and only the main thread runs Python's
        # handlers, at its next bytecode.
        while True:
            time.sleep(0.5)
    finally:
        # A second Ctrl-C during the shutdown would interrupt it and print a traceback.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if address != "local":
            serve.shutdown()  # a cluster we joined keeps running, without our apps
        # On a cluster of our own, ray.shutdown stops every process, Serve's with them. serve.shutdown first would
        # only add noise: the controller kills itself at the end of graceful_shutdown, and the raylet reports the
        # call as failed and retried ("Task ServeController.graceful_shutdown failed").
        ray.shutdown()
        print("Relay stopped.", file=sys.stderr)


def _print_banner(host: str, port: int, ingress: str, pools: list[dict[str, Any]], store_url: str | None) -> None:
    providers = ", ".join(f"{p['provider_id']} ({p['replicas']} replica, {p['status']})" for p in pools)
    print(
        f"Relay is listening on http://{host}:{port} ({ingress} ingress)\n  providers: {providers}\n"
        f"  store: {store_url}\n"
        "  press Ctrl-C to stop",
        file=sys.stderr,
        flush=True,
    )


def _auth_configured(config: dict[str, Any]) -> bool:
    from relay.config import AuthSettings
    from relay.store import open_store

    args = config["applications"][0].get("args") or {}
    if AuthSettings.model_validate(args.get("auth") or {}).mode == "required":
        return True
    store = open_store(args.get("store_url", "sqlite:///relay.db"))
    try:
        return store.has_api_keys()
    finally:
        store.close()
