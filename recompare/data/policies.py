"""Policies a user controls when turning a raw log into a data set.

All work on a long-format frame with columns ``user``, ``item``, ``value`` and,
optionally, ``time`` (one row per logged event), and return a new frame.
Applied in this order by :func:`recompare.data.loaders.prepare`: duplicates,
minimum rating, k-core.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import RecompareError

DUPLICATE_POLICIES = ("sum", "max", "last")


def resolve_duplicates(policy: str, has_value: bool) -> str:
    """``auto`` means ``sum`` for value-less logs (so values count events), else ``last``."""
    if policy == "auto":
        return "last" if has_value else "sum"
    if policy not in DUPLICATE_POLICIES:
        raise RecompareError(
            f"unknown duplicates policy {policy!r}; choose auto, {', '.join(DUPLICATE_POLICIES)}")
    return policy


def merge_duplicates(log: pd.DataFrame, policy: str) -> tuple[pd.DataFrame, int]:
    """One row per (user, item).

    Parameters
    ----------
    log : DataFrame with columns user, item, value[, time]
    policy : {"sum", "max", "last"}
        ``sum`` adds values (and keeps the latest time), ``max`` keeps the row
        with the largest value, ``last`` keeps the latest row (by time when
        there is a time column, else by file order).

    Returns
    -------
    (DataFrame, int)
        The merged log, in the original order of first appearance, and the
        number of rows merged away.
    """
    if policy not in DUPLICATE_POLICIES:
        raise RecompareError(
            f"unknown duplicates policy {policy!r}; choose {', '.join(DUPLICATE_POLICIES)}")
    duplicated = log.duplicated(["user", "item"], keep=False)
    if not duplicated.any():
        return log, 0
    has_time = "time" in log.columns
    order_cols = ["user", "item"] + (["time"] if has_time else [])
    if policy == "sum":
        grouped = log.groupby(["user", "item"], sort=False, observed=True)
        merged = grouped["value"].sum().to_frame()
        if has_time:
            merged["time"] = grouped["time"].max()
        merged = merged.reset_index()
    else:
        # a stable sort keeps file order among equal keys, so "last" means the last row
        work = log.assign(_row=np.arange(len(log)))
        if policy == "max":
            work = work.sort_values(["user", "item", "value", "_row"], kind="stable")
        else:
            work = work.sort_values(order_cols + ["_row"], kind="stable")
        merged = work.drop_duplicates(["user", "item"], keep="last")
        merged = merged.sort_values("_row", kind="stable").drop(columns="_row")
    merged = merged.reset_index(drop=True)
    return merged, len(log) - len(merged)


def apply_min_rating(log: pd.DataFrame, min_rating: float) -> pd.DataFrame:
    """Implicit feedback: keep rows with ``value >= min_rating`` and set their value to 1."""
    kept = log.loc[log["value"] >= min_rating].copy()
    kept["value"] = 1.0
    return kept.reset_index(drop=True)


def k_core(log: pd.DataFrame, min_user: int = 1, min_item: int = 1) -> pd.DataFrame:
    """Repeatedly drop users with fewer than ``min_user`` and items with fewer than
    ``min_item`` interactions until both hold (dropping items can push users under)."""
    if min_user <= 1 and min_item <= 1:
        return log
    users = pd.factorize(log["user"])[0]
    items = pd.factorize(log["item"])[0]
    keep = np.ones(len(log), dtype=bool)
    while True:
        user_count = np.bincount(users[keep], minlength=users.max(initial=-1) + 1)
        item_count = np.bincount(items[keep], minlength=items.max(initial=-1) + 1)
        ok = keep & (user_count[users] >= min_user) & (item_count[items] >= min_item)
        if ok.sum() == keep.sum():
            break
        keep = ok
    return log.loc[keep].reset_index(drop=True)
