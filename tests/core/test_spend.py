"""Prices, run costs, the budget ledger on a hand-driven clock, and spend in the store on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from relay.errors import BudgetExceeded
from relay.spend import Budget, BudgetLedger, Price, PriceTable, RunCost, period_bounds
from relay.spend.report import parse_when, spend_report
from relay.store import Store, open_store

PER_TOKEN = 1_000_000  # USD per million tokens: a price of PER_TOKEN is a dollar a token


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def test_prices_have_wildcards_and_the_most_specific_name_wins() -> None:
    table = PriceTable.from_mapping(
        {
            "openai/gpt-4o*": {"input": 2, "output": 8},
            "openai/gpt-4o-mini*": {"input": 1, "output": 4},
            "anthropic/*": {"input": 3, "output": 15, "cached_input": 0.3},
            "gpt-4o": {"input": 5, "output": 10},
        }
    )
    assert table.lookup("openai", "gpt-4o") == Price(5, 10)  # an exact name before any pattern
    assert table.lookup("openai", "gpt-4o-2024-08-06") == Price(2, 8)
    assert table.lookup("openai", "gpt-4o-mini-2024") == Price(1, 4)  # the longer pattern is the narrower
    assert table.lookup("anthropic", "claude-anything") == Price(3, 15, cached_input=0.3)
    assert table.lookup("azure", "gpt-4o-mini") is None  # a pattern names its provider
    with pytest.raises(ValueError, match="unknown field"):
        PriceTable.from_mapping({"m": {"input": 1, "output": 1, "cached": 1}})
    with pytest.raises(ValueError, match="non-negative"):
        PriceTable.from_mapping({"m": {"input": 1, "output": -1}})


def test_each_kind_of_token_has_its_own_price_and_the_defaults_are_input_and_output() -> None:
    openai_usage = {"input_tokens": 10, "cache_read_tokens": 4, "output_tokens": 6, "reasoning_tokens": 2}
    anthropic_usage = {"input_tokens": 10, "cache_read_tokens": 4, "cache_write_tokens": 3, "output_tokens": 6}
    full = Price(1 * PER_TOKEN, 2 * PER_TOKEN, cached_input=0.5 * PER_TOKEN, reasoning=3 * PER_TOKEN)
    # OpenAI: cached reads are part of the input, reasoning part of the output
    assert full.usage_tokens(openai_usage) == {
        "input": 6, "cached_input": 4, "cache_write": 0, "output": 4, "reasoning": 2
    }
    assert full.usage_cost(full.usage_tokens(openai_usage)) == pytest.approx(6 + 2 + 8 + 6)
    # Anthropic: its input excludes the cache reads and writes
    assert full.usage_tokens(anthropic_usage)["input"] == 10
    assert full.usage_cost(full.usage_tokens(anthropic_usage)) == pytest.approx(10 + 2 + 3 + 12)
    plain = Price(1 * PER_TOKEN, 2 * PER_TOKEN)  # no discount named: cached at input, reasoning at output
    assert plain.usage_cost(plain.usage_tokens(openai_usage)) == pytest.approx(10 + 12)


def test_an_unpriced_call_makes_the_run_unpriced_never_zero() -> None:
    table = PriceTable({"echo": Price(PER_TOKEN, PER_TOKEN)})
    cost = RunCost()
    cost.add_usage(table, "echo", "echo", {"input_tokens": 2, "output_tokens": 3})
    assert cost.usd == pytest.approx(5) and not cost.unpriced
    call = cost.add_usage(table, "other", "mystery", {"input_tokens": 1, "output_tokens": 1})
    assert call.usd is None
    assert cost.to_dict() == {
        "usd": None,
        "unpriced": True,
        "tokens": {"input": 3, "cached_input": 0, "cache_write": 0, "output": 4, "reasoning": 0},
    }


def test_periods_are_utc_calendar_periods() -> None:
    now = at("2026-12-03T15:30:00")  # a Thursday
    assert period_bounds("day", now) == (at("2026-12-03T00:00:00"), at("2026-12-04T00:00:00"))
    assert period_bounds("week", now) == (at("2026-11-30T00:00:00"), at("2026-12-07T00:00:00"))
    assert period_bounds("month", now) == (at("2026-12-01T00:00:00"), at("2027-01-01T00:00:00"))
    assert period_bounds("none", now) == (0.0, None)


def test_the_ledger_admits_worst_cases_settles_real_costs_and_resets_with_the_period() -> None:
    clock = Clock(at("2026-12-03T23:00:00"))
    ledger = BudgetLedger(clock)
    key = Budget("key", "key_a", 10.0, "day")
    first = ledger.reserve([key], 4.0)
    assert first.reservation and first.remaining_usd == pytest.approx(6.0) and first.warning is None
    second = ledger.reserve([key], 4.0)
    assert second.remaining_usd == pytest.approx(2.0) and "80% used" in (second.warning or "")
    third = ledger.reserve([key], 4.0)  # 8 held + 4 > 10: refused, before anything is spent
    assert third.reservation is None and third.retry_after == pytest.approx(3600.0)
    assert "key key_a budget of $10.00 per day has $2.0000 left" in (third.message or "")
    with pytest.raises(BudgetExceeded) as raised:
        third.raise_if_refused()
    assert raised.value.status_code == 429 and raised.value.error_type == "budget_exceeded"
    ledger.settle(first.reservation, 1.0, [key])  # the real cost replaces the worst case
    ledger.settle(second.reservation or "", 9.5, [key])  # more than reserved: charged in full
    assert ledger.spent(key) == pytest.approx(10.5) and ledger.held[key.scope] == pytest.approx(0.0)
    spent = ledger.reserve([key], 0.1)
    assert spent.message == "key key_a budget of $10.00 per day is spent"
    clock.now += 3600.0  # midnight UTC: a new day, a new budget
    assert ledger.reserve([key], 4.0).reservation


def test_an_unpriced_request_holds_nothing_but_a_spent_budget_refuses_it() -> None:
    ledger = BudgetLedger(Clock(at("2026-12-03T12:00:00")))
    user = Budget("user", "ann", 1.0, "none")
    free = ledger.reserve([user], None)
    assert free.reservation and ledger.held[user.scope] == 0.0
    ledger.settle(free.reservation, None, [user])  # unknown cost: not counted as zero, not counted at all
    assert ledger.spent(user) == 0.0
    ledger.settle("", 1.0, [user])
    refused = ledger.reserve([user], None)
    assert refused.reservation is None and refused.retry_after is None  # "none" never resets
    assert "user ann budget of $1.00 in total is spent" in (refused.message or "")


def test_a_reservation_left_by_a_dead_replica_expires_and_a_new_ledger_seeds_from_the_store() -> None:
    clock = Clock(at("2026-12-03T00:00:00"))
    seen: list[tuple[str, str, float]] = []

    def seed(kind: str, subject: str, since: float) -> float:
        seen.append((kind, subject, since))
        return 7.0

    ledger = BudgetLedger(clock, seed=seed)
    provider = Budget("provider", "oa", 10.0, "month")
    assert ledger.reserve([provider], 3.0).reservation
    assert seen == [("provider", "oa", at("2026-12-01T00:00:00"))]
    assert ledger.reserve([provider], 0.5).reservation is None  # 7 spent + 3 held
    clock.now += 3 * 3600.0  # the holder never settled: its hold is dropped
    assert ledger.reserve([provider], 3.0).reservation


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "sqlite":
        return open_store(f"sqlite:///{tmp_path}/relay.db")
    return open_store(str(request.getfixturevalue("fresh_pg_url")))


def _run(store: Store, run_id: str, user: str, key: str | None, provider: str, usd: float | None) -> None:
    session = store.create_session(user)["session_id"]
    store.start_run(run_id, session, provider=provider, model="m", input_messages=[], user_id=user, key_id=key)
    cost = {"usd": usd, "unpriced": usd is None, "tokens": {"input": 1, "output": 2}}
    store.finish_run(run_id, status="completed", cost=cost)


def test_the_store_sums_spend_by_key_user_and_provider(store: Store) -> None:
    since = time.time() - 1
    _run(store, "run_1", "ann", "key_a", "oa", 1.25)
    _run(store, "run_2", "ann", "key_b", "claude", 2.5)
    _run(store, "run_3", "bob", None, "oa", None)
    assert store.spent("user", "ann", since) == pytest.approx(3.75)
    assert store.spent("key", "key_a", since) == pytest.approx(1.25)
    assert store.spent("provider", "oa", since) == pytest.approx(1.25)  # the unpriced run adds nothing
    assert store.spent("user", "ann", time.time() + 1) == 0.0
    store.add_run_cost("run_1", {"usd": 0.5, "unpriced": False, "tokens": {"input": 10}})
    assert store.get_run("run_1")["cost"]["tokens"]["input"] == 11  # type: ignore[index]
    assert store.spent("key", "key_a", since) == pytest.approx(1.75)
    rows = store.run_costs(since, time.time() + 1)
    assert [row["run_id"] for row in rows] == ["run_1", "run_2", "run_3"]
    report = spend_report(rows, "provider")
    assert [(g["provider"], g["cost_usd"], g["runs"], g["unpriced_runs"]) for g in report["data"]] == [
        ("claude", 2.5, 1, 0),
        ("oa", 1.75, 2, 1),
    ]
    assert report["total"]["cost_usd"] == pytest.approx(4.25) and report["total"]["tokens"]["input"] == 13
    assert [row["run_id"] for row in store.run_costs(since, time.time() + 1, "bob")] == ["run_3"]
    assert store.set_api_key_budget("key_missing", 5.0, "day") is False


def test_report_bounds_are_seconds_or_iso_dates() -> None:
    assert parse_when("2026-12-01", "from", 0.0) == at("2026-12-01T00:00:00")
    assert parse_when("1700000000", "to", 0.0) == 1700000000.0
    assert parse_when(None, "to", 5.0) == 5.0
    with pytest.raises(Exception, match="'from' must be"):
        parse_when("yesterday", "from", 0.0)
