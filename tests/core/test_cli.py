from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from relay.cli import main
from relay.cli.serve import check_ingress, is_loopback, load_serve_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("localhost", True),
        ("::1", True),
        ("0.0.0.0", False),
        ("10.1.2.3", False),
        ("example.com", False),
    ],
)
def test_loopback_detection(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_serve_refuses_a_public_bind_without_auth(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    code = main(["serve", "--host", "0.0.0.0", "--data-dir", str(tmp_path)])
    assert code == 2
    assert "refusing to bind 0.0.0.0" in caplog.text and "127.0.0.1" in caplog.text


def test_haproxy_is_refused_only_on_a_loopback_bind_without_auth() -> None:
    with pytest.raises(ValueError, match="8404"):
        check_ingress("haproxy", "127.0.0.1", auth=False)
    check_ingress("haproxy", "127.0.0.1", auth=True)
    check_ingress("haproxy", "0.0.0.0", auth=True)
    check_ingress("python", "127.0.0.1", auth=False)


def test_serve_refuses_haproxy_on_the_embedded_default(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    code = main(["serve", "--ingress", "haproxy", "--data-dir", str(tmp_path)])
    assert code == 2 and "refusing --ingress haproxy" in caplog.text


def test_serve_config_overrides_and_absolute_sqlite_path(tmp_path: Path) -> None:
    config = load_serve_config(ROOT / "config" / "serve.yaml", host=None, port=9001, data_dir=tmp_path)
    assert config["http_options"] == {"host": "127.0.0.1", "port": 9001}
    app = config["applications"][0]
    assert app["import_path"] == "serve_app:app"
    assert app["args"]["store_url"] == f"sqlite:///{(tmp_path / 'relay.db').resolve()}"


def test_serve_refuses_a_key_written_in_the_config(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = tmp_path / "serve.yaml"
    config.write_text(
        "applications:\n  - name: relay\n    import_path: serve_app:app\n    args:\n      providers:\n"
        "        - {provider_id: openai, provider_type: openai, api_key: sk-live-123}\n"
    )
    code = main(["serve", "--config", str(config), "--data-dir", str(tmp_path)])
    assert code == 2 and "api_key_env" in caplog.text and "sk-live-123" not in caplog.text


@pytest.mark.parametrize("command", ["serve", "chat", "status", "keys", "eval"])
def test_each_command_module_imports_on_its_own(command: str) -> None:
    """A fresh interpreter per module: an import cycle between a command and the package would fail here."""
    done = subprocess.run(
        [sys.executable, "-c", f"import relay.cli.{command} as m; print(m.__all__)"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "from relay.cli import" not in (ROOT / "relay" / "cli" / f"{command}.py").read_text()


@pytest.mark.parametrize("argv", [["serve"], ["chat"], ["status"], ["keys", "list"], ["eval", "rows.jsonl"]])
def test_every_command_takes_verbose(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        main([*argv, "--verbose", "--help"])
    assert stopped.value.code == 0
    assert "--verbose" in capsys.readouterr().out


def test_tables_into_a_pipe_are_plain_text(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path}/relay.db"
    for user in ("alice", "a-user-with-a-rather-long-name"):
        assert main(["keys", "create", "--user", user, "--store-url", url]) == 0
    capsys.readouterr()
    assert main(["keys", "list", "--store-url", url]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["key_id", "user", "prefix", "admin", "budget", "created", "revoked"]
    assert set(lines[1]) == {"-", " "}
    rows = [line.split() for line in lines[2:]]
    assert sorted(row[1] for row in rows) == ["a-user-with-a-rather-long-name", "alice"]
    assert all(len(row) == 8 and row[3] == "no" and row[4] == "-" for row in rows)  # created: a date and a time
    assert not any("\x1b" in line or "─" in line for line in lines)
