"""``recompare recommend``: what a model recommends to a user, beside what the user has seen.

The library part (:func:`recommend_users`) resolves external ids, serves each
user the way evaluation does and returns one :class:`UserRecommendations` per
user; the click command only renders them.

* A training user is served from its training embedding; items of its training
  history are excluded, and recommendations in its held-out test part are marked.
* A user held out of training (``users``/``both`` splits) is folded in from its
  fold-in history (WALS: one exact solve; the DNN: its query tower), and judged
  against its held-out part.
* A new user, given as a list of item ids, is folded in the same way.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import click

from ..cli import echo_json, json_option, seed_option, stdout_console
from ..errors import RecompareError

NEW_USER = "(new user)"


@dataclass
class UserRecommendations:
    """One user's history and top-k list, external ids and titles resolved.

    Attributes
    ----------
    user : str
        External user id, or ``"(new user)"``.
    status : {"training", "held-out", "new"}
    served_by : str
        How the query embedding was made (training embedding, fold-in, tower).
    history : list of dict
        ``item``, ``title``, ``group``, ``value`` per interaction the model was
        given, most recent (or strongest) first.
    recommendations : list of dict
        ``rank``, ``item``, ``title``, ``group``, ``score``, ``held_out`` (the item
        is in the user's held-out evaluation part; None when there is none).
    user_group : str or None
    """

    user: str
    status: str
    served_by: str
    history: list[dict] = field(default_factory=list)
    recommendations: list[dict] = field(default_factory=list)
    user_group: str | None = None


# ------------------------------------------------------------------ parsing
def parse_item_list(text: str) -> list[str]:
    """Item ids separated by commas, whitespace or new lines; ``#`` starts a comment."""
    ids: list[str] = []
    for line in str(text).splitlines():
        line = line.split("#", 1)[0]
        ids += [part for part in line.replace(",", " ").split() if part]
    return ids


def read_history_file(path: str | Path) -> list[str]:
    """Item ids from a text file (``-`` for stdin), in :func:`parse_item_list`'s format."""
    if str(path) == "-":
        return parse_item_list(click.get_text_stream("stdin").read())
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise RecompareError(f"--history-file {path} is not UTF-8 text") from None
    return parse_item_list(text)


def _lookup(idmap, ids: list[str], what: str, dataset_name: str):
    import numpy as np

    lookup = {value: i for i, value in enumerate(idmap.ids)}
    unknown = [value for value in dict.fromkeys(ids) if value not in lookup]
    if unknown:
        shown = ", ".join(unknown[:10]) + (f" (+{len(unknown) - 10} more)"
                                           if len(unknown) > 10 else "")
        plural = "s" if len(unknown) > 1 else ""
        raise RecompareError(f"unknown {what} id{plural} in {dataset_name}: {shown}")
    return np.array([lookup[value] for value in ids], dtype=np.int64)


# ------------------------------------------------------------------ library
def recommend_users(model, dataset, users: list[str] = (), history: list[str] | None = None,
                    k: int = 10, dataset_name: str = "the data set") -> list[UserRecommendations]:
    """Top-k recommendations with history for known users and, optionally, one new user.

    Parameters
    ----------
    model : Recommender
        Fitted on ``dataset`` (``load_model(path, dataset=...)``).
    dataset : Dataset
    users : list of str
        External user ids of the data set (training or held-out users).
    history : list of str or None
        External item ids of a new user's history (each counts as one
        interaction of value 1); None for no new user.
    k : int

    Returns
    -------
    list of UserRecommendations, the given users in order, then the new user.
    """
    import numpy as np
    import scipy.sparse as sp

    indices = _lookup(dataset.users, list(users), "user", dataset_name)
    out = [_known_user(model, dataset, int(u), k) for u in indices]
    if history is not None:
        if not history:
            raise RecompareError("the new user's history is empty: give at least one item id")
        items = np.unique(_lookup(dataset.items, list(history), "item", dataset_name))
        row = sp.csr_matrix((np.ones(len(items), dtype=np.float32),
                             (np.zeros(len(items), dtype=np.int64), items)),
                            shape=(1, dataset.n_items))
        ids, scores = model.recommend_new(row, None, k=k)
        view = UserRecommendations(NEW_USER, "new", _fold_in_name(model))
        view.history = _history_rows(dataset, row, 0, None)
        view.recommendations = _recommendation_rows(dataset, ids[0], scores[0], None)
        out.append(view)
    return out


def _known_user(model, dataset, user: int, k: int) -> UserRecommendations:
    split = dataset.split
    heldout = split is not None and user in set(split.heldout_users.tolist())
    user_group = None
    if dataset.user_groups is not None and dataset.user_groups[user] >= 0:
        user_group = _group_name(dataset, int(dataset.user_groups[user]))
    external = str(dataset.users.ids[user])
    if heldout:
        known = split.foldin if split.foldin is not None else None
        if known is None or known[user].nnz == 0:
            raise RecompareError(f"user {external} is held out of training and has no fold-in "
                                 "history to serve it from")
        features = (None if dataset.user_features is None
                    else dataset.user_features.iloc[[user]].reset_index(drop=True))
        ids, scores = model.recommend_new(known[user], features, k=k)
        view = UserRecommendations(external, "held-out", _fold_in_name(model),
                                   user_group=user_group)
        truth = split.heldout
    else:
        known = dataset.train
        if known[user].nnz == 0:
            raise RecompareError(f"user {external} has no training interactions")
        ids, scores = model.recommend(users=[user], k=k, seen=known)
        view = UserRecommendations(external, "training", "its training embedding",
                                   user_group=user_group)
        truth = split.test if split is not None else None
    view.history = _history_rows(dataset, known, user, dataset.timestamps)
    truth_items = None if truth is None else set(truth[user].indices.tolist())
    view.recommendations = _recommendation_rows(dataset, ids[0], scores[0], truth_items)
    return view


def _fold_in_name(model) -> str:
    return {"wals": "fold-in (one exact solve, item factors fixed)",
            "softmax": "the query tower on its history"}.get(model.kind, "fold-in of its history")


def _group_name(dataset, code: int) -> str:
    if 0 <= code < len(dataset.group_names):
        return str(dataset.group_names[code])
    return ""


def _item_fields(dataset, item: int) -> dict:
    title = ""
    if dataset.item_info is not None and "title" in dataset.item_info.columns:
        import pandas as pd

        value = dataset.item_info["title"].iloc[item]
        title = "" if pd.isna(value) else str(value)
    group = ""
    if dataset.item_groups is not None:
        group = _group_name(dataset, int(dataset.item_groups[item]))
    return {"item": str(dataset.items.ids[item]), "title": title, "group": group}


def _history_rows(dataset, matrix, row: int, timestamps) -> list[dict]:
    """The row's items, most recent first when timestamps exist, else strongest first."""
    import numpy as np

    start, end = matrix.indptr[row], matrix.indptr[row + 1]
    items = matrix.indices[start:end]
    values = matrix.data[start:end]
    order = np.argsort(-values, kind="stable")
    if timestamps is not None:
        times = np.asarray(timestamps[row, items].todense()).ravel()
        order = np.lexsort((-values, -times))
    return [{**_item_fields(dataset, int(items[i])), "value": float(values[i])} for i in order]


def _recommendation_rows(dataset, ids, scores, truth: set | None) -> list[dict]:
    return [{"rank": rank, **_item_fields(dataset, int(item)), "score": float(score),
             "held_out": None if truth is None else int(item) in truth}
            for rank, (item, score) in enumerate(zip(ids, scores), start=1)]


# ------------------------------------------------------------------ command
@click.command("recommend")
@click.argument("model_spec", metavar="MODEL")
@click.argument("dataset_path", metavar="DATASET", type=click.Path(exists=True, file_okay=False))
@click.option("--user", "users", multiple=True, metavar="ID",
              help="External user id of DATASET (repeat for several users).")
@click.option("-k", "--k", "k", type=click.IntRange(min=1), default=10, show_default=True,
              help="Number of recommendations per user.")
@click.option("--history", "history_text", metavar="ITEM,...", default=None,
              help="A new user's history: comma-separated item ids (each one interaction "
                   "of value 1), folded in (WALS) or fed to the query tower (DNN).")
@click.option("--history-file", type=click.Path(dir_okay=False, allow_dash=True), default=None,
              help="Like --history, read from a file: ids separated by commas, spaces or "
                   "new lines ('-' for stdin).")
@seed_option
@json_option
def recommend(model_spec: str, dataset_path: str, users: tuple[str, ...], k: int,
              history_text: str | None, history_file: str | None, random_state: int,
              as_json: bool) -> None:
    """Show MODEL's top-k for users of DATASET, beside their history.

    MODEL is a saved model directory trained on DATASET, or a baseline name
    (popularity, random, ...).  A training user is served from its training
    embedding; its training items are excluded and recommendations found in its
    held-out test part are marked.  A user held out of training is served from
    its fold-in history.  --history (or --history-file) adds a new user.  Titles
    and groups come from the data set's item table; --json prints every history
    item and every score.

    \b
    Examples:
      recompare recommend models/wals data/planted --user u0 --user u7
      recompare recommend models/dnn data/planted --history i1,i2,i3 -k 20
      recompare recommend models/wals mls --user 1 --history-file liked.txt --json
    """
    from ..data.dataset import Dataset
    from .evaluate import load_models

    if history_text is not None and history_file is not None:
        raise RecompareError("give a new user's history with --history or --history-file, "
                             "not both")
    if not users and history_text is None and history_file is None:
        raise RecompareError("name at least one --user ID, or a new user's --history")
    history = None
    if history_text is not None:
        history = parse_item_list(history_text)
    elif history_file is not None:
        history = read_history_file(history_file)
    dataset = Dataset.load(dataset_path)
    if k > dataset.n_items:
        raise RecompareError(f"-k {k} is larger than the catalogue ({dataset.n_items} items)")
    name, model = next(iter(load_models((model_spec,), dataset, random_state).items()))
    views = recommend_users(model, dataset, list(users), history, k,
                            dataset_name=Path(dataset_path).name or str(dataset_path))
    if as_json:
        echo_json({"model": str(model_spec), "kind": model.kind, "dataset": str(dataset_path),
                   "k": k, "users": [asdict(view) for view in views]})
        return
    console = stdout_console()
    for view in views:
        console.print(*render_user(view, name, k, console.width))


#: narrower consoles get the history and the recommendations as two stacked tables
SIDE_BY_SIDE_MIN_WIDTH = 110


def render_user(view: UserRecommendations, model_name: str, k: int, width: int = 120) -> list:
    """Rich tables for one user: the history beside the recommendations, row by row, or
    (narrower than :data:`SIDE_BY_SIDE_MIN_WIDTH` columns) the history above them.

    Titles and groups are cut with an ellipsis to fit the terminal; ranks and
    scores never are.  Item ids are shown in brackets (what ``--history`` takes).
    """
    from rich.text import Text

    status = {"training": "a training user", "held-out": "held out of training"}
    who = "a new user"
    if view.status != "new":
        group = f", group {view.user_group}" if view.user_group else ""
        who = f"user {view.user} ({status.get(view.status, view.status)}{group})"
    title = Text(f"{model_name} for {who}, served by {view.served_by}")
    history = view.history[:max(k, 10)]
    if len(view.history) > len(history):
        more = len(view.history) - len(history) + 1
        history[-1] = {"title": f"... {more:,} more (--json lists all)", "group": "", "item": ""}
    group_width = max(5, min(12, max((len(row["group"]) for row in view.history
                                      + view.recommendations), default=5)))
    if width >= SIDE_BY_SIDE_MIN_WIDTH:
        return [_table(title, group_width, history, view.recommendations, k, True, width)]
    return [_table(title, group_width, history, [], k, False, width),
            _table(None, group_width, [], view.recommendations, k, False, width)]


def _table(title, group_width: int, history: list[dict], recommendations: list[dict],
           k: int, side_by_side: bool, width: int):
    """One table; every column gets an explicit width so that nothing but titles and
    groups is ever shortened (and those with an ellipsis)."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    show_left = bool(history) or side_by_side
    show_right = bool(recommendations) or side_by_side
    marks = any(rec["held_out"] is not None for rec in recommendations)
    fixed = []  # (header, width, justify) of the columns that are never shortened
    if show_right:
        fixed += [("#", len(str(k)), "right"), ("score", 9, "right")]
        fixed += [("held out", 8, "center")] if marks else []
    n_columns = len(fixed) + 2 * show_left + 2 * show_right
    # SIMPLE_HEAD: one space of padding each side of a cell, one between cells, two edges
    overhead = 3 * n_columns + 1
    n_titles = show_left + show_right
    groups = min(group_width, 12) * n_titles
    free = max(12 * n_titles, width - overhead - groups - sum(w for _, w, _ in fixed))
    need_left = max((len(_label(row)) for row in history), default=12) if show_left else 0
    need_right = max((len(_label(row)) for row in recommendations), default=12)
    title_width, right_width = _share(free, need_left, need_right if show_right else 0)
    table = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left")
    if show_left:
        header = "history" if side_by_side else f"history ({len(history):,} shown)"
        table.add_column(header, overflow="ellipsis", no_wrap=True, width=title_width)
        table.add_column("group", overflow="ellipsis", no_wrap=True, width=min(group_width, 12))
    if show_right:
        table.add_column("#", justify="right", no_wrap=True, width=fixed[0][1])
        table.add_column("recommended", overflow="ellipsis", no_wrap=True,
                         width=right_width)
        table.add_column("group", overflow="ellipsis", no_wrap=True, width=min(group_width, 12))
        for header, column_width, justify in fixed[1:]:
            table.add_column(header, justify=justify, no_wrap=True, width=column_width)
    for i in range(max(len(history), len(recommendations))):
        cells = []
        if show_left:
            left = history[i] if i < len(history) else None
            cells += [_label(left), Text(left["group"] if left else "")]
        if show_right:
            right = recommendations[i] if i < len(recommendations) else None
            if right is None:
                cells += [""] * (4 + marks)
            else:
                cells += [str(right["rank"]), _label(right), Text(right["group"]),
                          f"{right['score']:.4g}"]
                cells += ["yes" if right["held_out"] else ""] if marks else []
        table.add_row(*cells)
    return table


def _share(free: int, left: int, right: int) -> tuple[int, int]:
    """Widths of the two title columns: what they need when it fits in ``free``, else
    half each, the unused part of one half going to the other."""
    if not left or not right:
        return min(free, max(left, 12)), min(free, max(right, 12))
    if left + right <= free:
        return left, right
    half = free // 2
    if left < half:
        return left, free - left
    if right < free - half:
        return free - right, right
    return half, free - half


def _label(row: dict | None):
    """Title and item id as plain text (never read as rich markup: ids like ``[i7]``)."""
    from rich.text import Text

    if row is None:
        return Text("")
    if not row.get("item"):
        return Text(row["title"], style="dim")
    return Text(f"{row['title']} [{row['item']}]" if row["title"] else row["item"])


COMMANDS = [recommend]
