"""Policies a user controls when turning a raw log into a data set.

All work on :class:`Events`, parallel arrays of dense user and item codes,
values and optional times (one entry per logged event), and return new
events; :func:`recompare.data.build.build` applies them in this order:
duplicates, minimum rating, k-core.  They run on integer codes with numpy, so
an 18-million-row log takes seconds, not minutes.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..errors import RecompareError

DUPLICATE_POLICIES = ("sum", "max", "last")


@dataclass(frozen=True)
class Events:
    """One entry per event: ``user`` and ``item`` codes (int64), ``value`` (float64),
    ``time`` (int64 epoch seconds) or None."""

    user: np.ndarray
    item: np.ndarray
    value: np.ndarray
    time: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.user)

    def take(self, rows: np.ndarray) -> Events:
        """The events at ``rows`` (a boolean mask or integer positions)."""
        return Events(self.user[rows], self.item[rows], self.value[rows],
                      None if self.time is None else self.time[rows])


def resolve_duplicates(policy: str, has_value: bool) -> str:
    """``auto`` means ``sum`` for value-less logs (so values count events), else ``last``."""
    if policy == "auto":
        return "last" if has_value else "sum"
    if policy not in DUPLICATE_POLICIES:
        raise RecompareError(
            f"unknown duplicates policy {policy!r}; choose auto, {', '.join(DUPLICATE_POLICIES)}")
    return policy


def merge_duplicates(events: Events, policy: str, n_items: int) -> tuple[Events, int]:
    """One event per (user, item).

    Parameters
    ----------
    events : Events
    policy : {"sum", "max", "last"}
        ``sum`` adds values (and keeps the latest time), ``max`` keeps the event
        with the largest value, ``last`` keeps the latest event (by time when
        there are times, else by file order; file order breaks ties).
    n_items : int
        Number of item codes (pairs are keyed as ``user * n_items + item``).

    Returns
    -------
    (Events, int)
        The merged events, in file order, and the number merged away.
    """
    if policy not in DUPLICATE_POLICIES:
        raise RecompareError(
            f"unknown duplicates policy {policy!r}; choose {', '.join(DUPLICATE_POLICIES)}")
    key = events.user.astype(np.int64) * int(n_items) + events.item
    # a hash pass finds the (usually few) repeated pairs; only those are sorted
    repeated = np.flatnonzero(pd.Series(key).duplicated(keep=False).to_numpy())
    if not len(repeated):
        return events, 0
    if policy == "sum":
        order = repeated[np.argsort(key[repeated], kind="stable")]
    else:
        tiebreak = events.value if policy == "max" else events.time
        keys = (repeated, key[repeated]) if tiebreak is None else \
            (repeated, tiebreak[repeated], key[repeated])
        order = repeated[np.lexsort(keys)]
    sorted_key = key[order]
    starts = np.flatnonzero(np.r_[True, sorted_key[1:] != sorted_key[:-1]])
    if policy == "sum":
        kept = order[starts]  # the first event of each pair, holding the totals
        value = events.value.copy()
        value[kept] = np.add.reduceat(events.value[order], starts)
        time = events.time
        if time is not None:
            time = time.copy()
            time[kept] = np.maximum.reduceat(events.time[order], starts)
        events = Events(events.user, events.item, value, time)
    else:
        kept = order[np.r_[starts[1:], len(order)] - 1]  # the last of each sorted run
    keep = np.ones(len(key), dtype=bool)
    keep[repeated] = False
    keep[kept] = True
    return events.take(keep), int(len(key) - keep.sum())


def apply_min_rating(events: Events, min_rating: float) -> Events:
    """Implicit feedback: keep events with ``value >= min_rating`` and set their value to 1."""
    kept = events.take(events.value >= min_rating)
    return Events(kept.user, kept.item, np.ones(len(kept)), kept.time)


def k_core(events: Events, min_user: int = 1, min_item: int = 1) -> Events:
    """Repeatedly drop users with fewer than ``min_user`` and items with fewer than
    ``min_item`` events until both hold (dropping items can push users under)."""
    if min_user <= 1 and min_item <= 1:
        return events
    users, items = events.user, events.item
    keep = np.ones(len(events), dtype=bool)
    while True:
        user_count = np.bincount(users[keep], minlength=users.max(initial=-1) + 1)
        item_count = np.bincount(items[keep], minlength=items.max(initial=-1) + 1)
        ok = keep & (user_count[users] >= min_user) & (item_count[items] >= min_item)
        if ok.sum() == keep.sum():
            break
        keep = ok
    return events.take(keep)
