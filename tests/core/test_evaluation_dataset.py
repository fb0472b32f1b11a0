"""Evaluation datasets in every accepted shape, templates, and the cells' durable keys."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from relay.config import ProviderConfig
from relay.evaluation import DatasetError, load_dataset, parse_rows, plan_cells
from relay.evaluation.api import prepare
from relay.evaluation.plan import Candidate, parse_candidate

ROOT = Path(__file__).resolve().parents[2]


def write_jsonl(path: Path, rows: list[object]) -> Path:
    path.write_bytes(b"\n".join(orjson.dumps(row) for row in rows) + b"\n")
    return path


def test_prompt_and_messages_rows_with_vars_and_system(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "rows.jsonl",
        [
            {"id": "a", "prompt": "Capital of France?", "expected": "Paris", "system": "Be terse."},
            {"messages": [{"role": "user", "content": "Say {{word}}"}], "word": "hi", "params": {"max_tokens": 5}},
        ],
    )
    first, second = load_dataset(path)
    assert first.id == "a" and first.expected == "Paris"
    assert first.messages == [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "Capital of France?"},
    ]
    assert second.id == "row-2"  # no id: the line's position
    assert second.messages == [{"role": "user", "content": "Say hi"}]
    assert second.params == {"max_tokens": 5} and second.vars["word"] == "hi"


def test_template_builds_the_user_message_from_vars(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "rows.jsonl", [{"city": "Lima", "n": 3}])
    (row,) = load_dataset(path, template="Name {{ n }} facts about {{city}}.")
    assert row.messages == [{"role": "user", "content": "Name 3 facts about Lima."}]
    assert row.prompt == "Name 3 facts about Lima."


def test_unknown_template_variable_names_the_row_and_variable(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "rows.jsonl", [{"city": "Lima"}, {"town": "Cusco"}])
    with pytest.raises(DatasetError, match=r"rows.jsonl row 2: template variable 'city' is not in the row"):
        load_dataset(path, template="About {{city}}")


def test_csv_rows_with_template_and_json_messages_column(tmp_path: Path) -> None:
    (tmp_path / "rows.csv").write_text(
        "id,text,expected,messages\n"
        "hello,Good morning,Bonjour,\n"
        'raw,,x,"[{""role"": ""user"", ""content"": ""hey""}]"\n'
    )
    hello, raw = load_dataset(tmp_path / "rows.csv", template="Translate: {{text}}")
    assert hello.id == "hello" and hello.expected == "Bonjour"
    assert hello.messages == [{"role": "user", "content": "Translate: Good morning"}]
    assert raw.messages == [{"role": "user", "content": "hey"}]


def test_openai_batch_lines_keep_their_params(tmp_path: Path) -> None:
    body = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "2+2?"}],
        "max_completion_tokens": 12,
        "temperature": 0.2,
        "seed": 7,
    }
    path = write_jsonl(
        tmp_path / "batch.jsonl",
        [{"custom_id": "req-1", "method": "POST", "url": "/v1/chat/completions", "body": body}],
    )
    (row,) = load_dataset(path)
    assert row.id == "req-1"
    assert row.messages[-1] == {"role": "user", "content": "2+2?"}
    assert row.params == {"max_tokens": 12, "temperature": 0.2, "seed": 7}


def test_openai_batch_line_with_a_bad_role_is_refused(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "batch.jsonl", [{"custom_id": "x", "body": {"messages": [{"role": "robot", "content": "hi"}]}}]
    )
    with pytest.raises(DatasetError, match=r"batch.jsonl row 1: body: .*messages\[0\]\.role"):
        load_dataset(path)


def test_anthropic_batches_as_jsonl_and_as_the_batch_body(tmp_path: Path) -> None:
    request = {
        "custom_id": "q1",
        "params": {
            "model": "claude-sonnet-4-5",
            "max_tokens": 64,
            "system": "Answer briefly.",
            "messages": [{"role": "user", "content": [{"type": "text", "text": "Why is the sky blue?"}]}],
            "stop_sequences": ["END"],
        },
    }
    (from_jsonl,) = load_dataset(write_jsonl(tmp_path / "batch.jsonl", [request]))
    (tmp_path / "batch.json").write_bytes(orjson.dumps({"requests": [request]}))
    (from_body,) = load_dataset(tmp_path / "batch.json")
    for row in (from_jsonl, from_body):
        assert row.id == "q1"
        assert row.messages[0] == {"role": "system", "content": "Answer briefly."}
        assert row.prompt == "Why is the sky blue?"
        assert row.params == {"max_tokens": 64, "stop": ["END"]}


def test_anthropic_batch_without_max_tokens_is_refused() -> None:
    with pytest.raises(DatasetError, match="max_tokens is required"):
        parse_rows([{"custom_id": "q", "params": {"messages": [{"role": "user", "content": "hi"}]}}])


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{"id": "a", "prompt": "x"}, {"id": "a", "prompt": "y"}], "duplicate row id 'a'"),
        ([{"text": "no prompt"}], "needs 'messages' or 'prompt'"),
        ([{"messages": []}], "'messages' must be a non-empty list"),
        ([{"messages": "not json"}], "'messages' is not valid JSON"),
        ([], "no rows"),
        (["just a string"], "expected a JSON object"),
    ],
)
def test_bad_rows_are_named(rows: list[object], message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        parse_rows(rows)  # type: ignore[arg-type]


def test_invalid_jsonl_names_the_line(tmp_path: Path) -> None:
    (tmp_path / "rows.jsonl").write_text('{"prompt": "ok"}\n\n{broken\n')
    with pytest.raises(DatasetError, match=r"rows\.jsonl line 3: invalid JSON"):
        load_dataset(tmp_path / "rows.jsonl")


def test_cells_are_row_major_and_keyed_by_what_is_sent() -> None:
    rows = parse_rows([{"id": "a", "prompt": "one"}, {"id": "b", "prompt": "two", "params": {"max_tokens": 3}}])
    echo = Candidate("echo", "echo", "echo")
    other = Candidate("openai", "gpt-4o-mini", "openai")
    cells = plan_cells(rows, [echo, other], repeat=2, params={"temperature": 0})
    assert [(c.row.id, c.candidate.label, c.repeat) for c in cells][:4] == [
        ("a", "echo", 0),
        ("a", "echo", 1),
        ("a", "openai", 0),
        ("a", "openai", 1),
    ]
    assert cells[0].key == ("a", "echo", "echo", 0, cells[0].config_hash)
    assert cells[0].config_hash == cells[1].config_hash  # repeats differ by the repeat index only
    assert cells[4].request.params == {"temperature": 0, "max_tokens": 3}
    assert cells[4].max_tokens == 3 and cells[0].max_tokens == echo.default_max_tokens
    edited = plan_cells(parse_rows([{"id": "a", "prompt": "one!"}]), [echo])
    hotter = plan_cells(rows[:1], [echo], params={"temperature": 1})
    assert len({cells[0].config_hash, edited[0].config_hash, hotter[0].config_hash}) == 3


def test_prepare_resolves_providers_and_models() -> None:
    configs = [
        ProviderConfig(provider_id="echo", provider_type="echo", model="echo"),
        ProviderConfig(provider_id="oa", provider_type="openai_compatible", model="small", default_max_tokens=99),
    ]
    prepared = prepare([{"prompt": "x"}], "echo, oa/large", configs, ["contains:x"])
    assert [(c.provider, c.model, c.label, c.default_max_tokens) for c in prepared.candidates] == [
        ("echo", "echo", "echo", 4096),
        ("oa", "large", "oa/large", 99),
    ]
    assert prepared.providers == {"echo", "oa"}
    with pytest.raises(ValueError, match=r"unknown provider 'nope' \(configured: echo, oa\)"):
        prepare([{"prompt": "x"}], "nope", configs)
    with pytest.raises(ValueError, match="named twice"):
        prepare([{"prompt": "x"}], "echo,echo", configs)
    assert parse_candidate("oa/org/model") == ("oa", "org/model")


def test_the_shipped_examples_load() -> None:
    assert load_dataset(ROOT / "examples/eval/capitals.jsonl")[0].expected == "Paris"
    rows = load_dataset(ROOT / "examples/eval/translate.csv", template="Translate to French: {{text}}")
    assert rows[0].prompt == "Translate to French: Good morning"
