"""Tables that fit the console: split wide tables instead of letting rich cut numbers.

rich shrinks a table that is wider than the console by wrapping its cells and, when
that is not enough, by cropping them: ``0.077`` becomes ``0.07`` without a mark.  The
helpers here measure a table's narrowest rendering and, when even that is too wide,
build it again from fewer value columns at a time (the label columns repeated), so every
number is printed whole.
"""
from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")

#: width of the measuring console: wide enough never to clamp a measurement
_MEASURE_WIDTH = 100_000


def min_width(renderable: Any) -> int:
    """The fewest columns ``renderable`` needs without cropping a word (rich's minimum)."""
    from rich.console import Console
    from rich.measure import Measurement

    console = Console(file=io.StringIO(), width=_MEASURE_WIDTH, color_system=None)
    return Measurement.get(console, console.options, renderable).minimum


def natural_width(renderable: Any) -> int:
    """The columns ``renderable`` takes when nothing is wrapped (rich's maximum): a table
    this wide or narrower is printed as built, nothing squeezed."""
    from rich.console import Console
    from rich.measure import Measurement

    console = Console(file=io.StringIO(), width=_MEASURE_WIDTH, color_system=None)
    return Measurement.get(console, console.options, renderable).maximum


def split_to_fit(build: Callable[[Sequence[T], str], Any], columns: Sequence[T],
                 width: int, measure: Callable[[Any], int] = min_width) -> list:
    """Tables of ``build(chunk, part)`` over consecutive chunks of ``columns`` that fit.

    Parameters
    ----------
    build : callable
        ``build(chunk, part)`` returns a rich table with the label columns and the value
        columns in ``chunk``; ``part`` is ``""`` for one table, else ``" (1/2)"`` etc.
    columns : sequence
        The value columns, in display order.
    width : int
        The console's width.
    measure : callable
        A table's width to compare with ``width``: :func:`min_width` (the default) lets
        rich wrap headers and labels; :func:`natural_width` fits tables as built.

    Returns
    -------
    list of tables
        One table when it fits; else the fewest equal-sized chunks that all fit (at
        worst one value column per table).
    """
    n_columns = max(1, len(columns))
    tables: list = []
    for n_parts in range(1, n_columns + 1):
        size = math.ceil(len(columns) / n_parts)
        chunks = [columns[i:i + size] for i in range(0, len(columns), size)] or [columns]
        tables = [build(chunk, "" if len(chunks) == 1 else f" ({i}/{len(chunks)})")
                  for i, chunk in enumerate(chunks, start=1)]
        if all(measure(table) <= width for table in tables):
            return tables
    return tables
