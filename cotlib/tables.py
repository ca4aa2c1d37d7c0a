"""Markdown tables, declared once: the reports and cards cotlib writes build their tables here.

The format is GitHub's pipe table, compact: one space either side of every cell and no padding
(``| a | b |``), then a rule with ``---`` for a left-aligned column and ``---:`` for a
right-aligned one. pandas' ``DataFrame.to_markdown`` (through ``tabulate``, which cotlib does not
depend on) pads every column to its widest cell (checked with tabulate 0.10.0 and the ``pipe``
and ``github`` formats), so using it would change the text of every report and card already
written; the compact form is kept, in this one place.

>>> print(markdown_table(["system", "accuracy"], [["direct", "41.0%"], ["cot", "57.5%"]], "lr"))
| system | accuracy |
|---|---:|
| direct | 41.0% |
| cot | 57.5% |
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

#: The rule under the header for each alignment: ``l`` left, ``r`` right.
RULES = {"l": "---|", "r": "---:|"}


def table_row(cells: Iterable[Any]) -> str:
    """One table line: each cell as ``str(cell)``, one space either side, no padding.

    >>> table_row(["kept", 3, ""])
    '| kept | 3 |  |'
    """
    return "| " + " | ".join(map(str, cells)) + " |"


def table_rule(align: str) -> str:
    """The line under the header, one column per letter of ``align`` (``l`` or ``r``).

    >>> table_rule("lrr")
    '|---|---:|---:|'
    """
    unknown = sorted(set(align) - set(RULES))
    if unknown:
        raise ValueError(f"alignment letters {unknown} are not known: use 'l' (left) or "
                         "'r' (right), one per column, e.g. 'lrr'")
    return "|" + "".join(RULES[a] for a in align)


def markdown_table(header: Sequence[Any], rows: Iterable[Sequence[Any]],
                   align: str | None = None) -> str:
    """A markdown table (lines joined by newlines, no newline at the end).

    ``header`` names the columns; each row gives one cell per column (written with ``str``);
    ``align`` is one letter per column, ``l`` or ``r`` (default: all left).

    >>> markdown_table(["a", "b"], [[1]])
    Traceback (most recent call last):
    ...
    ValueError: row 1 has 1 cells for 2 columns: give one cell per column (an empty one as '')
    """
    align = "l" * len(header) if align is None else align
    if len(align) != len(header):
        raise ValueError(f"align {align!r} has {len(align)} letters for {len(header)} columns: "
                         "give one letter ('l' or 'r') per column")
    lines = [table_row(header), table_rule(align)]
    for number, row in enumerate(rows, start=1):
        if len(row) != len(header):
            raise ValueError(f"row {number} has {len(row)} cells for {len(header)} columns: "
                             "give one cell per column (an empty one as '')")
        lines.append(table_row(row))
    return "\n".join(lines)


def frame_table(df) -> str:
    """A pandas DataFrame as a markdown table, its index as the first column (headed by the
    index's name, or empty); every column left-aligned.

    >>> import pandas as pd
    >>> print(frame_table(pd.DataFrame({"n": [1]}, index=["kept"])))
    |  | n |
    |---|---|
    | kept | 1 |
    """
    return markdown_table([df.index.name or "", *df.columns],
                          [[index, *row] for index, row in
                           zip(df.index, df.itertuples(index=False), strict=True)])
