"""``relay eval``: a dataset against several providers, on a Ray cluster, resumable, with a cost ceiling.

Exit codes: 0 done; 1 a provider's pass rate is under ``--fail-under``;
2 bad input (dataset, provider, scorer, flag); 3 refused by ``--max-cost``;
130 stopped (Ctrl-C), with every finished cell kept for the rerun.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from relay.cli.output import console_for
from relay.config import RelaySettings
from relay.evaluation.api import default_out, preflight, prepare
from relay.evaluation.costs import CostCeilingExceeded, PriceTable
from relay.evaluation.dataset import DatasetError
from relay.evaluation.progress import Progress
from relay.evaluation.spec import SCORER_HELP, EvalOptions, parse_fraction
from relay.evaluation.summary import summary_grid

__all__ = ["add_eval_parser", "run_eval", "parse_per_provider", "load_settings"]

log = logging.getLogger("relay.eval")
EXIT_FAIL_UNDER, EXIT_USAGE, EXIT_COST, EXIT_STOPPED = 1, 2, 3, 130


def add_eval_parser(commands: Any, common: list[argparse.ArgumentParser]) -> None:
    """``common``: the options every command takes (``--verbose``)."""
    parser = commands.add_parser(
        "eval",
        parents=common,
        help="run a dataset against several providers and score the replies",
        description="Each row x provider x repeat is one cell. Finished cells are stored in --out and never called "
        "again: rerun the same command to resume.",
    )
    parser.add_argument(
        "dataset",
        help="JSONL or CSV rows (messages or prompt + vars), OpenAI Batch JSONL, or "
        "Anthropic Message Batches (JSONL or the batch JSON body)",
    )
    parser.add_argument("--providers", required=True, help="comma-separated PROVIDER or PROVIDER/MODEL")
    parser.add_argument("--repeat", type=int, default=1, help="calls per row and provider (default 1)")
    parser.add_argument("--scorer", action="append", default=[], metavar="SPEC", help=SCORER_HELP)
    parser.add_argument("--out", default=None, help="output folder (default .relay/eval/DATASET_NAME)")
    parser.add_argument("--template", default=None, help="user message template with {{var}} from each row")
    parser.add_argument("--template-file", default=None, help="read the template from a file")
    parser.add_argument("--max-tokens", type=int, default=None, help="max_tokens for rows that set none")
    parser.add_argument("--temperature", type=float, default=None)
    parser.add_argument(
        "--concurrency", default="8", help="cells in flight per provider: N, or N,PROVIDER=N,... (default 8)"
    )
    parser.add_argument("--rpm", default=None, help="cluster-wide requests per minute: PROVIDER=N,... or N for all")
    parser.add_argument("--tpm", default=None, help="cluster-wide tokens per minute: PROVIDER=N,... or N for all")
    parser.add_argument("--max-cost", type=float, default=None, help="refuse to start above this worst case (USD)")
    parser.add_argument("--force", action="store_true", help="start even above --max-cost")
    parser.add_argument("--retry-errors", action="store_true", help="call again the cells that ended in an error")
    parser.add_argument("--fail-under", default=None, help="exit 1 if a provider's pass rate is below (0.9 or 90%%)")
    parser.add_argument("--prices", default=None, help="price table (default config/prices.yaml)")
    parser.add_argument("--config", default="config/serve.yaml", help="Serve config whose providers are used")
    parser.add_argument(
        "--address",
        default=os.environ.get("RAY_ADDRESS"),
        help="Ray cluster to run on (e.g. auto); default: start a local one",
    )
    parser.add_argument("--results-url", default=None, help="results table: sqlite:///PATH or postgresql://...")
    parser.add_argument("--no-progress", action="store_true", help="no live progress display")


def parse_per_provider(text: str | None, providers: set[str], *, integer: bool = False) -> tuple[float | None, dict]:
    """``N`` and/or ``PROVIDER=N`` items: (the default for all, the overrides)."""
    default: float | None = None
    overrides: dict[str, float] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        name, sep, value = item.partition("=")
        number = int(value if sep else name) if integer else float(value if sep else name)
        if number <= 0:
            raise ValueError(f"{item!r}: must be positive")
        if not sep:
            default = number
        elif name.strip() not in providers:
            raise ValueError(f"{item!r}: {name.strip()!r} is not one of the providers of this run")
        else:
            overrides[name.strip()] = number
    return default, overrides


def load_settings(path: Path, explicit: bool) -> RelaySettings:
    """The providers of the Serve config's first application; the built-in defaults if there is no file."""
    if not path.is_file():
        if explicit:
            raise ValueError(f"config file {path} not found")
        return RelaySettings()
    config = yaml.safe_load(path.read_text()) or {}
    applications = config.get("applications") or [{}]
    args = dict(applications[0].get("args") or {})
    for provider in args.get("providers") or ():
        if "api_key" in provider:
            raise ValueError(
                f"{path}: provider '{provider.get('provider_id')}' has an api_key in the file; "
                "name an environment variable with api_key_env"
            )
    return RelaySettings.model_validate(args)


