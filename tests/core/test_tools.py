"""Server-side tools without a server: schemas from signatures, the executor's guards, the built-ins, plugins."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import orjson
import pytest

from relay.config import ToolSettings
from relay.errors import InvalidRequest
from relay.tools import ToolRegistry, calculator, current_time, execute, tool, tool_from_function
from relay.tools.builtin import evaluate
from tests.fakes import tools as misbehaving


def test_the_schema_comes_from_the_signature_and_a_google_docstring() -> None:
    built = tool_from_function(misbehaving.units)
    assert built.name == "units" and built.description == "Convert a distance to metres."
    assert built.parameters == {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "value": {"type": "number", "description": "The distance."},
            "unit": {
                "enum": ["km", "mi"],
                "type": "string",
                "default": "km",
                "description": "Its unit: kilometres or miles.",
            },
        },
        "required": ["value"],
    }
    assert built.schema()["function"]["name"] == "units"


def test_sphinx_params_and_pydantic_constraints_reach_the_schema() -> None:
    built = tool_from_function(misbehaving.lookup)
    limit = built.parameters["properties"]["limit"]
    assert limit == {
        "type": "integer",
        "minimum": 1,
        "maximum": 10,
        "default": 3,
        "description": "How many results, 1 to 10.",
    }
    assert built.parameters["properties"]["key"]["description"] == "What to look up."
    assert built.description == "Look up a key."


def test_tool_options_and_bad_functions() -> None:
    assert tool_from_function(misbehaving.wait_forever).name == "forever"
    assert tool_from_function(misbehaving.stall).timeout_s == 0.3

    def splat(*values: int) -> int:
        return sum(values)

    with pytest.raises(TypeError, match="passable by keyword"):
        tool_from_function(splat)
    @tool(name="no spaces please")
    def misnamed() -> str:
        return ""

    with pytest.raises(ValueError, match="tool name"):
        tool_from_function(misnamed)


async def test_a_tool_that_raises_gives_an_error_outcome() -> None:
    outcome = await execute(tool_from_function(misbehaving.explode), '{"reason": "the disk is on fire"}')
    assert outcome.result is None and outcome.error == "RuntimeError: the disk is on fire"
    assert outcome.for_model() == "Error: RuntimeError: the disk is on fire" and outcome.duration_ms >= 0


async def test_a_tool_that_hangs_times_out() -> None:
    outcome = await execute(tool_from_function(misbehaving.stall), "{}")
    assert outcome.error == "the tool timed out after 0.3 s"


async def test_a_tool_that_returns_a_megabyte_is_refused_by_the_cap() -> None:
    outcome = await execute(tool_from_function(misbehaving.flood, max_output_chars=16_384), "{}")
    assert outcome.result is None
    assert outcome.error == "the tool's output is 1,000,000 characters, over the limit of 16,384"


async def test_arguments_are_checked_before_the_tool_runs() -> None:
    lookup = tool_from_function(misbehaving.lookup)
    assert (await execute(lookup, '{"key": ')).error.startswith("the arguments are not valid JSON")  # type: ignore[union-attr]
    assert (await execute(lookup, "[1]")).error == "the arguments must be a JSON object"
    assert (await execute(lookup, '{"key": "k", "limit": 11}')).error == (
        "invalid argument 'limit': Input should be less than or equal to 10"
    )
    assert (await execute(lookup, '{"kee": "k"}')).error == "invalid argument 'key': Field required"
    done = await execute(lookup, '{"key": "k", "limit": 2}')
    assert orjson.loads(done.result or "") == {"key": "k", "results": ["k-0", "k-1"]}


async def test_a_tool_calling_sys_exit_does_not_end_the_process() -> None:
    def leave() -> str:
        """Exit the interpreter."""
        sys.exit(3)

    async def leave_too() -> str:
        """Exit the interpreter from a coroutine."""
        sys.exit("bye")

    assert (await execute(tool_from_function(leave), "{}")).error == "ToolExit: the tool called sys.exit(3)"
    assert (await execute(tool_from_function(leave_too), "{}")).error == "ToolExit: the tool called sys.exit('bye')"


async def test_a_run_that_stops_cancels_its_tool() -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def patient() -> str:
        """Wait until cancelled."""
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()
        return "unreachable"

    task = asyncio.create_task(execute(tool_from_function(patient, timeout_s=60), "{}"))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cancelled.is_set()  # cancellation reached the tool: it is not left running


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("2 + 3 * 4", 14),
        ("(2 + 3) * 4", 20),
        ("7 // 2 + 7 % 2", 4),
        ("2 ** 10", 1024),
        ("-3 + +1", -2),
        ("sqrt(16) + abs(-1)", 5.0),
        ("max(1, 5, 3) - min(2, 4)", 3),
        ("round(pi, 2)", 3.14),
        ("1 / 4", 0.25),
    ],
)
def test_the_calculator_does_arithmetic(expression: str, value: float) -> None:
    assert calculator(expression) == value


@pytest.mark.parametrize(
    ("expression", "error"),
    [
        ("__import__('os').system('true')", "unsupported syntax"),
        ("().__class__", "unsupported syntax"),
        ("(lambda: 1)()", "unsupported syntax"),
        ("open('/etc/passwd')", "unsupported syntax"),
        ("'a' * 3", "unsupported syntax"),
        ("9 ** 9 ** 9", "too large"),
        ("10 ** 400 * 10 ** 900", "too large"),
        ("1 +", "not an arithmetic expression"),
        ("1" * 501, "longer than 500"),
        ("round(2.5, ndigits=1)", "no keyword arguments"),
    ],
)
def test_the_calculator_refuses_anything_but_arithmetic(expression: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        evaluate(expression)


async def test_the_calculator_refuses_division_by_zero_as_a_tool_error() -> None:
    outcome = await execute(tool_from_function(calculator), '{"expression": "1 / 0"}')
    assert outcome.error == "ZeroDivisionError: division by zero"


def test_current_time_knows_time_zones() -> None:
    assert current_time("UTC").endswith("+00:00")
    assert current_time("Asia/Kolkata").endswith("+05:30")
    with pytest.raises(ValueError, match="unknown time zone"):
        current_time("Mars/Olympus_Mons")


def test_the_registry_gathers_builtins_and_config_functions() -> None:
    registry = ToolRegistry(
        ToolSettings(
            functions=["tests.fakes.tools:lookup", "tests.fakes.tools:stall"], timeout_s=2, max_output_chars=99
        )
    )
    assert {"current_time", "calculator", "lookup", "stall"} <= set(registry.tools)
    assert registry.tools["lookup"].timeout_s == 2 and registry.tools["lookup"].max_output_chars == 99
    assert registry.tools["stall"].timeout_s == 0.3  # the tool's own option wins
    toolset = registry.select(["lookup", "calculator", "lookup"])
    assert toolset is not None and toolset.names == ["lookup", "calculator"] and toolset.max_steps == 8
    assert registry.select(None) is None and registry.select([]) is None
    with pytest.raises(InvalidRequest) as refused:
        registry.select(["calculator", "teleport"])
    assert refused.value.param == "relay_tools[1]" and "Unknown tool 'teleport'" in refused.value.message
    with pytest.raises(ValueError, match="names 'nope'"):
        ToolRegistry(ToolSettings(enabled=["nope"]))
    with pytest.raises(ModuleNotFoundError):
        ToolRegistry(ToolSettings(functions=["tests.fakes.no_such_module:tool"]))
    assert ToolRegistry(ToolSettings(builtin=False)).tools == {}


def test_plugins_come_from_the_relay_tools_entry_point_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    info = tmp_path / "relay_test_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: relay-test-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[relay.tools]\nlookup = tests.fakes.tools:lookup\nbroken = tests.fakes.tools:not_there\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = ToolRegistry()
    assert "lookup" in registry.tools and registry.tools["lookup"].description == "Look up a key."
    assert "plugin broken" in caplog.text  # a broken plugin is logged and skipped; the others load
    assert "lookup" not in ToolRegistry(ToolSettings(entry_points=False)).tools
