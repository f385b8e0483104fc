"""Synthetic data with planted groups (and, re-exported from :mod:`.mirror`, mirrored copies).

:func:`planted` builds the scenario recompare is about: G groups of users and
items (think languages), each user interacting mostly with its own group's
items and a tunable share with other groups'; Zipf-like popularity inside each
group; latent taste clusters inside each group so that a personalised model
recalls far more than popularity does; and user features that reveal the group
(one strongly, others weakly) for cold-start experiments.

Vectorised numpy: ten million interactions take seconds.  Every step below draws
from the one generator in a fixed order, so a seed gives one data set.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..errors import RecompareError
from .dataset import Dataset, IdMap, as_csr
from .mirror import mirror

__all__ = ["DEVICES", "GROUP_NAMES", "REGIONS", "TASTE_NAMES", "mirror", "planted"]

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
# interaction counts per user are log-normal with this sigma
_COUNT_SIGMA = 0.6
# a user interacts with at most this share of its own group's items (and of the others')
_MAX_SHARE = 0.8
# successive sampling stops after this many rounds, short users or not
_MAX_ROUNDS = 16
# rows of the taste inverse CDF evaluated at once (bounds the temporary array)
_CHUNK = 1 << 20


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
    # over 80 lines only for its docstring: the body is a sequence of named steps
    options = _planted_options(n_users, n_items, n_groups, interactions_per_user,
                               cross_group_rate, zipf_exponent, n_tastes, taste_concentration,
                               background_share, feature_noise, seed)
    n_users, n_items, n_groups = options["n_users"], options["n_items"], options["n_groups"]
    rng = np.random.default_rng(seed)
    emit = callback or (lambda event: None)
    names = _group_names(n_groups)
    world = _plant_groups(rng, n_users, n_items, n_groups, options["n_tastes"],
                          options["zipf_exponent"], options["taste_concentration"],
                          options["background_share"])
    cross = options["cross_group_rate"] if n_groups > 1 else 0.0
    need = _interaction_needs(rng, world, options["interactions_per_user"], cross)
    keys = _distinct_draws(rng, world, need, emit)
    interactions, timestamps = _matrices(rng, _first_needed(keys, need, world), n_users, n_items)
    emit({"stage": "synth", "done": True, "interactions": int(interactions.nnz)})
    return Dataset(
        interactions=interactions, users=IdMap(np.char.add("u", np.arange(n_users).astype(str))),
        items=IdMap(np.char.add("i", np.arange(n_items).astype(str))),
        user_groups=world.user_group.astype(np.int64),
        item_groups=world.item_group.astype(np.int64), group_names=names,
        user_features=_planted_user_features(rng, world, options["feature_noise"], names),
        item_info=_planted_item_info(world, names), timestamps=timestamps,
        meta={"source": "synthetic:planted", "options": options},
    )


def _planted_options(n_users, n_items, n_groups, interactions_per_user, cross_group_rate,
                     zipf_exponent, n_tastes, taste_concentration, background_share,
                     feature_noise, seed) -> dict:
    """The options of :func:`planted` as plain ints and floats (as ``meta["options"]``
    records them); raises :class:`RecompareError` naming the first one out of range."""
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
    return {
        "n_users": int(n_users), "n_items": int(n_items), "n_groups": int(n_groups),
        "interactions_per_user": float(interactions_per_user),
        "cross_group_rate": float(cross_group_rate), "zipf_exponent": float(zipf_exponent),
        "n_tastes": int(n_tastes), "taste_concentration": float(taste_concentration),
        "background_share": float(background_share), "feature_noise": float(feature_noise),
        "seed": int(seed),
    }


@dataclass
class _World:
    """The planted structure every draw of :func:`planted` samples from."""

    n_groups: int
    n_tastes: int
    background_share: float
    user_group: np.ndarray       # (n_users,) group of each user
    item_group: np.ndarray       # (n_items,) group of each item
    item_taste: np.ndarray       # (n_items,) taste of each item within its group
    item_rank: np.ndarray        # (n_items,) popularity rank within its group, 0 = top
    group_size: np.ndarray       # (n_groups,) items per group
    tastes_in_group: np.ndarray  # (n_groups,) tastes a group actually has
    theta_cum: np.ndarray        # (n_users, n_tastes) cumulative taste mixture of each user
    primary_taste: np.ndarray    # (n_users,) most likely taste of each user
    table: np.ndarray            # sampling table, see _sampling_table
    entry_item: np.ndarray       # item of each table entry

    @property
    def n_users(self) -> int:
        return len(self.user_group)

    @property
    def n_items(self) -> int:
        return len(self.item_group)


def _plant_groups(rng: np.random.Generator, n_users: int, n_items: int, n_groups: int,
                  n_tastes: int, zipf_exponent: float, taste_concentration: float,
                  background_share: float) -> _World:
    """Groups of users and items, item tastes and popularity, user taste mixtures."""
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
    item_weight = (item_rank + 1.0) ** -zipf_exponent
    table, entry_item = _sampling_table(item_group, item_taste, item_weight, n_groups, n_tastes)
    theta = rng.dirichlet(np.full(n_tastes, taste_concentration), size=n_users)
    theta_cum = np.cumsum(theta, axis=1)
    theta_cum[:, -1] = 1.0
    return _World(n_groups=n_groups, n_tastes=n_tastes, background_share=background_share,
                  user_group=user_group, item_group=item_group, item_taste=item_taste,
                  item_rank=item_rank, group_size=group_size, tastes_in_group=tastes_in_group,
                  theta_cum=theta_cum, primary_taste=theta.argmax(axis=1), table=table,
                  entry_item=entry_item)


def _sampling_table(item_group: np.ndarray, item_taste: np.ndarray, item_weight: np.ndarray,
                    n_groups: int, n_tastes: int) -> tuple[np.ndarray, np.ndarray]:
    """One table from which a single searchsorted samples items of many components at once.

    A component is a (group, taste) pair, numbered ``group * n_tastes + taste``, or a
    group's "background" (every item of the group), numbered ``n_groups * n_tastes + group``.
    Entries of component ``c`` hold ``c`` plus the cumulative probability of the entry
    within ``c`` (popularity-weighted), the last one exactly ``c + 1``: searching
    ``c + u`` with ``u`` uniform in [0, 1) draws an item of ``c``.

    Returns
    -------
    table : ndarray of float64, ascending
    entry_item : ndarray of int, the item of each table entry
    """
    n_items = len(item_group)
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
    return table, entry_item


def _interaction_needs(rng: np.random.Generator, world: _World, mean: float,
                       cross_rate: float) -> np.ndarray:
    """Distinct items each user needs, ndarray (2, n_users): row 0 own group, row 1 others."""
    n_users = world.n_users
    counts = np.rint(rng.lognormal(np.log(mean) - _COUNT_SIGMA**2 / 2, _COUNT_SIGMA,
                                   size=n_users))
    lowest = min(3.0, np.floor(mean))
    own_cap = np.maximum(1, np.floor(_MAX_SHARE * world.group_size[world.user_group]))
    counts = np.clip(counts, lowest, None).astype(np.int64)
    need_cross = rng.binomial(counts, cross_rate) if cross_rate > 0 else np.zeros(
        n_users, dtype=np.int64)
    other_items = world.n_items - world.group_size[world.user_group]
    need_cross = np.minimum(need_cross, (_MAX_SHARE * other_items).astype(np.int64))
    need_own = np.minimum(counts - need_cross, own_cap.astype(np.int64))
    return np.stack([need_own, need_cross])


def _draw(rng: np.random.Generator, world: _World, users: np.ndarray, cross: bool
          ) -> np.ndarray:
    """One item per entry of ``users`` (with replacement): own group, or another if ``cross``."""
    group = world.user_group[users]
    if cross:
        group = (group + rng.integers(1, world.n_groups, size=len(users))) % world.n_groups
    r = rng.random(len(users))
    # inverse CDF row by row, in chunks (a gather and compare beats a binary search here)
    taste = np.empty(len(users), dtype=np.int64)
    for start in range(0, len(users), _CHUNK):
        chunk = slice(start, start + _CHUNK)
        taste[chunk] = (world.theta_cum[users[chunk]] <= r[chunk, None]).sum(axis=1)
    taste = np.clip(taste, 0, world.n_tastes - 1) % world.tastes_in_group[group]
    n_taste_comp = world.n_groups * world.n_tastes
    components = np.where(rng.random(len(users)) < world.background_share,
                          n_taste_comp + group, group * world.n_tastes + taste)
    pos = np.searchsorted(world.table, components + rng.random(len(components)), side="right")
    return world.entry_item[np.minimum(pos, len(world.table) - 1)]


def _kind_of(keys: np.ndarray, world: _World) -> tuple[np.ndarray, np.ndarray]:
    """Users of ``user * n_items + item`` keys, and 1 where the item is of another group."""
    users, items = np.divmod(keys, world.n_items)
    return users, (world.item_group[items] != world.user_group[users]).astype(np.int64)


def _distinct_draws(rng: np.random.Generator, world: _World, need: np.ndarray,
                    emit: Callable[[dict], None]) -> np.ndarray:
    """Distinct ``user * n_items + item`` keys in order of first draw, by successive sampling.

    Draw with replacement, keep first occurrences, draw again for users still short;
    popular items repeat often, hence the rounds (each draws more per missing item).
    """
    n_users = world.n_users
    keys = np.zeros(0, dtype=np.int64)  # distinct keys, in order of first draw
    sorted_keys = keys  # the same keys, sorted, for membership tests
    have = np.zeros((2, n_users), dtype=np.int64)
    for round_ in range(_MAX_ROUNDS):
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
            fresh.append(users * world.n_items + _draw(rng, world, users, cross=bool(kind)))
        drawn = np.concatenate(fresh)
        unique, first = np.unique(drawn, return_index=True)
        if len(sorted_keys):
            pos = np.minimum(np.searchsorted(sorted_keys, unique), len(sorted_keys) - 1)
            novel = sorted_keys[pos] != unique
            unique, first = unique[novel], first[novel]
        added = drawn[np.sort(first)]  # new distinct keys in order of first draw
        keys = np.concatenate([keys, added])
        sorted_keys = np.sort(np.concatenate([sorted_keys, unique]), kind="stable")
        users, kind_of = _kind_of(added, world)
        have += np.bincount(kind_of * n_users + users, minlength=2 * n_users).reshape(2, n_users)
        emit({"stage": "synth", "round": round_ + 1, "distinct": len(keys),
              "needed": int(need.sum())})
    return keys


def _first_needed(keys: np.ndarray, need: np.ndarray, world: _World) -> np.ndarray:
    """The first ``need`` keys of each (kind, user), in their original order."""
    users, kind_of = _kind_of(keys, world)
    bucket = kind_of * world.n_users + users
    order = np.argsort(bucket, kind="stable")
    sorted_bucket = bucket[order]
    first_of_bucket = np.searchsorted(sorted_bucket, sorted_bucket, side="left")
    rank = np.empty(len(keys), dtype=np.int64)
    rank[order] = np.arange(len(keys)) - first_of_bucket
    return keys[rank < need.ravel()[bucket]]


def _matrices(rng: np.random.Generator, kept: np.ndarray, n_users: int, n_items: int
              ) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Binary interactions and random timestamps within 2020 of the kept keys, as CSR."""
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
    return interactions, timestamps


