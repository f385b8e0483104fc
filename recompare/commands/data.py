"""``recompare data``: make, prepare, mirror and inspect data sets.

Thin wrappers: every command calls the Python API in :mod:`recompare.data`
(``planted``, ``mirror``, ``prepare``, ``split``) and saves the result with
:meth:`Dataset.save`, which writes all-or-nothing.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..cli import echo_json, json_option, seed_option, stderr_console, stdout_console
from ..errors import RecompareError

# the loaders' chunk size, restated so that `--help` does not import pandas
CHUNK_ROWS = 2_000_000

SPLIT_CHOICES = ("both", "random", "temporal", "temporal-global", "users", "none")


def _bundle(*decorators):
    """One decorator applying click options in the order listed (as --help shows them)."""
    def apply(func):
        for decorator in reversed(decorators):
            func = decorator(func)
        return func
    return apply


split_options = _bundle(
    click.option("--split", "split_kind", type=click.Choice(SPLIT_CHOICES), default="both",
                 show_default=True,
                 help="random/temporal: per-user holdout; temporal-global: one cutoff time for "
                      "all; users: held-out users (fold-in + evaluation); both: users + "
                      "random; none."),
    click.option("--test-fraction", type=float, default=0.2, show_default=True,
                 help="Share of each training user's interactions held out as test."),
)
time_split_options = _bundle(
    click.option("--last-n", type=click.IntRange(min=1), default=None,
                 help="Temporal split: hold out each user's last N interactions "
                      "(instead of --test-fraction)."),
    click.option("--cutoff", default=None,
                 help="Temporal-global split: a UTC date (2015-01-01) or the share of "
                      "interactions before it (0.8)."),
)
heldout_options = _bundle(
    click.option("--heldout-fraction", type=float, default=0.1, show_default=True,
                 help="Share of users held out of training (users/both splits)."),
    click.option("--foldin-fraction", type=float, default=0.5, show_default=True,
                 help="Share of a held-out user's interactions a model may fold in."),
)


def all_split_options(func):
    """Every split option, then ``--seed``, ``--overwrite`` and ``--json``."""
    return split_options(time_split_options(heldout_options(seed_option(overwrite_option(
        json_option(func))))))


def overwrite_option(func):
    return click.option("--overwrite", is_flag=True,
                        help="Replace OUT if it exists (atomically).")(func)


@click.group("data")
def data_group() -> None:
    """Fetch, make, prepare, mirror and inspect data sets (saved as documented directories).

    The layout of a saved data set is described in docs/data-layout.md.

    \b
    Examples:
      recompare data fetch ml-100k downloads
      recompare data synth my-planted --groups 6 --cross-group-rate 0.05
      recompare data prepare downloads/ml-100k ml100k
      recompare data mirror ml100k ml100k-x2 --copies 2 --cross-rate 0.01
      recompare data info ml100k
    """


def _check_output(out: str, overwrite: bool) -> None:
    # fail before any work, not after minutes of loading
    if Path(out).exists() and not overwrite:
        raise RecompareError(f"output path {out} already exists; choose another or pass "
                             "--overwrite")


def _split_save_report(dataset, out: str, title: str, random_state: int, split_kind: str,
                       test_fraction: float, last_n: int | None, cutoff: str | None,
                       heldout_fraction: float, foldin_fraction: float, overwrite: bool,
                       as_json: bool, warnings: list[str] | None = None) -> None:
    """Split (unless ``none``), save OUT atomically, log it, print ``warnings`` on stderr and
    report the summary (with the warnings under ``"warnings"`` in JSON)."""
    if split_kind != "none":
        from ..data.splits import split

        dataset = split(dataset, split_kind, test_fraction=test_fraction,
                        heldout_fraction=heldout_fraction, foldin_fraction=foldin_fraction,
                        last_n=last_n, cutoff=cutoff, seed=random_state)
    dataset.save(out, overwrite=overwrite)
    console = stderr_console()
    console.log(f"wrote {out}")
    if warnings:
        print_warnings(console, warnings)
    _report(dataset, out, as_json, title, warnings)


def print_warnings(console, warnings: list[str]) -> None:
    """The short block of things a user should know about the data, on ``console``."""
    from rich.table import Table

    block = Table.grid(padding=(0, 1))
    block.add_column(style="yellow", no_wrap=True)
    block.add_column()  # wrapped lines stay indented under their text
    for text in warnings:
        block.add_row("  !", text)
    console.print(f"[bold yellow]{len(warnings)} warning{'s' * (len(warnings) > 1)}[/] "
                  "(counts in meta.json):", highlight=False)
    console.print(block, highlight=False)


def _progress(console) -> Any:
    def callback(event: dict) -> None:
        if event.get("stage") == "load" and "message" in event:
            console.log(event["message"])

    return callback


def _report(dataset, out: str | None, as_json: bool, title: str,
            warnings: list[str] | None = None) -> None:
    info = dataset_summary(dataset)
    if out is not None:
        info["path"] = str(out)
    if warnings is not None:
        info["warnings"] = list(warnings)
    if as_json:
        echo_json(info)
    else:
        stdout_console().print(*info_tables(info, title))


@data_group.command("synth")
@click.argument("out", type=click.Path(dir_okay=True, file_okay=False))
@click.option("--users", "n_users", type=click.IntRange(min=1), default=3000, show_default=True,
              help="Number of users.")
@click.option("--items", "n_items", type=click.IntRange(min=1), default=1500, show_default=True,
              help="Number of items.")
@click.option("--groups", "n_groups", type=click.IntRange(min=1), default=4, show_default=True,
              help="Planted groups (think languages).")
@click.option("--interactions-per-user", type=click.FloatRange(min=1), default=40,
              show_default=True, help="Mean interactions per user (log-normal counts).")
@click.option("--cross-group-rate", type=click.FloatRange(0, 1), default=0.02,
              show_default=True, help="Share of each user's interactions with other groups.")
@click.option("--zipf", "zipf_exponent", type=click.FloatRange(min=0), default=1.0,
              show_default=True, help="Zipf exponent of item popularity inside a group.")
@click.option("--tastes", "n_tastes", type=click.IntRange(min=1), default=8, show_default=True,
              help="Latent taste clusters inside each group.")
@click.option("--taste-concentration", type=click.FloatRange(min=0, min_open=True),
              default=0.1, show_default=True,
              help="Dirichlet concentration of user tastes (small: one or two tastes each).")
@click.option("--background-share", type=click.FloatRange(0, 1), default=0.1,
              show_default=True, help="Share of draws that ignore taste (popularity only).")
@click.option("--feature-noise", type=click.FloatRange(0, 1), default=0.1, show_default=True,
              help="Share of users whose group_hint feature is wrong.")
@all_split_options
def synth(out: str, n_users: int, n_items: int, n_groups: int, interactions_per_user: float,
          cross_group_rate: float, zipf_exponent: float, n_tastes: int,
          taste_concentration: float, background_share: float, feature_noise: float,
          random_state: int, **options: Any) -> None:
    """Generate planted-group data (groups, Zipf popularity, latent tastes) into OUT.

    Users interact mostly with their own group's items; --cross-group-rate of
    their interactions go to other groups.  User features: group_hint (right
    for 1 - --feature-noise of users), age and region (weakly tied to the
    group) and device (noise).  The same seed gives the same data set.

    \b
    Examples:
      recompare data synth data/planted
      recompare data synth big --users 200000 --items 20000 --groups 8 --split random
      recompare data synth leaky --cross-group-rate 0.05 --seed 3 --json
    """
    from ..data.synth import planted

    _check_output(out, options["overwrite"])
    console = stderr_console()
    with console.status("generating planted data"):
        dataset = planted(n_users=n_users, n_items=n_items, n_groups=n_groups,
                          interactions_per_user=interactions_per_user,
                          cross_group_rate=cross_group_rate, zipf_exponent=zipf_exponent,
                          n_tastes=n_tastes, taste_concentration=taste_concentration,
                          background_share=background_share, feature_noise=feature_noise,
                          seed=random_state)
        _split_save_report(dataset, out, f"planted data set {out}", random_state, **options)


@data_group.command("prepare")
@click.argument("source", type=click.Path())
@click.argument("out", type=click.Path(dir_okay=True, file_okay=False))
@click.option("--format", "fmt", type=click.Choice(("auto", "movielens", "csv", "parquet")),
              default="auto", show_default=True,
              help="auto: a MovieLens folder (100K, 1M/10M, latest/20M/25M) by its files, "
                   "Parquet by content, anything else as delimited text.")
@click.option("--user-col", default=None, help="User id column (name, or 0-based position).")
@click.option("--item-col", default=None, help="Item id column (name, or 0-based position).")
@click.option("--value-col", default=None,
              help="Interaction strength column (rating, count); default: 1 per row.")
@click.option("--time-col", default=None,
              help="Timestamp column: epoch seconds or date-time text.")
@click.option("--sep", default=None, help="Field separator (default: sniffed: , tab ; | ::).")
@click.option("--header/--no-header", default=None,
              help="Whether the first line names the columns (default: detected).")
@click.option("--items", "items_file", type=click.Path(), default=None,
              help="Item side table (CSV/TSV/Parquet) keyed by item id.")
@click.option("--users", "users_file", type=click.Path(), default=None,
              help="User side table (CSV/TSV/Parquet) keyed by user id.")
@click.option("--group-col", default=None,
              help="Item group column of --items ('a|b' lists: first = group); MovieLens: "
                   "'genres' (primary genre, the default) or 'none'.")
@click.option("--user-group-col", default=None,
              help="User group column of --users (e.g. a user's language).")
@click.option("--feature-cols", default=None,
              help="Comma-separated user feature columns of --users (default: all).")
@click.option("--min-rating", type=float, default=None,
              help="Implicit feedback: keep values >= this, set to 1.")
@click.option("--duplicates", type=click.Choice(("auto", "sum", "max", "last")), default="auto",
              show_default=True,
              help="Repeated (user, item) rows: auto = sum without --value-col (counts), "
                   "else last.")
@click.option("--min-user-interactions", type=click.IntRange(min=1), default=1,
              show_default=True, help="k-core: drop users with fewer interactions.")
@click.option("--min-item-interactions", type=click.IntRange(min=1), default=1,
              show_default=True, help="k-core: drop items with fewer interactions.")
@click.option("--chunk-rows", type=click.IntRange(min=1), default=CHUNK_ROWS, show_default=True,
              help="Rows of a delimited log read at a time (bounds memory; same result).")
@all_split_options
def prepare_command(source: str, out: str, fmt: str, user_col: str | None,
                    item_col: str | None, value_col: str | None, time_col: str | None,
                    sep: str | None, header: bool | None, items_file: str | None,
                    users_file: str | None, group_col: str | None, user_group_col: str | None,
                    feature_cols: str | None,
                    min_rating: float | None, duplicates: str, min_user_interactions: int,
                    min_item_interactions: int, chunk_rows: int, random_state: int,
                    **options: Any) -> None:
    """Load a MovieLens folder or an interaction log, apply policies, split, save to OUT.

    Nothing is dropped unless asked: --min-rating, --min-user-interactions and
    --min-item-interactions are off by default.  MovieLens item groups are the
    primary (first listed) genre; user features come from the users file.

    \b
    Examples:
      recompare data prepare ml-100k/ ml100k            # 943 users, 1682 items
      recompare data prepare ml-latest-small/ mll --min-rating 4 --split temporal
      recompare data prepare ml-25m/ ml25m --split temporal-global --cutoff 2018-01-01
      recompare data prepare plays.tsv music --user-col user --item-col artist \\
          --value-col plays --items artists.csv --group-col language
      recompare data prepare clicks.parquet clicks --min-user-interactions 5 --json
    """
    from ..data.build import preparation_warnings
    from ..data.loaders import prepare

    _check_output(out, options["overwrite"])
    console = stderr_console()
    features = None
    if feature_cols is not None:
        features = [c.strip() for c in feature_cols.split(",") if c.strip()]
    with console.status(f"preparing {source}"):
        dataset = prepare(
            source, format=fmt, user_col=user_col, item_col=item_col, value_col=value_col,
            time_col=time_col, sep=sep, header=header, items=items_file, users=users_file,
            group_col=group_col, user_group_col=user_group_col, feature_cols=features,
            min_rating=min_rating,
            duplicates=duplicates, min_user_interactions=min_user_interactions,
            min_item_interactions=min_item_interactions, chunk_rows=chunk_rows,
            callback=_progress(console))
        _split_save_report(dataset, out, f"prepared data set {out}", random_state,
                           warnings=preparation_warnings(dataset), **options)


@data_group.command("mirror")
@click.argument("source", type=click.Path())
@click.argument("out", type=click.Path(dir_okay=True, file_okay=False))
@click.option("--copies", type=click.IntRange(min=1), default=2, show_default=True,
              help="Number of relabelled copies (one group per copy).")
@click.option("--cross-rate", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Share of each copy's interactions rewired to other copies (0 = disjoint).")
@click.option("--rewire", type=click.Choice(("same", "random")), default="same",
              show_default=True,
              help="same: the same item in another copy; random: another copy's item drawn "
                   "by popularity.")
@click.option("--group-hint/--no-group-hint", default=True, show_default=True,
              help="Add the user feature group_hint (the user's copy: c0, c1, ...).")
@all_split_options
def mirror_command(source: str, out: str, copies: int, cross_rate: float, rewire: str,
                   group_hint: bool, random_state: int, **options: Any) -> None:
    """Copy a prepared data set into k relabelled copies ("languages") and save to OUT.

    Copy k holds every user and item with ids prefixed "c<k>:"; its users see
    only its items, except a --cross-rate share of its interactions rewired to
    other copies.  The source's split is dropped and a new one is made.

    Every user gets a user feature group_hint naming its copy (c0, c1, ...): a
    perfect hint that lets the DNN's query tower tell the copies apart from
    features alone (cold-start users too).  --no-group-hint leaves it out, so
    the user features are the source's only.

    \b
    Examples:
      recompare data mirror ml100k ml100k-x3 --copies 3
      recompare data mirror ml100k ml100k-leaky --copies 2 --cross-rate 0.01
      recompare data mirror ml100k ml100k-nohint --no-group-hint
    """
    from ..data.dataset import Dataset
    from ..data.synth import mirror

    _check_output(out, options["overwrite"])
    dataset = mirror(Dataset.load(source), copies=copies, cross_rate=cross_rate, seed=random_state,
                     rewire=rewire, group_hint=group_hint)
    _split_save_report(dataset, out, f"mirrored data set {out}", random_state, **options)


@data_group.command("split")
@click.argument("source", type=click.Path())
@click.argument("out", type=click.Path(dir_okay=True, file_okay=False))
@all_split_options
def split_command(source: str, out: str, random_state: int, **options: Any) -> None:
    """Re-split a saved data set (its interactions) and save the result to OUT.

    The ids, groups, features and interactions are kept; only the split
    changes, so the fingerprint changes with it.  --split none removes it.

    \b
    Examples:
      recompare data split ml100k ml100k-temporal --split temporal --last-n 5
      recompare data split data/planted planted-s1 --seed 1
      recompare data split ml25m ml25m-2018 --split temporal-global --cutoff 2018-01-01
    """
    from ..data.dataset import Dataset

    _check_output(out, options["overwrite"])
    dataset = Dataset.load(source).replace(split=None)
    _split_save_report(dataset, out, f"data set {out}", random_state, **options)


@data_group.command("info")
@click.argument("dataset_path", metavar="DATASET", type=click.Path())
@json_option
def info_command(dataset_path: str, as_json: bool) -> None:
    """Counts, density, group sizes, cross-group share and split sizes of a data set.

    \b
    Examples:
      recompare data info data/planted
      recompare data info data/planted --json | jq .split
    """
    from ..data.dataset import Dataset

    dataset = Dataset.load(dataset_path)
    _report(dataset, dataset_path, as_json, f"data set {dataset_path}")


# ------------------------------------------------------------------ output
def dataset_summary(dataset) -> dict:
    """``Dataset.info()`` plus interactions per group, value and time ranges."""
    import numpy as np

    info = dataset.info()
    m = dataset.interactions
    if m.nnz:
        info["values"] = {"min": float(m.data.min()), "max": float(m.data.max()),
                          "binary": bool(np.all(m.data == 1))}
    degree = np.diff(m.indptr)
    info["interactions_per_user"] = {"min": int(degree.min()) if len(degree) else 0,
                                     "mean": float(degree.mean()) if len(degree) else 0.0,
                                     "max": int(degree.max()) if len(degree) else 0}
    if dataset.timestamps is not None and dataset.timestamps.nnz:
        import datetime as dt

        stamps = dataset.timestamps.data
        fmt = "%Y-%m-%d"
        info["time_range"] = [
            dt.datetime.fromtimestamp(int(stamps.min()), dt.timezone.utc).strftime(fmt),
            dt.datetime.fromtimestamp(int(stamps.max()), dt.timezone.utc).strftime(fmt)]
    if "groups" in info:
        groups = np.asarray(dataset.item_groups)
        per_item = np.bincount(m.indices, minlength=dataset.n_items)
        for g, name in enumerate(dataset.group_names):
            info["groups"][name]["interactions"] = int(per_item[groups == g].sum())
        unknown = int((groups < 0).sum())
        if unknown:
            info["items_without_group"] = unknown
            info["items_without_group_interactions"] = int(per_item[groups < 0].sum())
    return info


def info_tables(info: dict, title: str) -> list:
    """Rich tables for a :func:`dataset_summary`."""
    from rich.table import Table

    tables = []
    counts = Table(title=title, show_header=False, title_justify="left")
    counts.add_column("", style="bold")
    counts.add_column("", justify="right")
    counts.add_row("users", f"{info['users']:,}")
    counts.add_row("items", f"{info['items']:,}")
    counts.add_row("interactions", f"{info['interactions']:,}")
    counts.add_row("density", f"{info['density']:.4%}")
    per_user = info["interactions_per_user"]
    counts.add_row("per user (min/mean/max)",
                   f"{per_user['min']} / {per_user['mean']:.1f} / {per_user['max']}")
    if "values" in info:
        values = info["values"]
        counts.add_row("values", "binary (1)" if values["binary"]
                       else f"{values['min']:g} .. {values['max']:g}")
    if "time_range" in info:
        counts.add_row("time range", " .. ".join(info["time_range"]))
    if "cross_group_share" in info:
        counts.add_row("cross-group share", f"{info['cross_group_share']:.2%}")
    if info.get("user_features"):
        counts.add_row("user features", ", ".join(info["user_features"]))
    counts.add_row("source", str(info.get("source")))
    counts.add_row("fingerprint", info["fingerprint"])
    tables.append(counts)
    if "groups" in info:
        groups = Table(title="groups", title_justify="left")
        for column in ("group", "items", "users", "interactions"):
            groups.add_column(column, justify="left" if column == "group" else "right")
        for name, row in info["groups"].items():
            groups.add_row(name, f"{row['items']:,}", f"{row['users']:,}",
                           f"{row.get('interactions', 0):,}")
        if info.get("items_without_group"):
            groups.add_row("(no group)", f"{info['items_without_group']:,}", "",
                           f"{info.get('items_without_group_interactions', 0):,}")
            groups.caption = "(no group): no group in the item table"
            groups.caption_justify = "left"
        tables.append(groups)
    if "split" in info:
        split = info["split"]
        table = Table(title=f"split: {split['kind']}", title_justify="left")
        for column in ("part", "interactions", "users"):
            table.add_column(column, justify="left" if column == "part" else "right")
        table.add_row("train", f"{split['train']:,}", "")
        table.add_row("test", f"{split['test']:,}", "")
        table.add_row("foldin", f"{split['foldin']:,}", f"{split['heldout_users']:,}")
        table.add_row("heldout", f"{split['heldout']:,}", f"{split['heldout_users']:,}")
        table.caption = "protocols: " + (", ".join(split["protocols"]) or "none")
        tables.append(table)
    return tables



def _register_fetch() -> None:
    from .data_fetch import fetch_command  # its own module: download, verify, unpack

    data_group.add_command(fetch_command)


_register_fetch()
COMMANDS = [data_group]
