"""What a run leaves in its output folder: cells as JSONL and CSV (and Parquet with pyarrow), the report,
and the summary as JSON."""

from __future__ import annotations

import csv
import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from relay.evaluation.report import render_report
from relay.evaluation.results import CELL_COLUMNS
from relay.evaluation.summary import CandidateSummary

__all__ = ["write_jsonl", "write_csv", "write_parquet", "write_outputs"]

# Nested values (scores, error, expected) are JSON text in flat formats.
_NESTED = ("expected", "error", "scores")


def write_jsonl(records: Sequence[dict[str, Any]], path: Path) -> Path:
    with path.open("wb") as handle:
        for record in records:
            handle.write(orjson.dumps({column: record.get(column) for column in CELL_COLUMNS}) + b"\n")
    return path


def _flat(record: dict[str, Any]) -> dict[str, Any]:
    flat = {column: record.get(column) for column in CELL_COLUMNS}
    for column in _NESTED:
        if flat[column] is not None:
            flat[column] = orjson.dumps(flat[column]).decode()
    return flat


def write_csv(records: Sequence[dict[str, Any]], path: Path) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=CELL_COLUMNS)
        writer.writeheader()
        for record in records:
            writer.writerow(_flat(record))
    return path


def write_parquet(records: Sequence[dict[str, Any]], path: Path) -> Path | None:
    """Parquet when pyarrow is installed (an optional extra); None otherwise."""
    if importlib.util.find_spec("pyarrow") is None:
        return None
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist([_flat(record) for record in records])
    pq.write_table(table, path)
    return path


def write_outputs(
    out_dir: str | Path,
    records: Sequence[dict[str, Any]],
    summaries: Sequence[CandidateSummary],
    *,
    title: str = "Relay evaluation",
    meta: str = "",
) -> dict[str, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = {
        "jsonl": write_jsonl(records, out / "cells.jsonl"),
        "csv": write_csv(records, out / "cells.csv"),
    }
    parquet = write_parquet(records, out / "cells.parquet")
    if parquet is not None:
        written["parquet"] = parquet
    report = out / "report.html"
    report.write_text(render_report(records, summaries, title=title, meta=meta), encoding="utf-8")
    written["html"] = report
    summary = out / "summary.json"
    summary.write_bytes(orjson.dumps([s.to_dict() for s in summaries], option=orjson.OPT_INDENT_2))
    written["summary"] = summary
    return written
