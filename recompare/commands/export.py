"""``recompare export``: a trained model's embeddings as named arrays in one ``.npz``.

Works for every model kind through :meth:`Recommender.export_arrays`.
"""
from __future__ import annotations

import click

from ..cli import echo_json, json_option, stdout_console


@click.command("export")
@click.argument("model", type=click.Path())
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("--dataset", "dataset", type=click.Path(), default=None,
              help="The data set the model was trained on: checks its fingerprint and adds "
                   "user_ids and item_ids (external ids, as strings).")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists (atomically).")
@json_option
def export(model: str, out: str, dataset: str | None, overwrite: bool, as_json: bool) -> None:
    """Write MODEL's embeddings to OUT (.npz, named arrays, readable without pickle).

    Every model writes query_embeddings (one row per user of the data set x
    dim) and item_embeddings (items x dim); WALS adds the same arrays as
    user_factors and item_factors.  Rows follow the data set's dense indices;
    --dataset adds the external ids.  Users held out of training have no WALS
    factors: with --dataset their rows are filled by fold-in of their fold-in
    history (as `recommend` and the strong protocol serve them), without it they
    stay zero and the output says so.  The DNN fills them from its query tower.

    \b
    Examples:
      recompare export models/wals wals.npz
      recompare export models/dnn dnn.npz --dataset data/planted --json
      python -c "import numpy as np; print(np.load('wals.npz')['item_factors'].shape)"
    """
    import numpy as np

    from .._atomic import atomic_file
    from ..models import load_model

    data = None
    if dataset is not None:
        from ..data.dataset import Dataset

        data = Dataset.load(dataset)
    fitted = load_model(model, data)
    arrays = {name: np.ascontiguousarray(value) for name, value in fitted.export_arrays().items()}
    untrained = _rows_without_training(fitted, data, arrays)
    if data is not None:
        arrays["user_ids"] = np.asarray(data.users.ids, dtype=str)
        arrays["item_ids"] = np.asarray(data.items.ids, dtype=str)
    with atomic_file(out, mode="wb", overwrite=overwrite) as handle:
        np.savez(handle, **arrays)
    summary = {"model": str(model), "kind": fitted.kind, "output": str(out),
               "arrays": {name: {"shape": list(value.shape), "dtype": str(value.dtype)}
                          for name, value in arrays.items()},
               "users_without_training": untrained}
    if as_json:
        echo_json(summary)
        return
    from rich.table import Table

    table = Table(title=f"{fitted.kind} model {model} -> {out}")
    table.add_column("array", style="bold")
    table.add_column("shape", justify="right")
    table.add_column("dtype")
    for name, meta in summary["arrays"].items():
        table.add_row(name, " x ".join(f"{n:,}" for n in meta["shape"]), meta["dtype"])
    console = stdout_console()
    console.print(table)
    if untrained is not None:
        console.print(f"{untrained['count']:,} users have no training interactions "
                      f"(held out); their rows: {untrained['rows']}.", markup=False)


def _rows_without_training(fitted, data, arrays: dict) -> dict | None:
    """Fill (WALS) or describe the query rows of users absent from the training matrix.

    WALS leaves such rows at zero; with the data set they get the embedding that
    serving would give: one fold-in solve on the user's fold-in history, or the
    cold-start average when there is none.  The DNN's rows already come from its
    query tower (features, empty history).  Returns None when every user trained.
    """
    import numpy as np

    if data is None:
        if fitted.kind != "wals":
            return None
        users = np.flatnonzero(~arrays["query_embeddings"].any(axis=1))
        rows = "zero (absent); pass --dataset to fill them by fold-in"
        return {"count": len(users), "rows": rows} if len(users) else None
    users = np.flatnonzero(np.diff(data.train.indptr) == 0)
    if not len(users):
        return None
    if fitted.kind != "wals":
        served = {"softmax": "the query tower on their features, with an empty history"}
        return {"count": len(users),
                "rows": served.get(fitted.kind, "as the model serves a user with no history")}
    import scipy.sparse as sp

    split = data.split
    history = (split.foldin[users] if split is not None and split.foldin is not None
               else sp.csr_matrix((len(users), data.n_items), dtype=np.float32))
    features = (None if data.user_features is None
                else data.user_features.iloc[users].reset_index(drop=True))
    filled = fitted.embed_new_users(history, features)
    for name in ("query_embeddings", "user_factors"):
        arrays[name] = arrays[name].copy()
        arrays[name][users] = filled
    has_history = int((np.diff(history.indptr) > 0).sum())
    rows = f"fold-in of their fold-in history ({has_history:,} users)"
    if has_history < len(users):
        rows += (f", the average of similar training users for the "
                 f"{len(users) - has_history:,} without one")
    return {"count": len(users), "rows": rows}


COMMANDS = [export]
