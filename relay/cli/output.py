"""Terminal output: rich tables and colour on a terminal, plain text into a pipe or a file.

Plain means what ``grep``, ``awk`` and a CI log expect: no ANSI codes, no
box-drawing characters, and no wrapping at 80 columns.
"""

from __future__ import annotations

from typing import IO

from rich import box
from rich.console import Console, RenderableType
from rich.table import Column, Table

__all__ = ["PLAIN_HEAD", "console_for", "new_table", "plain_text"]

# A rule of ASCII dashes under the header and spaces between columns; nothing else is drawn.
PLAIN_HEAD = box.Box("    \n    \n -  \n    \n    \n    \n    \n    \n", ascii=True)
_NO_WRAP = 10_000


def console_for(file: IO[str] | None = None) -> Console:
    """A console on ``file`` (stdout by default): styled if it is a terminal, else plain and never wrapped."""
    console = Console(file=file, highlight=False, soft_wrap=True)
    if console.is_terminal:
        return console
    return Console(file=file, highlight=False, soft_wrap=True, color_system=None, width=_NO_WRAP)


def new_table(*columns: str | Column, terminal: bool) -> Table:
    """A table with a header rule: box-drawing lines on a terminal, ASCII dashes otherwise."""
    return Table(
        *columns,
        box=box.SIMPLE_HEAD if terminal else PLAIN_HEAD,
        show_edge=False,
        pad_edge=False,
        header_style="bold" if terminal else "",
    )


def plain_text(renderable: RenderableType) -> str:
    """What ``renderable`` prints into a pipe, as a string (trailing spaces of each line removed)."""
    console = Console(color_system=None, width=_NO_WRAP, highlight=False, soft_wrap=True)
    with console.capture() as capture:
        console.print(renderable)
    return "\n".join(line.rstrip() for line in capture.get().splitlines())