def _planted_user_features(rng: np.random.Generator, world: _World, feature_noise: float,
                           names: tuple[str, ...]) -> pd.DataFrame:
    """One strong group signal (``group_hint``), two weak ones, one pure noise (``device``)."""
    n_users, n_groups, n_tastes = world.n_users, world.n_groups, world.n_tastes
    user_group = world.user_group
    hint = user_group.copy()
    if n_groups > 1:
        wrong = rng.random(n_users) < feature_noise
        hint[wrong] = (hint[wrong] + rng.integers(1, n_groups, size=wrong.sum())) % n_groups
    group_offset = np.linspace(-1.0, 1.0, n_groups) if n_groups > 1 else np.zeros(1)
    taste_offset = np.linspace(-1.0, 1.0, n_tastes) if n_tastes > 1 else np.zeros(1)
    age = 34 + 5 * group_offset[user_group] + 4 * taste_offset[world.primary_taste]
    age = np.clip(np.rint(age + rng.normal(0, 11, size=n_users)), 16, 80)
    region = rng.integers(0, len(REGIONS), size=n_users)
    tied = rng.random(n_users) < 0.35
    region[tied] = user_group[tied] % len(REGIONS)
    device = rng.choice(len(DEVICES), size=n_users, p=[0.5, 0.35, 0.15])
    return pd.DataFrame({
        "group_hint": np.asarray(names, dtype=object)[hint],
        "age": age.astype(np.float32),
        "region": np.asarray(REGIONS, dtype=object)[region],
        "device": np.asarray(DEVICES, dtype=object)[device],
    })


def _planted_item_info(world: _World, names: tuple[str, ...]) -> pd.DataFrame:
    """``title`` ("en drama #3"), ``taste`` and ``popularity_rank`` (1 = top) of each item."""
    taste_names = np.asarray(
        [TASTE_NAMES[t] if t < len(TASTE_NAMES) else f"taste{t}" for t in range(world.n_tastes)],
        dtype=object)
    return pd.DataFrame({
        "title": [f"{names[g]} {taste_names[t]} #{r + 1}"
                  for g, t, r in zip(world.item_group, world.item_taste, world.item_rank)],
        "taste": taste_names[world.item_taste],
        "popularity_rank": world.item_rank + 1,
    })
