"""Scorers, the llm-judge prompt and verdict parsing, and scorer specs from the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from relay.evaluation import (
    Contains,
    Equals,
    JsonSchema,
    JsonValid,
    LLMJudge,
    PythonScorer,
    Regex,
    Score,
    parse_rows,
    parse_scorer,
    parse_verdict,
)
from relay.evaluation.dataset import Row
from relay.evaluation.judge import JUDGE_SYSTEM
from relay.evaluation.plan import Candidate
from relay.evaluation.spec import parse_fraction

ROOT = Path(__file__).resolve().parents[2]
ROW = parse_rows([{"id": "r1", "prompt": "Capital of France?", "expected": "Paris", "city": "Paris"}])[0]
JUDGE = Candidate("oa", "gpt-4o-mini", "oa")


def test_equals_compares_stripped_text_with_expected_or_a_value() -> None:
    assert Equals().score("  Paris\n", ROW).passed
    failed = Equals().score("Lyon", ROW)
    assert (failed.passed, failed.score, failed.reason) == (False, 0.0, "expected 'Paris', got 'Lyon'")
    assert Equals("{{city}}").score("Paris", ROW).passed


def test_contains_and_icontains() -> None:
    assert Contains().score("It is Paris.", ROW).passed
    assert not Contains().score("It is paris.", ROW).passed
    assert Contains(ignore_case=True).score("It is paris.", ROW).passed
    assert Contains("France").score("France's capital", ROW).reason == "contains 'France'"


def test_contains_without_expected_fails_its_score_with_the_reason() -> None:
    row = parse_rows([{"id": "x", "prompt": "p"}])[0]
    with pytest.raises(ValueError, match="row x has no 'expected' for contains"):
        Contains().score("anything", row)


def test_regex() -> None:
    assert Regex(r"\bParis\b").score("in Paris today", ROW).reason == "matched 'Paris'"
    assert not Regex(r"^\d+$").score("12a", ROW).passed
    with pytest.raises(ValueError, match="bad pattern"):
        Regex("(")


def test_json_valid_accepts_a_fenced_block() -> None:
    assert JsonValid().score('```json\n{"a": 1}\n```', ROW).passed
    bad = JsonValid().score("{'a': 1}", ROW)
    assert not bad.passed and bad.reason.startswith("not JSON")


def test_json_schema_names_the_failing_path(tmp_path: Path) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
        "required": ["city"],
    }
    scorer = JsonSchema(schema)
    assert scorer.score('{"city": "Paris", "population": 2100000}', ROW).passed
    wrong = scorer.score('{"city": "Paris", "population": "many"}', ROW)
    assert not wrong.passed and wrong.reason == "population: 'many' is not of type 'integer'"
    assert scorer.score('{"population": 1}', ROW).reason == "(root): 'city' is a required property"
    (tmp_path / "schema.json").write_text('{"type": "array"}')
    assert parse_scorer(f"json-schema:{tmp_path / 'schema.json'}").score("[1]", ROW).passed
    assert parse_scorer('json-schema:{"type": "string"}').score('"x"', ROW).passed


@pytest.mark.parametrize(
    ("returned", "expected"),
    [
        (True, (1.0, True, "returned True")),
        (0.25, (0.25, False, "scored 0.25")),
        ((True, "fine"), (1.0, True, "fine")),
        ({"score": 0.8, "reason": "close"}, (0.8, True, "close")),
        ({"pass": False, "score": 0.9, "reason": "strict"}, (0.9, False, "strict")),
        (Score("custom", 0.5, True, "own"), (0.5, True, "own")),
    ],
)
def test_python_callable_results(returned: Any, expected: tuple[float, bool, str]) -> None:
    seen: list[tuple[str, Row]] = []

    def scorer(output: str, row: Row) -> Any:
        seen.append((output, row))
        return returned

    score = PythonScorer(scorer).score("out", ROW)
    assert (score.score, score.passed, score.reason) == expected
    assert seen == [("out", ROW)]


def test_python_scorer_from_a_file_spec() -> None:
    scorer = parse_scorer(f"python:{ROOT}/examples/eval/scorers.py:one_line")
    assert scorer.name == "one_line"
    assert scorer.score("Paris", ROW).passed
    assert scorer.score("one two three four five six seven eight nine", ROW).reason == (
        "9 words, expected one short line"
    )


def test_python_scorer_with_an_unusable_result() -> None:
    with pytest.raises(TypeError, match="returned str"):
        PythonScorer(lambda output, row: "yes").score("x", ROW)


@pytest.mark.parametrize(
    "spec",
    ["regex", "json-schema", "python:nomodule", "llm-judge:oa", "bogus", "python:json:nothing_here"],
)
def test_bad_scorer_specs_are_refused(spec: str) -> None:
    with pytest.raises((ValueError, ModuleNotFoundError)):
        parse_scorer(spec, lambda target: JUDGE)


def test_llm_judge_spec_reads_a_rubric_file(tmp_path: Path) -> None:
    (tmp_path / "rubric.txt").write_text("The answer names the right city.")
    judge = parse_scorer(f"llm-judge:oa/gpt-4o-mini:@{tmp_path / 'rubric.txt'}", lambda target: JUDGE)
    assert isinstance(judge, LLMJudge) and judge.rubric == "The answer names the right city."
    messages = judge.messages("It is Paris.", ROW)
    assert messages[0] == {"role": "system", "content": JUDGE_SYSTEM}
    assert messages[1]["content"] == (
        "Rubric:\nThe answer names the right city.\n\nInput:\nCapital of France?\n\n"
        "Reference answer:\nParis\n\nResponse:\nIt is Paris."
    )


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ('{"pass": true, "score": 0.9, "reason": "correct"}', (0.9, True, "correct")),
        ('Sure! ```json\n{"pass": false, "score": 0.2, "reason": "wrong city"}\n```', (0.2, False, "wrong city")),
        ('{"score": 0.7, "reason": "mostly"}', (0.7, True, "mostly")),
        ('{"pass": "yes"}', (1.0, True, "no reason given")),
        ('example {"pass": true} ... final {"pass": false, "reason": "no"}', (0.0, False, "no")),
        ('{"score": 7}', (1.0, True, "no reason given")),
        ("I would say FAIL here.", (0.0, False, "judge said FAIL without the JSON verdict")),
    ],
)
def test_parse_verdict(reply: str, expected: tuple[float, bool, str]) -> None:
    score = parse_verdict(reply)
    assert (score.score, score.passed, score.reason) == expected


def test_an_unreadable_verdict_fails_and_says_so() -> None:
    score = parse_verdict("I cannot grade this { not json")
    assert not score.passed and score.reason.startswith("judge reply unreadable: 'I cannot grade")


def test_fail_under_accepts_fractions_and_percentages() -> None:
    assert parse_fraction("0.9") == 0.9 and parse_fraction("85%") == 0.85
    with pytest.raises(ValueError, match="not a pass rate"):
        parse_fraction("90")
