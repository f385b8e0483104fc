"""Synthetic data with planted groups, and mirrored copies of any data set.

:func:`planted` builds the scenario recompare is about: G groups of users and
items (think languages), each user interacting mostly with its own group's
items and a tunable share with other groups'; Zipf-like popularity inside each
group; latent taste clusters inside each group so that a personalised model
recalls far more than popularity does; and user features that reveal the group
(one strongly, others weakly) for cold-start experiments.

:func:`mirror` turns any data set into k relabelled copies, one group per copy,
with a share of each copy's interactions rewired to other copies.

Both are vectorised numpy: ten million interactions take seconds.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..errors import RecompareError
from .dataset import Dataset, IdMap, as_csr

Callback = Callable[[dict], None] | None

#: Names given to planted groups, in order (languages, the source scenario).
GROUP_NAMES = ("en", "es", "fr", "de", "ja", "pt", "it", "ko", "zh", "ru", "ar", "hi", "nl",
               "sv", "pl", "tr")
#: Names given to taste clusters; the same taste exists in every group.
TASTE_NAMES = ("drama", "comedy", "action", "horror", "romance", "documentary", "kids", "scifi",
               "music", "sport", "thriller", "western", "anime", "news", "cooking", "travel")
REGIONS = ("north", "south", "east", "west", "centre", "islands")
DEVICES = ("android", "ios", "web")
# 2020-01-01 00:00:00 UTC: planted timestamps fall in the year after it.
_EPOCH = 1_577_836_800
_YEAR = 365 * 86_400


def _group_names(n_groups: int) -> tuple[str, ...]:
    return tuple(GROUP_NAMES[g] if g < len(GROUP_NAMES) else f"g{g}" for g in range(n_groups))


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise RecompareError(message)


def planted(
    n_users: int = 3000,
    n_items: int = 1500,
    n_groups: int = 4,
    interactions_per_user: float = 40,
    cross_group_rate: float = 0.02,
    zipf_exponent: float = 1.0,
    n_tastes: int = 8,
    taste_concentration: float = 0.1,
    background_share: float = 0.1,
    feature_noise: float = 0.1,
    seed: int = 0,
    callback: Callback = None,
) -> Dataset:
    """Planted-group implicit-feedback data.

    Each user belongs to one group and has a taste mixture over ``n_tastes``
    clusters (Dirichlet with ``taste_concentration``: small values give users
    one or two favourite tastes).  Each item belongs to one group and one
    taste, and has a Zipf popularity weight ``rank ** -zipf_exponent`` within
    its group.  A user's interactions are distinct items drawn, without
    replacement, from

    * its own group (share ``1 - cross_group_rate``): with probability
      ``background_share`` by group popularity alone, otherwise from a taste
      drawn from its mixture, by popularity within that taste;
    * another group, chosen uniformly (share ``cross_group_rate``, binomial per
      user): the same recipe within that group, so cross-group interactions
      follow the user's taste.

    Parameters
    ----------
    n_users, n_items : int
        Sizes; users and items are spread evenly and at random over the groups.
    n_groups : int
        Number of planted groups (named ``en``, ``es``, ``fr``, ... ).
    interactions_per_user : float
        Mean interactions per user; counts are log-normal (sigma 0.6), at least 3
        (or the mean, if smaller), at most 80% of the user's group.
    cross_group_rate : float in [0, 1]
        Expected share of each user's interactions with other groups' items
        (ignored with a single group).
    zipf_exponent : float >= 0
        0 gives uniform popularity inside a group.
    n_tastes : int
        Taste clusters per group (fewer in a group with fewer items).
    taste_concentration : float > 0
        Dirichlet concentration of user taste mixtures.
    background_share : float in [0, 1]
        Share of draws that ignore taste (pure popularity within the group).
    feature_noise : float in [0, 1]
        Share of users whose ``group_hint`` feature names a wrong group.
    seed : int
    callback : callable(dict), optional
        Receives progress events ``{"stage": "synth", ...}``.

    Returns
    -------
    Dataset
        Binary interactions (value 1), ``user_groups`` and ``item_groups``,
        timestamps (seconds within 2020), ``user_features`` with columns
        ``group_hint`` (categorical, right for ``1 - feature_noise`` of users),
        ``age`` (numeric, weakly tied to group and taste), ``region``
        (categorical, weakly tied to group) and ``device`` (pure noise), and
        ``item_info`` with ``title``, ``taste`` and ``popularity_rank``.
        No split: apply :func:`recompare.data.splits.split`.
    """
    _check(isinstance(n_groups, (int, np.integer)) and n_groups >= 1,
           f"--groups must be at least 1, got {n_groups}")
    _check(n_users >= n_groups, f"need at least one user per group ({n_users} users, "
           f"{n_groups} groups)")
    _check(n_items >= n_groups, f"need at least one item per group ({n_items} items, "
           f"{n_groups} groups)")
    _check(interactions_per_user >= 1,
           f"interactions per user must be at least 1, got {interactions_per_user}")
    _check(0.0 <= cross_group_rate <= 1.0,
           f"cross-group rate must be in [0, 1], got {cross_group_rate}")
    _check(zipf_exponent >= 0, f"Zipf exponent must be >= 0, got {zipf_exponent}")
    _check(n_tastes >= 1, f"tastes per group must be at least 1, got {n_tastes}")
    _check(taste_concentration > 0, "taste concentration must be positive")
    _check(0.0 <= background_share <= 1.0, "background share must be in [0, 1]")
    _check(0.0 <= feature_noise <= 1.0, f"feature noise must be in [0, 1], got {feature_noise}")
    n_users, n_items, n_groups, n_tastes = int(n_users), int(n_items), int(n_groups), int(n_tastes)
    effective_cross = float(cross_group_rate) if n_groups > 1 else 0.0

    rng = np.random.default_rng(seed)
    emit = callback or (lambda event: None)
    names = _group_names(n_groups)

    # --- groups, tastes and popularity of items
    user_group = rng.permutation(np.arange(n_users) % n_groups)
    item_group = rng.permutation(np.arange(n_items) % n_groups)
    group_size = np.bincount(item_group, minlength=n_groups)
    tastes_in_group = np.minimum(n_tastes, group_size)
    item_taste = np.empty(n_items, dtype=np.int64)
    item_rank = np.empty(n_items, dtype=np.int64)
    for g in range(n_groups):
        members = np.flatnonzero(item_group == g)
        # balanced taste sizes, so every taste of the group has items
        item_taste[members] = rng.permutation(np.arange(len(members)) % tastes_in_group[g])
        item_rank[members] = rng.permutation(len(members))
    item_weight = (item_rank + 1.0) ** -float(zipf_exponent)

    # Sampling table: one component per (group, taste) and one "background" component per
    # group; entries of a component carry cumulative probabilities shifted by the component
    # number, so one searchsorted over the whole table samples every draw at once.
    taste_comp = item_group * n_tastes + item_taste
    background_comp = n_groups * n_tastes + item_group
    entry_comp = np.concatenate([taste_comp, background_comp])
    entry_item = np.concatenate([np.arange(n_items), np.arange(n_items)])
    order = np.argsort(entry_comp, kind="stable")
    entry_comp, entry_item = entry_comp[order], entry_item[order]
    weight = item_weight[entry_item]
    n_comp = n_groups * n_tastes + n_groups
    totals = np.bincount(entry_comp, weights=weight, minlength=n_comp)
    cumulative = np.cumsum(weight / totals[entry_comp])
    starts = np.searchsorted(entry_comp, np.arange(n_comp))
    before = np.concatenate([[0.0], cumulative])[starts]  # mass of earlier components
    table = entry_comp + (cumulative - before[entry_comp])
    ends = np.r_[starts[1:], len(entry_comp)] - 1
    present = ends >= starts
    table[ends[present]] = np.arange(n_comp)[present] + 1.0  # exact 1 at each component's end

    def sample_items(components: np.ndarray) -> np.ndarray:
        pos = np.searchsorted(table, components + rng.random(len(components)), side="right")
        return entry_item[np.minimum(pos, len(table) - 1)]

    # --- users: taste mixtures and interaction counts
    theta = rng.dirichlet(np.full(n_tastes, float(taste_concentration)), size=n_users)
    theta_cum = np.cumsum(theta, axis=1)
    theta_cum[:, -1] = 1.0
    primary_taste = theta.argmax(axis=1)

    sigma = 0.6
    mean = float(interactions_per_user)
    counts = np.rint(rng.lognormal(np.log(mean) - sigma**2 / 2, sigma, size=n_users))
    lowest = min(3.0, np.floor(mean))
    own_cap = np.maximum(1, np.floor(0.8 * group_size[user_group]))
    counts = np.clip(counts, lowest, None).astype(np.int64)
    need_cross = rng.binomial(counts, effective_cross) if effective_cross > 0 else np.zeros(
        n_users, dtype=np.int64)
    other_items = n_items - group_size[user_group]
    need_cross = np.minimum(need_cross, (0.8 * other_items).astype(np.int64))
    need_own = np.minimum(counts - need_cross, own_cap.astype(np.int64))
    need = np.stack([need_own, need_cross])  # (2, n_users): row 0 own group, row 1 other groups

    def draw(users: np.ndarray, cross: bool) -> np.ndarray:
        group = user_group[users]
        if cross:
            group = (group + rng.integers(1, n_groups, size=len(users))) % n_groups
        r = rng.random(len(users))
        # inverse CDF row by row, in chunks (a gather and compare beats a binary search here)
        taste = np.empty(len(users), dtype=np.int64)
        for start in range(0, len(users), 1 << 20):
            chunk = slice(start, start + (1 << 20))
            taste[chunk] = (theta_cum[users[chunk]] <= r[chunk, None]).sum(axis=1)
        taste = np.clip(taste, 0, n_tastes - 1) % tastes_in_group[group]
        comp = np.where(rng.random(len(users)) < background_share,
                        n_groups * n_tastes + group, group * n_tastes + taste)
        return sample_items(comp)

    # Distinct items by successive sampling: draw with replacement, keep first occurrences,
    # draw again for users still short.  Popular items repeat often, hence the rounds.
    keys = np.zeros(0, dtype=np.int64)  # distinct (user, item) keys, in order of first draw
    sorted_keys = keys  # the same keys, sorted, for membership tests
    have = np.zeros((2, n_users), dtype=np.int64)
    for round_ in range(16):
        deficit = need - have
        if not (deficit > 0).any():
            break
        factor = 1.5 * 2 ** min(round_, 6)
        fresh = []
        for kind in (0, 1):
            short = np.flatnonzero(deficit[kind] > 0)
            if len(short) == 0:
                continue
            n_draws = np.ceil(deficit[kind, short] * factor).astype(np.int64) + 1
            users = np.repeat(short, n_draws)
            fresh.append(users * n_items + draw(users, cross=bool(kind)))
        drawn = np.concatenate(fresh)
        unique, first = np.unique(drawn, return_index=True)
        if len(sorted_keys):
            pos = np.minimum(np.searchsorted(sorted_keys, unique), len(sorted_keys) - 1)
            novel = sorted_keys[pos] != unique
            unique, first = unique[novel], first[novel]
        added = drawn[np.sort(first)]  # new distinct keys in order of first draw
        keys = np.concatenate([keys, added])
        sorted_keys = np.sort(np.concatenate([sorted_keys, unique]), kind="stable")
        users, items = np.divmod(added, n_items)
        kind_of = (item_group[items] != user_group[users]).astype(np.int64)
        have += np.bincount(kind_of * n_users + users, minlength=2 * n_users).reshape(2, n_users)
        emit({"stage": "synth", "round": round_ + 1, "distinct": len(keys),
              "needed": int(need.sum())})

    # keep the first `need` distinct draws of each (kind, user)
    users, items = np.divmod(keys, n_items)
    kind_of = (item_group[items] != user_group[users]).astype(np.int64)
    bucket = kind_of * n_users + users
    order = np.argsort(bucket, kind="stable")
    sorted_bucket = bucket[order]
    first_of_bucket = np.searchsorted(sorted_bucket, sorted_bucket, side="left")
    rank = np.empty(len(keys), dtype=np.int64)
    rank[order] = np.arange(len(keys)) - first_of_bucket
    keep = rank < need.ravel()[bucket]
    kept = keys[keep]
    stamp_values = _EPOCH + rng.integers(0, _YEAR, size=len(kept))
    # sorted keys are CSR order already (user-major, item-minor): no COO conversion needed
    order = np.argsort(kept)
    users, items = np.divmod(kept[order], n_items)
    indptr = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(users, minlength=n_users), out=indptr[1:])
    interactions = as_csr(sp.csr_matrix(
        (np.ones(len(kept), dtype=np.float32), items, indptr), shape=(n_users, n_items)))
    timestamps = sp.csr_matrix((stamp_values[order].astype(np.int64), interactions.indices,
                                interactions.indptr), shape=(n_users, n_items))

    # --- user features: one strong group signal, two weak ones, one pure noise
    hint = user_group.copy()
    if n_groups > 1:
        wrong = rng.random(n_users) < feature_noise
        hint[wrong] = (hint[wrong] + rng.integers(1, n_groups, size=wrong.sum())) % n_groups
    group_offset = np.linspace(-1.0, 1.0, n_groups) if n_groups > 1 else np.zeros(1)
    taste_offset = np.linspace(-1.0, 1.0, n_tastes) if n_tastes > 1 else np.zeros(1)
    age = 34 + 5 * group_offset[user_group] + 4 * taste_offset[primary_taste]
    age = np.clip(np.rint(age + rng.normal(0, 11, size=n_users)), 16, 80)
    region = rng.integers(0, len(REGIONS), size=n_users)
    tied = rng.random(n_users) < 0.35
    region[tied] = user_group[tied] % len(REGIONS)
    device = rng.choice(len(DEVICES), size=n_users, p=[0.5, 0.35, 0.15])
    name_array = np.asarray(names, dtype=object)
    user_features = pd.DataFrame({
        "group_hint": name_array[hint],
        "age": age.astype(np.float32),
        "region": np.asarray(REGIONS, dtype=object)[region],
        "device": np.asarray(DEVICES, dtype=object)[device],
    })

    taste_names = np.asarray(
        [TASTE_NAMES[t] if t < len(TASTE_NAMES) else f"taste{t}" for t in range(n_tastes)],
        dtype=object)
    item_info = pd.DataFrame({
        "title": [f"{names[g]} {taste_names[t]} #{r + 1}"
                  for g, t, r in zip(item_group, item_taste, item_rank)],
        "taste": taste_names[item_taste],
        "popularity_rank": item_rank + 1,
    })
    options = {
        "n_users": n_users, "n_items": n_items, "n_groups": n_groups,
        "interactions_per_user": float(interactions_per_user),
        "cross_group_rate": float(cross_group_rate), "zipf_exponent": float(zipf_exponent),
        "n_tastes": n_tastes, "taste_concentration": float(taste_concentration),
        "background_share": float(background_share), "feature_noise": float(feature_noise),
        "seed": int(seed),
    }
    emit({"stage": "synth", "done": True, "interactions": int(interactions.nnz)})
    return Dataset(
        interactions=interactions,
        users=IdMap(np.char.add("u", np.arange(n_users).astype(str))),
        items=IdMap(np.char.add("i", np.arange(n_items).astype(str))),
        item_groups=item_group.astype(np.int64),
        user_groups=user_group.astype(np.int64),
        group_names=names,
        user_features=user_features,
        item_info=item_info,
        timestamps=timestamps,
        meta={"source": "synthetic:planted", "options": options},
    )


def mirror(
    dataset: Dataset,
    copies: int = 2,
    cross_rate: float = 0.0,
    seed: int = 0,
    rewire: str = "same",
) -> Dataset:
    """``copies`` relabelled copies of a data set, one group per copy.

    Copy ``k`` holds every user and item of ``dataset`` with ids prefixed
    ``c<k>:``; its users interact only with its items, except for a
    ``cross_rate`` share of each copy's interactions (chosen at random) whose
    item is replaced by an item of another copy, chosen uniformly:

    * ``rewire="same"``: the same item in the other copy (its "translation");
    * ``rewire="random"``: an item of the other copy drawn by popularity.

    ``cross_rate=0`` gives perfectly disjoint copies.  The split of
    ``dataset`` is dropped (split the mirror instead); its groups, if any, are
    kept as ``item_info["source_group"]`` and ``user_features["source_group"]``.

    Parameters
    ----------
    dataset : Dataset
    copies : int >= 1
    cross_rate : float in [0, 1]
    seed : int
    rewire : {"same", "random"}

    Returns
    -------
    Dataset
        Shape ``(copies * n_users, copies * n_items)``; ``user_groups`` and
        ``item_groups`` give the copy; ``user_features`` are the original
        features plus ``group_hint`` naming the user's copy.
    """
    _check(int(copies) == copies and copies >= 1, f"--copies must be at least 1, got {copies}")
    copies = int(copies)
    _check(0.0 <= cross_rate <= 1.0, f"--cross-rate must be in [0, 1], got {cross_rate}")
    _check(copies > 1 or cross_rate == 0.0, "--cross-rate needs at least 2 copies")
    _check(rewire in ("same", "random"), f"unknown rewire mode {rewire!r}; use same or random")
    _check(dataset.interactions.nnz > 0, "cannot mirror an empty data set")
    rng = np.random.default_rng(seed)
    n_users, n_items = dataset.n_users, dataset.n_items
    base = dataset.interactions.tocoo()
    nnz = base.nnz
    rows = np.concatenate([base.row + k * n_users for k in range(copies)]).astype(np.int64)
    cols = np.concatenate([base.col + k * n_items for k in range(copies)]).astype(np.int64)
    vals = np.tile(base.data, copies).astype(np.float32)
    stamps = None
    if dataset.timestamps is not None:
        ts = _aligned_timestamps(dataset)
        stamps = np.tile(ts, copies)

    n_rewired = 0
    if cross_rate > 0:
        per_copy = round(cross_rate * nnz)
        chosen = np.concatenate([k * nnz + rng.choice(nnz, size=per_copy, replace=False)
                                 for k in range(copies)])
        source_copy = chosen // nnz
        target_copy = (source_copy + rng.integers(1, copies, size=len(chosen))) % copies
        original_item = cols[chosen] - source_copy * n_items
        if rewire == "same":
            new_item = original_item
        else:
            popularity = np.asarray(dataset.interactions.getnnz(axis=0), dtype=np.float64)
            new_item = rng.choice(n_items, size=len(chosen), p=popularity / popularity.sum())
        cols[chosen] = target_copy * n_items + new_item
        n_rewired = len(chosen)
        # a rewired pair may repeat one the user already has: keep one entry (the max value)
        keys = rows * (copies * n_items) + cols
        order = np.lexsort((-vals, keys))
        first = np.ones(len(keys), dtype=bool)
        first[1:] = keys[order][1:] != keys[order][:-1]
        keep = order[first]
        rows, cols, vals = rows[keep], cols[keep], vals[keep]
        if stamps is not None:
            stamps = stamps[keep]

    shape = (copies * n_users, copies * n_items)
    interactions = as_csr(sp.coo_matrix((vals, (rows, cols)), shape=shape))
    timestamps = None
    if stamps is not None:
        timestamps = sp.csr_matrix((stamps.astype(np.int64), (rows, cols)), shape=shape)
        timestamps.sort_indices()

    prefixes = [f"c{k}:" for k in range(copies)]
    user_ids = np.concatenate([np.char.add(p, dataset.users.ids.astype(str)) for p in prefixes])
    item_ids = np.concatenate([np.char.add(p, dataset.items.ids.astype(str)) for p in prefixes])
    names = tuple(f"c{k}" for k in range(copies))
    user_groups = np.repeat(np.arange(copies), n_users)
    item_groups = np.repeat(np.arange(copies), n_items)

    features = (dataset.user_features.reset_index(drop=True).copy()
                if dataset.user_features is not None else pd.DataFrame(index=range(n_users)))
    if dataset.user_groups is not None and dataset.group_names:
        source_names = np.asarray(list(dataset.group_names) + [""], dtype=object)
        features["source_group"] = source_names[np.asarray(dataset.user_groups)]
    features = features.drop(columns=["group_hint"], errors="ignore")
    features = pd.concat([features] * copies, ignore_index=True)
    features.insert(0, "group_hint", np.asarray(names, dtype=object)[user_groups])

    info = (dataset.item_info.reset_index(drop=True).copy()
            if dataset.item_info is not None else pd.DataFrame(index=range(n_items)))
    if dataset.item_groups is not None and dataset.group_names:
        source_names = np.asarray(list(dataset.group_names) + [""], dtype=object)
        info["source_group"] = source_names[np.asarray(dataset.item_groups)]
    info = pd.concat([info] * copies, ignore_index=True) if info.shape[1] else None

    meta = {
        "source": f"mirror:{dataset.meta.get('source', 'dataset')}",
        "options": {"copies": copies, "cross_rate": float(cross_rate), "rewire": rewire,
                    "seed": int(seed), "rewired_interactions": int(n_rewired),
                    "source_fingerprint": dataset.fingerprint},
    }
    return Dataset(
        interactions=interactions,
        users=IdMap(user_ids),
        items=IdMap(item_ids),
        item_groups=item_groups,
        user_groups=user_groups,
        group_names=names,
        user_features=features,
        item_info=info,
        timestamps=timestamps,
        meta=meta,
    )


def _aligned_timestamps(dataset: Dataset) -> np.ndarray:
    """Timestamps as an array parallel to ``dataset.interactions.tocoo()`` entries."""
    m, ts = dataset.interactions, dataset.timestamps
    assert ts is not None
    ts = sp.csr_matrix(ts)
    ts.sort_indices()
    if (ts.shape == m.shape and len(ts.indices) == len(m.indices)
            and np.array_equal(ts.indptr, m.indptr) and np.array_equal(ts.indices, m.indices)):
        return np.asarray(ts.data, dtype=np.int64)
    coo = m.tocoo()
    return np.asarray(ts[coo.row, coo.col], dtype=np.int64).ravel()
