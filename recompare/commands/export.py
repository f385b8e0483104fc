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

    Every model writes query_embeddings (training users x dim) and
    item_embeddings (items x dim); WALS adds the same arrays as user_factors
    and item_factors.  Rows follow the data set's dense indices; --dataset adds
    the external ids.

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
    if data is not None:
        arrays["user_ids"] = np.asarray(data.users.ids, dtype=str)
        arrays["item_ids"] = np.asarray(data.items.ids, dtype=str)
    with atomic_file(out, mode="wb", overwrite=overwrite) as handle:
        np.savez(handle, **arrays)
    summary = {"model": str(model), "kind": fitted.kind, "output": str(out),
               "arrays": {name: {"shape": list(value.shape), "dtype": str(value.dtype)}
                          for name, value in arrays.items()}}
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
    stdout_console().print(table)


COMMANDS = [export]
