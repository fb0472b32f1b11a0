"""``relay``: serve, chat, status and eval from the terminal."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import orjson
import yaml

from relay.cli.eval import add_eval_parser, run_eval
from relay.cli.keys import add_keys_parser, run_keys

__all__ = ["main", "is_loopback", "load_serve_config"]

log = logging.getLogger("relay")
DEFAULT_URL = "http://127.0.0.1:8000"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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


def _serve(args: argparse.Namespace) -> int:
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
    if not is_loopback(host) and not _auth_configured(config):
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

    from actors.deploy import DeployFailed, apply_ray_env, deploy_config

    apply_ray_env()  # before ray.init: the local cluster's processes inherit it
    import ray
    from ray import serve

    # A cluster of its own, even when one that `ray start` began runs on this machine (ray.init would join it and
    # this command's shutdown would stop its Serve apps); RAY_ADDRESS still names one to join on purpose.
    address = os.environ.get("RAY_ADDRESS", "local")
    ray.init(address=address, namespace="serve", include_dashboard=False, logging_level=logging.WARNING)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        try:
            deploy_config(config)
        except DeployFailed as exc:
            log.error("deploy failed: %s", exc)
            return 1
        # /readyz answers without a key, so this works with auth on too
        ready = httpx.get(f"http://{host}:{port}/readyz", timeout=30).json()
        providers = ", ".join(f"{p['provider_id']} ({p['replicas']} replica, {p['status']})" for p in ready["pools"])
        log.info("Relay is listening on http://%s:%d", host, port)
        log.info("providers up: %s", providers)
        log.info("store: %s", config["applications"][0]["args"].get("store_url"))
        log.info("press Ctrl-C to stop")
        # Wake up now and then: a signal may land on one of Ray's threads, and only
        # the main thread runs Python's handlers.
        while not stop.wait(0.5):
            pass
        log.info("shutting down")
        return 0
    finally:
        serve.shutdown()
        ray.shutdown()


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


def _auth_headers(args: argparse.Namespace) -> dict[str, str]:
    return {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}


def _status(args: argparse.Namespace) -> int:
    try:
        stats = httpx.get(f"{args.url}/api/stats", headers=_auth_headers(args), timeout=10).raise_for_status().json()
    except httpx.HTTPError as exc:
        print(f"relay status: cannot reach {args.url}: {exc}", file=sys.stderr)
        return 1
    for line in _session_lines(stats["sessions"]):
        print(line)
    print(f"{'provider':<20} {'type':<18} {'replicas':>8}  status")
    for pool in stats["providers"]:
        print(f"{pool['provider_id']:<20} {pool['provider_type']:<18} {pool['replicas']:>8}  {pool.get('status', '')}")
    return 0


def _session_lines(sessions: dict[str, Any]) -> list[str]:
    """Live, passivated and pooled counts first; then the lifecycle settings and what they have done so far."""
    live, pooled = sessions["live"], sessions["pooled"]
    passivated = sessions.get("passivated", sessions.get("stored", live) - live)
    lines = [
        f"sessions: {live} live on {sessions.get('live_actors', live)} actors (cap {sessions.get('max_actors', '-')}), "
        f"{passivated} passivated, {pooled} pooled actors"
    ]
    if "idle_ttl_s" in sessions:
        retention = sessions.get("retention_days")
        lines.append(
            f"lifecycle: live cap {sessions['max_live_sessions']}, warm pool {sessions['warm_pool_size']}, "
            f"idle TTL {sessions['idle_ttl_s']:g} s, retention {f'{retention:g} days' if retention else 'forever'}"
        )
        lines.append(
            f"since start: {sessions['activations']} activations ({sessions['reactivations']} from the store), "
            f"{sessions['passivations']} passivations ({sessions['lru_passivations']} over the live cap), "
            f"{sessions['expired']} expired"
        )
    return lines


def _chat(args: argparse.Namespace) -> int:
    session_id = args.session
    print("relay chat: type a message, Ctrl-D to quit.", file=sys.stderr)
    with httpx.Client(base_url=args.url, timeout=None, headers=_auth_headers(args)) as client:
        while True:
            try:
                text = input("you> ")
            except (EOFError, KeyboardInterrupt):
                print(file=sys.stderr)
                return 0
            if not text.strip():
                continue
            body = {
                "messages": [{"role": "user", "content": text}],
                "provider_id": args.provider,
                "stream_format": "ndjson",
                "session_id": session_id,
            }
            with client.stream("POST", "/api/streaming/chat", json=body) as response:
                if response.status_code != 200:
                    response.read()
                    print(f"error {response.status_code}: {response.json()['error']['message']}", file=sys.stderr)
                    continue
                session_id = response.headers.get("x-session-id", session_id)
                sys.stdout.write("assistant> ")
                for line in response.iter_lines():
                    if not line:
                        continue
                    event = orjson.loads(line)
                    if event["type"] == "text-delta":
                        sys.stdout.write(event["content"])
                        sys.stdout.flush()
                    elif event["type"] == "error":
                        sys.stdout.write(f"\n[error: {event['message']}]")
                sys.stdout.write("\n")
            print(f"(session {session_id})", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="relay", description="Relay: a Ray-native runtime for LLM chat")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="start a local Ray cluster and serve Relay")
    serve.add_argument("--host", default=None, help="bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="port (default 8000)")
    serve.add_argument("--config", default="config/serve.yaml", help="Serve config file")
    serve.add_argument("--data-dir", default=os.environ.get("RELAY_DATA_DIR", ".relay"), help="where SQLite lives")
    chat = commands.add_parser("chat", help="a streaming terminal chat that keeps its session")
    chat.add_argument("--provider", default=None)
    chat.add_argument("--session", default=None)
    chat.add_argument("--url", default=DEFAULT_URL)
    status = commands.add_parser("status", help="live sessions, pools and replicas (an admin key when auth is on)")
    status.add_argument("--url", default=DEFAULT_URL)
    for command in (chat, status):
        command.add_argument("--api-key", default=os.environ.get("RELAY_API_KEY"), help="default: $RELAY_API_KEY")
    add_keys_parser(commands)
    add_eval_parser(commands)
    args = parser.parse_args(argv)
    handler = {"serve": _serve, "chat": _chat, "status": _status, "keys": run_keys, "eval": run_eval}[args.command]
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
