"""From a raw log to a :class:`~recompare.data.dataset.Dataset`: ids, policies, matrices.

:func:`build` indexes the ids once (sorted, numerically when all are integers),
applies the user's policies on integer codes (:mod:`recompare.data.policies`),
drops ids no event is left for, and builds the CSR matrices and side data.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..errors import RecompareError
from .dataset import Dataset, IdMap
from .policies import Events, apply_min_rating, k_core, merge_duplicates, resolve_duplicates

Emit = Callable[[dict], None]


@dataclass
class RawData:
    """A log before policies: one row per event, plus optional side tables.

    Attributes
    ----------
    log : DataFrame
        Columns ``user``, ``item`` (integer, text or categorical ids),
        ``value`` (float, or absent for value-less logs), ``time`` (int64
        epoch seconds, optional).
    item_table, user_table : DataFrame or None
        Indexed by id (str); item columns ``group`` (primary group name or
        missing) plus metadata; user columns are features (``group`` = a user group).
    feature_kinds : dict
        Feature column -> ``"numeric"`` or ``"categorical"``.
    """

    log: pd.DataFrame
    source: str
    format: str
    item_table: pd.DataFrame | None = None
    user_table: pd.DataFrame | None = None
    feature_kinds: dict = field(default_factory=dict)
    notes: dict = field(default_factory=dict)


def build(raw: RawData, options: dict, emit: Emit | None = None) -> Dataset:
    """Apply policies to a :class:`RawData` and index it into a :class:`Dataset`."""
    emit = emit or (lambda event: None)
    stats: dict[str, int] = {"rows_read": len(raw.log)}
    if raw.log.empty:
        raise RecompareError(f"{raw.source} has no interactions")
    events, user_ids, item_ids = _events(raw)
    # one CSR of event positions finds repeated pairs and, usually, is the final matrix
    pairs = _pair_matrix(events, (len(user_ids), len(item_ids)))
    repeated = _has_repeated_pairs(pairs)
    before = len(events)
    events = _apply_policies(events, len(item_ids), options, stats, raw.source, repeated)
    emit({"stage": "load", "message": f"{len(events):,} interactions after policies"})
    if repeated or len(events) < before:
        del pairs
        events, user_ids, item_ids = _drop_unused_ids(events, user_ids, item_ids)
        pairs = _pair_matrix(events, (len(user_ids), len(item_ids)))
    shape = (len(user_ids), len(item_ids))
    interactions, timestamps = _matrices(pairs, events)
    item_groups, group_names, item_info = _item_side(raw.item_table, item_ids, stats)
    user_groups, group_names, user_features = _user_side(raw, user_ids, item_groups,
                                                         group_names, stats)
    meta = {"source": raw.source, "options": options, "preparation": stats, **raw.notes}
    emit({"stage": "load", "message": f"{shape[0]:,} users x {shape[1]:,} items"})
    return Dataset(interactions=interactions, users=IdMap(user_ids), items=IdMap(item_ids),
                   item_groups=item_groups, user_groups=user_groups,
                   group_names=tuple(group_names), user_features=user_features,
                   item_info=item_info, timestamps=timestamps, meta=meta)


# ------------------------------------------------------------------ steps
def _events(raw: RawData) -> tuple[Events, np.ndarray, np.ndarray]:
    """Index the ids and check the values: events over dense codes, and the id lists."""
    log = raw.log
    if "value" in log.columns:
        value = log["value"].to_numpy(np.float64)
        negative = np.flatnonzero(value < 0)
        if len(negative):
            where = int(negative[0])
            raise RecompareError(
                f"{Path(raw.source).name}: negative value {value[where]:g} (row {where + 1}); "
                "interaction strengths must be >= 0 (use --min-rating for ratings)")
    else:
        value = np.ones(len(log))
    user_codes, user_ids = _index(log["user"])
    item_codes, item_ids = _index(log["item"])
    time = log["time"].to_numpy(np.int64) if "time" in log.columns else None
    return Events(user_codes, item_codes, value, time), user_ids, item_ids


def _apply_policies(events: Events, n_items: int, options: dict, stats: dict,
                    source: str, repeated: bool) -> Events:
    """Duplicates (when there are ``repeated`` pairs), minimum rating, zero values, k-core;
    counts what each removed in ``stats``."""
    policy = options.get("duplicates", "sum")
    if repeated:
        events, stats["duplicates_merged"] = merge_duplicates(events, policy, n_items)
    else:
        resolve_duplicates(policy, True)  # still refuse an unknown policy
        stats["duplicates_merged"] = 0
    min_rating = options.get("min_rating")
    if min_rating is not None:
        before = len(events)
        events = apply_min_rating(events, float(min_rating))
        stats["below_min_rating"] = before - len(events)
        if not len(events):
            raise RecompareError(f"no interactions left after --min-rating {min_rating:g}")
    zero = events.value == 0
    if zero.any():
        # a stored 0 is not an interaction in a sparse matrix; count it instead of hiding it
        stats["zero_values_dropped"] = int(zero.sum())
        events = events.take(~zero)
        if not len(events):
            raise RecompareError(f"{source}: every value is 0; nothing to learn from")
    before = len(events)
    min_user = options.get("min_user_interactions", 1)
    min_item = options.get("min_item_interactions", 1)
    events = k_core(events, min_user, min_item)
    if len(events) < before:
        stats["kcore_removed"] = before - len(events)
    if not len(events):
        raise RecompareError(
            f"no interactions left after the k-core filter (--min-user-interactions "
            f"{min_user}, --min-item-interactions {min_item})")
    return events


def _pair_matrix(events: Events, shape: tuple[int, int]) -> sp.csr_matrix:
    """CSR whose values are event positions, columns sorted in each row, repeated
    (user, item) pairs kept apart (not summed)."""
    coo = sp.coo_matrix((np.arange(len(events), dtype=np.int64), (events.user, events.item)),
                        shape=shape)
    coo.has_canonical_format = True  # tells tocsr not to sum repeated pairs
    pairs = coo.tocsr()
    pairs.sort_indices()
    return pairs


def _has_repeated_pairs(pairs: sp.csr_matrix) -> bool:
    same = pairs.indices[1:] == pairs.indices[:-1]
    row_starts = pairs.indptr[1:-1]
    same[row_starts[(row_starts > 0) & (row_starts < pairs.nnz)] - 1] = False
    return bool(same.any())


def _matrices(pairs: sp.csr_matrix, events: Events,
              ) -> tuple[sp.csr_matrix, sp.csr_matrix | None]:
    """Interactions (float32) and timestamps (int64) on the pattern of ``pairs`` (no
    repeated pairs left): the same arrays ``as_csr`` of a COO matrix gives."""
    order = pairs.data
    interactions = sp.csr_matrix((events.value[order].astype(np.float32), pairs.indices,
                                  pairs.indptr), shape=pairs.shape)
    interactions.has_canonical_format = True
    timestamps = None
    if events.time is not None:
        timestamps = sp.csr_matrix((events.time[order], pairs.indices.copy(),
                                    pairs.indptr.copy()), shape=pairs.shape)
        timestamps.has_sorted_indices = True
    return interactions, timestamps


def _drop_unused_ids(events: Events, user_ids: np.ndarray,
                     item_ids: np.ndarray) -> tuple[Events, np.ndarray, np.ndarray]:
    """Keep only ids some event refers to, renumbered in the order :func:`_index` gives."""
    user_codes, user_ids = _renumber(events.user, user_ids)
    item_codes, item_ids = _renumber(events.item, item_ids)
    return Events(user_codes, item_codes, events.value, events.time), user_ids, item_ids


def _renumber(codes: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    used = np.bincount(codes, minlength=len(ids)) > 0
    if used.all():
        return codes, ids
    kept = ids[used]
    # the ids left decide the order again (all-integer ids sort numerically)
    order = _sorted_order(np.asarray(kept, dtype=object))
    rank = np.empty(len(kept), dtype=np.int64)
    rank[order] = np.arange(len(kept))
    new_code = np.full(len(ids), -1, dtype=np.int64)
    new_code[used] = rank
    return new_code[codes], kept[order]


# ------------------------------------------------------------------ ids
_INTEGER = re.compile(r"^-?\d+$")


def _sorted_order(uniques: np.ndarray) -> np.ndarray:
    """Order of unique text ids: numeric when all are integers, else by text."""
    if all(_INTEGER.match(u) for u in uniques) and all(len(u) < 19 for u in uniques):
        return np.argsort(uniques.astype(np.int64), kind="stable")
    return np.argsort(uniques.astype(str), kind="stable")


def _index(ids: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Dense codes and sorted unique ids (as strings): numeric order for integer ids."""
    if pd.api.types.is_integer_dtype(ids):
        return _index_integers(ids.to_numpy())
    if isinstance(ids.dtype, pd.CategoricalDtype):
        ids = ids.cat.remove_unused_categories()
        codes = ids.cat.codes.to_numpy().astype(np.int64)
        uniques = np.asarray(ids.cat.categories.astype(str), dtype=object)
    else:
        codes, uniques = pd.factorize(ids.astype(str), sort=False)
        uniques = np.asarray(uniques, dtype=object)
    order = _sorted_order(uniques)
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return rank[codes], uniques[order].astype(str)


