"""Columns aligned by terminal cells.

Widths come from wcwidth, which measures whole grapheme clusters (CJK and most emoji
take two cells, a combining accent none, a family emoji or a flag two); a cell too long
for its column is cut between grapheme clusters and ends with `…`. Colour is a rich
style on a cell and never counts toward its width.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import wcwidth
from rich.text import Text

GAP = "  "
ELLIPSIS = "…"
MIN_FLEXIBLE_WIDTH = 12
_CONTROL_STAND_INS = {"\n": "↵", "\r": "↵", "\t": " "}


def single_line(text: str) -> str:
    """`text` with line breaks shown as `↵` and other control characters as spaces."""
    return "".join(
        _CONTROL_STAND_INS.get(char, " ") if ord(char) < 32 or ord(char) == 127 else char
        for char in text
    )


def cell_width(text: str) -> int:
    """Terminal cells `text` takes (control characters count as none)."""
    return wcwidth.width(text, control_codes="ignore")


def cut(text: str, max_width: int) -> str:
    """`text` if it fits in `max_width` cells, else its longest prefix of whole grapheme
    clusters that fits with a trailing `…`."""
    if cell_width(text) <= max_width:
        return text
    kept, used = [], 0
    for grapheme in wcwidth.iter_graphemes(text):
        width = cell_width(grapheme)
        if used + width > max_width - 1:
            break
        kept.append(grapheme)
        used += width
    return "".join(kept) + ELLIPSIS


@dataclass(frozen=True)
class Column:
    """A column's header; `flexible` takes the width the others leave (cut with `…`)."""

    header: str
    align_right: bool = False
    flexible: bool = False


def _as_text(cell: Text | str) -> Text:
    return cell if isinstance(cell, Text) else Text(single_line(cell))


def _pad(cell: Text, width: int, align_right: bool) -> Text:
    padding = " " * (width - cell_width(cell.plain))
    return Text(padding, end="") + cell if align_right else cell + Text(padding)


def table(
    columns: Sequence[Column], rows: Sequence[Sequence[Text | str]], width: int
) -> list[Text]:
    """The header and one line per row, each cell padded to its column's width; the
    flexible column is cut so that a line fits in `width` cells when that is possible."""
    cells = [[_as_text(cell) for cell in row] for row in rows]
    headers = [Text(column.header, style="bold") for column in columns]
    widths = [
        max([cell_width(headers[i].plain)] + [cell_width(row[i].plain) for row in cells])
        for i in range(len(columns))
    ]
    for i, column in enumerate(columns):
        if column.flexible:
            others = sum(widths) - widths[i] + len(GAP) * (len(columns) - 1)
            widths[i] = min(widths[i], max(width - others, MIN_FLEXIBLE_WIDTH))
            for row in cells:
                row[i] = Text(cut(row[i].plain, widths[i]), style=row[i].style)
    lines = []
    for row in [headers, *cells]:
        line = Text()
        for i, (column, cell) in enumerate(zip(columns, row, strict=True)):
            if i:
                line += GAP
            line += _pad(cell, widths[i], column.align_right)
        line.rstrip()
        lines.append(line)
    return lines
