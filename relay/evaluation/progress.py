"""The live progress display: one bar for the run, one line per candidate with its throughput and errors.

On a terminal rich draws it, with a coloured bar per candidate, redrawn in place
at most ten times a second; into a pipe or a CI log it prints the same figures
as plain lines every few seconds instead.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TextIO

from rich.console import Console, Group
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from relay.cli.output import plain_text

__all__ = ["Progress"]

_BAR = 28


@dataclass(slots=True)
class _Counts:
    total: int
    done: int = 0
    errors: int = 0


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def _errors(count: int) -> str:
    return f"{count:,} error{'s' if count != 1 else ''}"


class Progress:
    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        interactive: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
        interval_s: float | None = None,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.interactive = self.stream.isatty() if interactive is None else interactive
        self.clock = clock
        self.interval_s = interval_s if interval_s is not None else (0.1 if self.interactive else 5.0)
        self.counts: dict[str, _Counts] = {}
        self.started = clock()
        self._console = Console(file=self.stream, force_terminal=True, highlight=False) if self.interactive else None
        self._drawn = 0
        self._last_draw = float("-inf")

    def start(self, totals: Mapping[str, int]) -> None:
        self.counts = {label: _Counts(total) for label, total in totals.items()}
        self.started = self.clock()
        self.draw(force=True)

    def update(self, label: str, *, error: bool) -> None:
        counts = self.counts.setdefault(label, _Counts(0))
        counts.done += 1
        counts.errors += error
        self.draw()

    def _elapsed(self) -> float:
        return max(self.clock() - self.started, 1e-9)

    def _headline(self) -> tuple[int, int, str]:
        """Cells done, cells in all, and the run's rate and ETA (or elapsed time once done)."""
        total = sum(c.total for c in self.counts.values())
        done = sum(c.done for c in self.counts.values())
        rate = done / self._elapsed()
        eta = f"ETA {_duration((total - done) / rate)}" if rate and done < total else _duration(self._elapsed())
        return done, total, f"{rate:,.1f} cells/s  {eta}"

    def _candidates(self, *, styled: bool) -> Table:
        grid = Table.grid(padding=(0, 2))
        elapsed = self._elapsed()
        for label, counts in self.counts.items():
            cells: list[str | Text | ProgressBar] = [label]
            if styled:
                cells.append(ProgressBar(total=max(counts.total, 1), completed=counts.done, width=_BAR // 2))
            cells += [f"{counts.done:,}/{counts.total:,}", f"{counts.done / elapsed:,.1f}/s"]
            cells.append(Text(_errors(counts.errors), style="red" if styled and counts.errors else ""))
            grid.add_row(*cells)
        return grid

    def render(self) -> list[str]:
        """The display as plain lines: what a pipe or a CI log gets."""
        done, total, pace = self._headline()
        fraction = done / total if total else 1.0
        filled = round(fraction * _BAR)
        lines = [f"eval {done:,}/{total:,} {fraction:4.0%} [{'#' * filled}{'.' * (_BAR - filled)}] {pace}"]
        if self.counts:
            lines += [f"  {line}" for line in plain_text(self._candidates(styled=False)).splitlines()]
        return lines

    def _renderable(self) -> Group:
        done, total, pace = self._headline()
        headline = Table.grid(padding=(0, 1))
        headline.add_row(
            Text("eval", style="bold"),
            ProgressBar(total=max(total, 1), completed=done, width=_BAR),
            f"{done:,}/{total:,}",
            f"{done / total if total else 1.0:4.0%}",
            pace,
        )
        return Group(headline, self._candidates(styled=True))

    def draw(self, *, force: bool = False) -> None:
        now = self.clock()
        if not force and now - self._last_draw < self.interval_s:
            return
        self._last_draw = now
        if self._console is None:
            self.stream.write("\n".join(self.render()) + "\n")
        else:
            with self._console.capture() as capture:
                self._console.print(self._renderable())
            text = capture.get()
            # Back to the first line drawn last time (CSI n F), and clear from there down (CSI J).
            up = f"\x1b[{self._drawn}F\x1b[J" if self._drawn else ""
            self.stream.write(up + text)
            self._drawn = text.count("\n")
        self.stream.flush()

    def close(self) -> None:
        self.draw(force=True)
