"""The HTML report: one self-contained file (inline CSS, inline SVG, a few lines of inline script).

It opens from disk with no network: the summary table, four charts (pass
rate, latency and TTFT distributions, cost) and the row-by-provider matrix,
where each cell shows pass or fail across its repeats, the first reply, and
the scorers' reasons.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import Any

from relay.evaluation.charts import bar_chart, box_chart
from relay.evaluation.summary import SUMMARY_HEADER, CandidateSummary, format_ms, percentile, summary_row

__all__ = ["render_report"]

_STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px;color:#1d1d1f;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 10px}
.meta{color:#555;margin:0 0 12px}
table{border-collapse:collapse}th,td{border:1px solid #ddd;padding:4px 8px;vertical-align:top;text-align:left}
th{background:#f4f4f6;position:sticky;top:0}
#summary td.n{text-align:right;font-variant-numeric:tabular-nums}
.charts{display:flex;flex-wrap:wrap;gap:24px}figure{margin:0}figcaption{font-weight:600;margin-bottom:4px}
svg.chart{font:12px system-ui,sans-serif;background:#fafafa;border:1px solid #eee}
svg .na{fill:#999}
td.cell{min-width:180px;max-width:320px}td.pass{background:#e7f6ea}td.fail{background:#fde8e6}
td.error{background:#eee}td.missing{background:#fff;color:#999}
.verdict{font-weight:600}.out{white-space:pre-wrap;font-family:ui-monospace,monospace;font-size:12px;
max-height:6em;overflow:hidden;margin:2px 0}
details{font-size:12px;color:#444}details pre{white-space:pre-wrap;max-height:24em;overflow:auto}
.stats{color:#666;font-size:12px}
"""
_SCRIPT = """
document.getElementById('only-failing').addEventListener('change', function (event) {
  for (const row of document.querySelectorAll('#matrix tbody tr')) {
    row.hidden = event.target.checked && row.dataset.failing !== '1';
  }
});
"""


def _summary_rows(summaries: Sequence[CandidateSummary]) -> str:
    out = []
    for s in summaries:
        label, *cells = summary_row(s)
        numbers = "".join(f'<td class="n">{escape(c)}</td>' for c in cells)
        out.append(f"<tr><th>{escape(label)}</th>{numbers}</tr>")
    return "".join(out)


def _cell(records: list[dict[str, Any]]) -> tuple[str, bool]:
    """A matrix cell over a candidate's repeats of one row; True when any repeat failed."""
    if not records:
        return '<td class="cell missing">not run</td>', False
    passed = sum(bool(r.get("passed")) for r in records)
    errors = [r for r in records if r["status"] == "error"]
    state = "pass" if passed == len(records) else ("error" if len(errors) == len(records) else "fail")
    first = records[0]
    latency = percentile([r["latency_ms"] for r in records if r.get("latency_ms") is not None], 0.5)
    verdict = f"{'✓' if state == 'pass' else '✗'} {passed}/{len(records)}"
    details = []
    for record in records:
        lines = [f"repeat {record['repeat']}: {record['status']}, finish {record.get('finish_reason') or '-'}"]
        if record.get("error"):
            lines.append(f"error: {record['error'].get('error_type')}: {record['error'].get('message')}")
        lines += [
            f"{s['name']}: {'pass' if s['passed'] else 'fail'} ({s['score']:.2f}) {s['reason']}"
            for s in record.get("scores") or ()
        ]
        lines.append(record.get("output") or "")
        details.append("\n".join(lines))
    shown = first.get("output") or (first.get("error") or {}).get("message", "")
    html = (
        f'<td class="cell {state}" data-state="{state}"><span class="verdict">{verdict}</span> '
        f'<span class="stats">{format_ms(latency)}</span><div class="out">{escape(shown[:400])}</div>'
        f"<details><summary>details</summary><pre>{escape(chr(10).join(details))}</pre></details></td>"
    )
    return html, state != "pass"


def _matrix(records: Sequence[dict[str, Any]], labels: Sequence[str]) -> str:
    rows: dict[str, dict[str, list[dict[str, Any]]]] = {}
    firsts: dict[str, dict[str, Any]] = {}
    for record in records:
        rows.setdefault(record["row_id"], {}).setdefault(record["label"], []).append(record)
        firsts.setdefault(record["row_id"], record)
    head = "".join(f"<th>{escape(label)}</th>" for label in labels)
    body = []
    for row_id, by_label in rows.items():
        first = firsts[row_id]
        expected = first.get("expected")
        cells, failing = [], False
        for label in labels:
            html, failed = _cell(sorted(by_label.get(label, []), key=lambda r: r["repeat"]))
            cells.append(html)
            failing = failing or failed
        body.append(
            f'<tr data-row="{escape(row_id)}" data-failing="{int(failing)}"><th>{escape(row_id)}</th>'
            f'<td><div class="out">{escape((first.get("prompt") or "")[:400])}</div></td>'
            f"<td>{escape('' if expected is None else str(expected))}</td>{''.join(cells)}</tr>"
        )
    return (
        '<table id="matrix"><thead><tr><th>row</th><th>input</th><th>expected</th>'
        f"{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    )


def render_report(
    records: Sequence[dict[str, Any]], summaries: Sequence[CandidateSummary], *, title: str, meta: str = ""
) -> str:
    labels = [s.label for s in summaries]
    latencies: dict[str, list[float]] = {label: [] for label in labels}
    ttfts: dict[str, list[float]] = {label: [] for label in labels}
    for record in records:
        if record["status"] == "ok":
            if record.get("latency_ms") is not None:
                latencies.setdefault(record["label"], []).append(record["latency_ms"])
            if record.get("ttft_ms") is not None:
                ttfts.setdefault(record["label"], []).append(record["ttft_ms"])
    charts = [
        ("Pass rate", bar_chart("chart-pass-rate", "Pass rate", {s.label: s.pass_rate * 100 for s in summaries}, "%")),
        ("Latency distribution", box_chart("chart-latency", "Latency per cell", latencies)),
        ("Time to first token", box_chart("chart-ttft", "Time to first token", ttfts)),
        ("Cost", bar_chart("chart-cost", "Cost", {s.label: s.cost for s in summaries}, "$")),
    ]
    figures = "".join(f"<figure><figcaption>{escape(name)}</figcaption>{svg}</figure>" for name, svg in charts)
    header = "<tr>" + "".join(f"<th>{escape(name)}</th>" for name in SUMMARY_HEADER) + "</tr>"
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>"
        f'<h1>{escape(title)}</h1><p class="meta">{escape(meta)}</p>'
        f'<h2>Summary</h2><table id="summary"><thead>{header}</thead><tbody>{_summary_rows(summaries)}</tbody></table>'
        f'<h2>Charts</h2><div class="charts">{figures}</div>'
        '<h2>Rows &times; providers</h2><p><label><input type="checkbox" id="only-failing"> '
        "only rows with a failure</label></p>"
        f"{_matrix(records, labels)}<script>{_SCRIPT}</script></body></html>"
    )
