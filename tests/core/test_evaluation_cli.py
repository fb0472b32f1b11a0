"""``relay eval`` refusals that happen before Ray starts: bad input exits 2, the cost ceiling exits 3."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
import yaml

from relay.cli import main
from relay.cli.eval import parse_per_provider
from tests.fakes.openai_upstream import FakeOpenAI


@pytest.fixture
def setup(tmp_path: Path, fake_openai: tuple[FakeOpenAI, str]) -> tuple[Path, Path, Path]:
    fake, url = fake_openai
    fake.reset()
    providers = [
        {"provider_id": "echo", "provider_type": "echo", "model": "echo"},
        {"provider_id": "oa", "provider_type": "openai_compatible", "model": "fake", "base_url": url},
    ]
    config = tmp_path / "serve.yaml"
    config.write_text(yaml.safe_dump({"applications": [{"name": "relay", "args": {"providers": providers}}]}))
    dataset = tmp_path / "rows.jsonl"
    dataset.write_bytes(b"\n".join(orjson.dumps({"prompt": f"q{i}", "expected": "a"}) for i in range(20)))
    prices = tmp_path / "prices.yaml"
    prices.write_text(
        yaml.safe_dump({"prices": {"fake": {"input": 3, "output": 15}, "echo": {"input": 0, "output": 0}}})
    )
    return config, dataset, prices


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--providers", "nope"], "unknown provider 'nope' (configured: echo, oa)"),
        (["--providers", "echo", "--scorer", "regex"], "scorer 'regex' needs an argument"),
        (["--providers", "echo", "--concurrency", "4,oa=2"], "'oa' is not one of the providers of this run"),
        (["--providers", "echo", "--fail-under", "95"], "'95' is not a pass rate"),
        (["--providers", "echo", "--template", "{{missing}}"], "template variable 'missing' is not in the row"),
    ],
)
def test_bad_input_exits_2_naming_the_problem(
    setup: tuple[Path, Path, Path], extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config, dataset, _ = setup
    assert main(["eval", str(dataset), "--config", str(config), *extra]) == 2
    assert message in capsys.readouterr().err


def test_a_missing_dataset_exits_2(setup: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    config, _, _ = setup
    assert main(["eval", "no/such.jsonl", "--providers", "echo", "--config", str(config)]) == 2
    assert "dataset no/such.jsonl not found" in capsys.readouterr().err


def test_the_cost_ceiling_exits_3_before_any_call(
    setup: tuple[Path, Path, Path],
    fake_openai: tuple[FakeOpenAI, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config, dataset, prices = setup
    args = ["eval", str(dataset), "--providers", "echo,oa", "--config", str(config), "--prices", str(prices)]
    code = main([*args, "--max-tokens", "100", "--max-cost", "0.01", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 3 and fake_openai[0].requests == []
    # 20 cells of oa: (5 in + 100 out) tokens each at $3 / $15 per million = $0.0303; echo is free
    assert "worst case $0.0303 exceeds --max-cost $0.0100" in err and "oa $0.0303" in err and "--force" in err


def test_per_provider_values() -> None:
    assert parse_per_provider("50,oa=4", {"oa", "echo"}, integer=True) == (50, {"oa": 4})
    assert parse_per_provider(None, {"oa"}) == (None, {})
    with pytest.raises(ValueError, match="must be positive"):
        parse_per_provider("oa=0", {"oa"})
