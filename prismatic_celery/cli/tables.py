"""Text tables for people: columns sized to their content and, on a terminal, to its width."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Sequence

__all__ = ["MIN_FIT_WIDTH", "mib", "na", "table", "terminal_width"]

#: The narrowest a column fitted to the terminal gets (it is cut with "..." below its content's width).
MIN_FIT_WIDTH = 20


def terminal_width() -> int | None:
    """The terminal's width in columns when standard output is one, else None (a pipe or file gets every
    character: nothing is cut for a script)."""
    if not sys.stdout.isatty():
        return None
    return shutil.get_terminal_size((120, 24)).columns


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], *, fit: int | None = None,
          width: int | None = None) -> str:
    """Left-aligned columns sized to their content, separated by two spaces (a header line, then one line per
    row). ``fit`` names the column that gives way when the table is wider than ``width`` (default: the
    terminal's width; no limit when the output is not a terminal): its cells are cut, ending in "..."."""
    cells = [[str(h) for h in headers]] + [["" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    limit = terminal_width() if width is None else width
    if fit is not None and limit is not None:
        others = sum(w for i, w in enumerate(widths) if i != fit) + 2 * (len(widths) - 1)
        room = max(MIN_FIT_WIDTH, limit - others)
        if widths[fit] > room:
            widths[fit] = room
            for r in cells:
                if len(r[fit]) > room:
                    r[fit] = r[fit][:room - 3] + "..."
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells)


def na(value: object, fmt: str = "{}") -> str:
    """``value`` formatted with ``fmt``, ``n/a`` when it is None."""
    return "n/a" if value is None else fmt.format(value)


def mib(value: int | None) -> str:
    """Bytes in MiB with one decimal, ``n/a`` when unknown."""
    return "n/a" if value is None else f"{value / 1048576:.1f} MiB"