def _options(args: argparse.Namespace, providers: set[str]) -> EvalOptions:
    concurrency, concurrency_for = parse_per_provider(args.concurrency, providers, integer=True)
    rpm_all, rpm = parse_per_provider(args.rpm, providers)
    tpm_all, tpm = parse_per_provider(args.tpm, providers)
    params: dict[str, Any] = {}
    if args.max_tokens is not None:
        params["max_tokens"] = args.max_tokens
    if args.temperature is not None:
        params["temperature"] = args.temperature
    if args.repeat < 1:
        raise ValueError("--repeat must be at least 1")
    return EvalOptions(
        repeat=args.repeat,
        concurrency=int(concurrency or 8),
        concurrency_for={k: int(v) for k, v in concurrency_for.items()},
        rpm={p: rpm.get(p, rpm_all) for p in providers if rpm.get(p, rpm_all) is not None},  # type: ignore[misc]
        tpm={p: tpm.get(p, tpm_all) for p in providers if tpm.get(p, tpm_all) is not None},  # type: ignore[misc]
        max_cost=args.max_cost,
        force=args.force,
        retry_errors=args.retry_errors,
        fail_under=parse_fraction(args.fail_under) if args.fail_under is not None else None,
        params=params,
    )


def run_eval(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(Path(args.config), explicit=args.config != "config/serve.yaml")
        template = Path(args.template_file).read_text(encoding="utf-8") if args.template_file else args.template
        prepared = prepare(args.dataset, args.providers, settings.providers, args.scorer, template)
        options = _options(args, prepared.providers)
        prices = PriceTable.load(args.prices)
    except (DatasetError, ValueError, OSError, ValidationError, TypeError) as exc:
        print(f"relay eval: {exc}", file=sys.stderr)
        return EXIT_USAGE
    out = Path(args.out) if args.out else default_out(args.dataset)
    try:
        estimate = preflight(prepared, out=out, options=options, prices=prices, results_url=args.results_url)
    except CostCeilingExceeded as exc:
        print(f"relay eval: {exc}", file=sys.stderr)
        return EXIT_COST
    print(f"relay eval: {estimate.describe()}", file=sys.stderr)
    import ray

    from actors.evaluation import NAMESPACE, run_on_cluster

    ray.init(
        address=args.address,
        namespace=NAMESPACE,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.WARNING,
    )
    logging.getLogger("ray.serve").setLevel(logging.WARNING)  # the progress display is the run's voice
    progress = None if args.no_progress else Progress(sys.stderr)
    try:
        result = asyncio.run(
            run_on_cluster(
                prepared,
                settings=settings,
                options=options,
                out=out,
                prices=prices,
                results_url=args.results_url,
                progress=progress,
            )
        )
    except CostCeilingExceeded as exc:
        print(f"relay eval: {exc}", file=sys.stderr)
        return EXIT_COST
    except KeyboardInterrupt:
        print(
            f"relay eval: stopped; finished cells are stored in {out}: run the same command to resume", file=sys.stderr
        )
        return EXIT_STOPPED
    finally:
        ray.shutdown()
    console = console_for(sys.stdout)
    console.print(summary_grid(result.summaries, terminal=console.is_terminal))
    print(
        f"\n{result.called} cells called, {result.reused} reused from earlier runs, {result.rescored} re-scored "
        f"in {result.wall_s:.1f} s; worst case was ${result.estimate.total:.4f}"
    )
    print(f"report: {out / 'report.html'}  cells: {out / 'cells.jsonl'}, {out / 'cells.csv'}")
    for summary in result.failing:
        print(f"FAIL: {summary.label} passed {summary.pass_rate:.1%} < {options.fail_under:.1%}", file=sys.stderr)
    return result.exit_code
