#!/usr/bin/env python3
"""Bootstrap and run Relay from a fresh clone with only python3 (>= 3.11) and pip.

    python3 scripts/dev.py serve [relay serve options]   # creates .venv, installs, serves on 127.0.0.1:8000
    python3 scripts/dev.py test  [pytest options]        # creates .venv, installs dev extras, lint + all tests

Without pytest options, ``test`` runs the whole suite, then the Ray integration
suite again on PostgreSQL (RELAY_TEST_STORE=postgres): CI runs both, never skips.

The install is redone only when pyproject.toml changes (a hash stamp in .venv).

Ctrl-C on ``serve`` reaches ``relay serve`` once, from this script: the server
runs in a process group of its own (Ray would move it out of the terminal's
anyway), so the terminal's SIGINT reaches only this script, which passes it on.
The server stops Serve and Ray and prints ``Relay stopped.``; this script waits
for it and exits with its code, 0 after a clean stop.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")


def ensure_venv(extras: str) -> None:
    if sys.version_info < (3, 11):  # noqa: UP036 - this script runs before any venv exists
        sys.exit(f"Relay needs Python >= 3.11; this is {sys.version.split()[0]}")
    if not (BIN / "python").exists():
        print(f"creating {VENV}", file=sys.stderr)
        venv.EnvBuilder(with_pip=True).create(VENV)
    spec = f".[{extras}]" if extras else "."
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + spec.encode()).hexdigest()
    stamp = VENV / ".relay-install"
    if stamp.exists() and stamp.read_text() in (digest, _dev_digest()):
        return
    print(f"installing Relay ({spec}) into {VENV}", file=sys.stderr)
    subprocess.run([str(BIN / "python"), "-m", "pip", "install", "-q", "--upgrade", "pip"], check=True)
    subprocess.run([str(BIN / "python"), "-m", "pip", "install", "-q", "-e", spec], check=True, cwd=ROOT)
    stamp.write_text(digest)


def ensure_chromium() -> None:
    """The browser tests drive Debian's chromium; install it when we can (root with apt), else say how."""
    if shutil.which("chromium") or shutil.which("chromium-headless-shell"):
        return
    if shutil.which("apt-get") and os.geteuid() == 0:
        print("installing chromium (apt) for the browser tests", file=sys.stderr)
        quiet = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-q"], check=True, env=quiet, stdout=subprocess.DEVNULL)
        subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], check=True, env=quiet, stdout=subprocess.DEVNULL)
        return
    sys.exit("the browser tests need chromium on PATH: install your distribution's 'chromium' package")


def _dev_digest() -> str:
    """A dev install also satisfies a plain one."""
    return hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + b".[dev]").hexdigest()


def run(argv: list[str], env: dict[str, str] | None = None) -> int:
    return subprocess.run(argv, cwd=ROOT, env={**os.environ, **(env or {})}).returncode


def run_forwarding_signals(argv: list[str]) -> int:
    """``argv`` until it exits, SIGINT and SIGTERM passed on to it: its own exit code, never a traceback here."""
    child = subprocess.Popen(argv, cwd=ROOT, process_group=0)

    def forward(signum: int, _frame: object) -> None:
        if child.poll() is None:
            child.send_signal(signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, forward)
    return child.wait()


def pytest(args: list[str], env: dict[str, str] | None = None) -> int:
    code = run([str(BIN / "python"), "-m", "pytest", *args], env)
    if code == 5:
        print("pytest collected no tests: that is a failure here", file=sys.stderr)
        return 1
    return code


def main() -> int:
    command, *rest = sys.argv[1:] or ["help"]
    if command == "serve":
        ensure_venv("")
        return run_forwarding_signals([str(BIN / "relay"), "serve", *rest])
    if command == "test":
        ensure_venv("dev")
        ensure_chromium()
        if run([str(BIN / "ruff"), "check", "."]) != 0:
            return 1
        if rest:
            return pytest(rest)
        return pytest([]) or pytest(["tests/integration"], {"RELAY_TEST_STORE": "postgres"})
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
