"""The live progress display: one bar for the run, one line per candidate with its throughput and errors.

On a terminal it redraws in place at most ten times a second; into a pipe or
a CI log it prints the same lines every few seconds instead.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TextIO

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

    def render(self) -> list[str]:
        elapsed = max(self.clock() - self.started, 1e-9)
        total = sum(c.total for c in self.counts.values())
        done = sum(c.done for c in self.counts.values())
        fraction = done / total if total else 1.0
        filled = round(fraction * _BAR)
        rate = done / elapsed
        eta = f"ETA {_duration((total - done) / rate)}" if rate and done < total else _duration(elapsed)
        lines = [
            f"eval {done:,}/{total:,} {fraction:4.0%} [{'#' * filled}{'.' * (_BAR - filled)}] "
            f"{rate:,.1f} cells/s  {eta}"
        ]
        width = max((len(label) for label in self.counts), default=0)
        for label, counts in self.counts.items():
            lines.append(
                f"  {label.ljust(width)}  {counts.done:,}/{counts.total:,}  {counts.done / elapsed:,.1f}/s  "
                f"{counts.errors:,} error{'s' if counts.errors != 1 else ''}"
            )
        return lines

    def draw(self, *, force: bool = False) -> None:
        now = self.clock()
        if not force and now - self._last_draw < self.interval_s:
            return
        self._last_draw = now
        lines = self.render()
        if self.interactive:
            up = f"\x1b[{self._drawn}F" if self._drawn else ""
            self.stream.write(up + "".join(f"\x1b[2K{line}\n" for line in lines))
            self._drawn = len(lines)
        else:
            self.stream.write("\n".join(lines) + "\n")
        self.stream.flush()

    def close(self) -> None:
        self.draw(force=True)