def _index_integers(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_index` for integer ids: a presence table when their range is compact (as
    ids usually are), else a hash factorization."""
    low, high = int(ids.min()), int(ids.max())
    span = high - low + 1
    if span > max(4 * len(ids), 1 << 20):
        codes, uniques = pd.factorize(ids, sort=True)
        return codes.astype(np.int64), np.asarray(uniques).astype(str)
    offset = ids - low
    present = np.zeros(span, dtype=bool)
    present[offset] = True
    code_of = np.cumsum(present, dtype=np.int64) - 1
    return code_of[offset], (np.flatnonzero(present) + low).astype(str)


def _group_codes(groups: pd.Series) -> tuple[np.ndarray, tuple[str, ...]]:
    """Codes (-1 = none) and names ordered by size (largest first), then name."""
    values = groups.astype(object).where(groups.notna(), None)
    present = [v for v in values if v is not None and str(v) != ""]
    counts = pd.Series(present, dtype=object).astype(str).value_counts()
    names = sorted(counts.index, key=lambda n: (-counts[n], n))
    lookup = {n: i for i, n in enumerate(names)}
    codes = np.array([lookup.get(str(v), -1) if v is not None else -1 for v in values],
                     dtype=np.int64)
    return codes, tuple(names)


# ------------------------------------------------------------------ side data
def _item_side(item_table: pd.DataFrame | None, item_ids: np.ndarray, stats: dict,
               ) -> tuple[np.ndarray | None, tuple[str, ...], pd.DataFrame | None]:
    """Item groups, group names and metadata, aligned with ``item_ids``."""
    if item_table is None:
        return None, (), None
    table = item_table.reindex(item_ids)
    matched = int(item_table.index.isin(item_ids).sum())
    stats["catalogue_items_without_interactions"] = int(len(item_table) - matched)
    stats["items_missing_from_item_table"] = int(len(item_ids) - matched)
    item_groups, group_names = None, ()
    if "group" in table.columns:
        item_groups, group_names = _group_codes(table["group"])
        table = table.drop(columns="group")
    item_info = None
    if table.shape[1]:
        item_info = table.reset_index(drop=True)
        for column in item_info.columns:
            if not pd.api.types.is_numeric_dtype(item_info[column]):
                item_info[column] = item_info[column].astype(object).fillna("")
    return item_groups, group_names, item_info


def _user_side(raw: RawData, user_ids: np.ndarray, item_groups: np.ndarray | None,
               group_names: tuple[str, ...], stats: dict,
               ) -> tuple[np.ndarray | None, tuple[str, ...], pd.DataFrame | None]:
    """User groups (sharing the item group names), group names and user features."""
    if raw.user_table is None:
        return None, group_names, None
    table = raw.user_table.reindex(user_ids)
    stats["users_missing_from_user_table"] = int(
        len(user_ids) - raw.user_table.index.isin(user_ids).sum())
    user_groups = None
    if "group" in table.columns:
        codes, names = _group_codes(table["group"])
        if item_groups is None:
            user_groups, group_names = codes, names
        else:
            # share one name list: user group names must be item group names
            lookup = {n: i for i, n in enumerate(group_names)}
            user_groups = np.array([lookup.get(names[c], -1) if c >= 0 else -1
                                    for c in codes], dtype=np.int64)
        table = table.drop(columns="group")
    features = {column: _feature(table[column], raw.feature_kinds.get(column, "categorical"),
                                 column, stats) for column in table.columns}
    return user_groups, group_names, pd.DataFrame(features) if features else None


def _feature(values: pd.Series, kind: str, column: str, stats: dict) -> np.ndarray:
    if kind == "numeric":
        numbers = pd.to_numeric(values, errors="coerce").astype(np.float64)
        missing = int(numbers.isna().sum())
        if missing:
            # models need a number for everyone: the median, counted in meta
            stats[f"feature_{column}_filled_with_median"] = missing
            numbers = numbers.fillna(numbers.median() if numbers.notna().any() else 0.0)
        return numbers.to_numpy(np.float32)
    return values.astype(object).where(values.notna(), "unknown").astype(str).to_numpy(
        dtype=object)


# ------------------------------------------------------------------ warnings
def preparation_warnings(dataset: Dataset) -> list[str]:
    """What preparing ``dataset`` did that a user may not expect, one sentence each.

    Read from ``dataset.meta`` (the counts :func:`build` recorded) and the data itself:
    items missing from the item table or without a group, rows dropped or merged by a
    policy, and values counted as positive interactions with the flag that changes it.
    Empty when there is nothing to say.
    """
    stats = dataset.meta.get("preparation", {})
    options = dataset.meta.get("options", {})
    notes = _item_table_notes(dataset, stats)
    merged = stats.get("duplicates_merged", 0)
    if merged:
        notes.append(f"{merged:,} repeated (user, item) rows merged into one each "
                     f"(--duplicates {options.get('duplicates', 'auto')})")
    for key, text in (
        ("below_min_rating", f"rows below --min-rating {options.get('min_rating') or 0:g} dropped"),
        ("zero_values_dropped", "rows with value 0 dropped (0 is no interaction)"),
        ("kcore_removed", "rows dropped by --min-user/item-interactions (k-core)"),
    ):
        if stats.get(key):
            notes.append(f"{stats[key]:,} {text}")
    missing_users = stats.get("users_missing_from_user_table", 0)
    if missing_users:
        notes.append(f"{missing_users:,} users are missing from the user table (their "
                     "features are filled: median or 'unknown')")
    for key, count in stats.items():
        if key.startswith("feature_") and key.endswith("_filled_with_median") and count:
            column = key[len("feature_"):-len("_filled_with_median")]
            notes.append(f"{count:,} users have no value for feature {column!r} (median used)")
    if options.get("min_rating") is None:
        notes += _positives_note(dataset)
    return notes


def _item_table_notes(dataset: Dataset, stats: dict) -> list[str]:
    """Items the log has but the item table lacks, items without a group, and catalogue
    items nobody interacted with."""
    notes = []
    missing = stats.get("items_missing_from_item_table", 0)
    if missing:
        notes.append(f"{missing:,} items of the log are missing from the item table "
                     "(no title, no group)")
    if dataset.item_groups is not None:
        ungrouped = int((np.asarray(dataset.item_groups) < 0).sum()) - missing
        if ungrouped > 0:
            notes.append(f"{ungrouped:,} items have no group in the item table (empty, or "
                         "'(no genres listed)'); shown as the '(no group)' row")
    unused = stats.get("catalogue_items_without_interactions", 0)
    if unused:
        notes.append(f"{unused:,} items of the item table have no interactions and are "
                     "left out")
    return notes


def _positives_note(dataset: Dataset) -> list[str]:
    """Non-binary values (ratings) are all positives: say so, with the lowest value's
    count and the flag that keeps only high values."""
    values = dataset.interactions.data
    if not len(values) or np.all(values == values[0]):
        return []
    lowest, highest = float(values.min()), float(values.max())
    n_lowest = int((values == lowest).sum())
    example = f"{highest * 0.8:g}" if highest <= 10 else "N"
    text = (f"every interaction counts as a positive, whatever its value ({lowest:g} .. "
            f"{highest:g}), the {n_lowest:,} of value {lowest:g} too; --min-rating {example} "
            f"keeps only values >= {example} (as 1)")
    return [text]
