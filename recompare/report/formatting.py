"""How numbers are written in every table and report: one formatter for all of them."""
from __future__ import annotations

import numbers
from typing import Any


def fmt(value: Any, digits: int = 4, *, significant: bool = False, missing: str = "-") -> str:
    """A number as the tables and reports show it.

    Parameters
    ----------
    value : number, str or None
        Anything else than a number is written with ``str``.
    digits : int
        Decimals (fixed style) or significant digits (``significant=True``).
    significant : bool
        False: a fixed number of decimals (``0.1235``), for columns of scores that
        line up. True: significant digits (``0.123``), values of 1,000 or more as
        whole numbers with thousands separators (``12,346``), integers with separators;
        for figures of any size in prose and benchmark tables.
    missing : str
        What a ``None`` becomes.
    """
    if value is None:
        return missing
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return str(value)
    if isinstance(value, numbers.Integral):
        return f"{value:,}" if significant else str(value)
    if not significant:
        return f"{value:.{digits}f}"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def fmt_bytes(n: float | None) -> str:
    """A size in bytes with a binary unit (``12.3 MiB``); ``n/a`` for None."""
    if n is None:
        return "n/a"
    for unit in ("B", "KiB", "MiB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"
