"""``recompare train-dnn``: train the softmax DNN and save it as a model directory.

A thin wrapper over :class:`recompare.models.softmax.SoftmaxDNN`; torch is
imported only when the command runs.
"""
from __future__ import annotations

from pathlib import Path

import click

from ..cli import (
    echo_summary,
    estimator_defaults,
    json_option,
    model_output_options,
    seed_option,
    stderr_console,
    threads_option,
)
from ..errors import RecompareError

#: option defaults: the estimator's own (read from its source; torch is not imported)
DEFAULTS = estimator_defaults("recompare.models.softmax", "SoftmaxDNN")


def _hidden_text(hidden: tuple[int, ...]) -> str:
    """(600, 200) -> ``"600,200"``; () -> ``"none"`` (the spelling --hidden reads)."""
    return ",".join(str(size) for size in hidden) or "none"


def _option(*decls: str, param: str, **kwargs):
    """A click option whose default is the estimator's default of ``param``."""
    return click.option(*decls, default=DEFAULTS[param], show_default=True, **kwargs)


def _tower_options(func):
    """``--dim``, ``--hidden``, ``--activation``, ``--members``."""
    func = _option("--members", param="members", type=int,
                   help="Train this many networks (own seeds) and serve the mean of their "
                        "scores: members x the training and serving cost.")(func)
    func = _option("--activation", param="activation", type=click.Choice(("relu", "tanh")),
                   help="Activation of the hidden layers.")(func)
    func = click.option("--hidden", default=_hidden_text(DEFAULTS["hidden"]), show_default=True,
                        help="Hidden layer sizes of the query tower, comma separated "
                             "(e.g. 600,200); 'none' for a linear tower.")(func)
    func = _option("--dim", param="dim", type=int,
                   help="Embedding dimension of queries and items.")(func)
    return func


def _input_options(func):
    """``--features``, ``--dropout``, ``--normalize``."""
    func = click.option("--normalize/--no-normalize", default=None,
                        help="L2-normalise query and item embeddings; scores are "
                             "cosine / --temperature.  [default: with the full loss]")(func)
    func = _option("--temperature", param="temperature", type=float,
                   help="Temperature of normalised scores (with normalisation).")(func)
    func = _option("--dropout", param="dropout", type=float,
                   help="Dropout after each hidden layer.")(func)
    func = _option("--features", param="features",
                   help="Query features: history, user, or both (comma separated); "
                        "auto = history plus user features when the data set has them.")(func)
    return func


def _auto_or(convert, option: str, text: str) -> float | int | str:
    """``auto`` or ``convert(text)`` for an option that takes either (the model checks
    the range, with its own one-line error)."""
    if text == "auto":
        return text
    try:
        return convert(text)
    except ValueError:
        kind = "an integer" if convert is int else "a number"
        raise RecompareError(f"{option} must be {kind} or auto, got {text!r}") from None


def _loss_options(func):
    """``--loss``, ``--negatives``, ``--num-negatives``, ``--gravity``."""
    func = _option("--gravity", param="gravity", type=str,
                   help="Gravity coefficient: (1/(M N)) sum <U_i, V_j>^2 over the "
                        "batch queries and all items; auto = 1 with the full loss, 0 with "
                        "a sampled one.")(func)
    # the negatives options only mean something with --loss sampled: their defaults are
    # stated in the help text, not as "[default: ...]", which would suggest they always apply
    func = click.option("--num-negatives", type=int, default=DEFAULTS["num_negatives"],
                        help="With --loss sampled only: negatives per batch (uniform, "
                             f"popularity; per query for hard); {DEFAULTS['num_negatives']} "
                             "if not given.")(func)
    func = click.option("--negatives", default=DEFAULTS["negatives"],
                        type=click.Choice(("uniform", "popularity", "in-batch", "hard", "none")),
                        help="With --loss sampled only: how negatives are drawn "
                             f"({DEFAULTS['negatives']} if not given); none = positives only "
                             "(folding-prone).  An error with --loss full, which scores "
                             "every item and needs none.")(func)
    func = _option("--loss", param="loss", type=click.Choice(("full", "sampled")),
                   help="full: exact softmax over all items (the more accurate default); "
                        "sampled: a sampled softmax with --negatives (for large "
                        "catalogues).")(func)
    return func


def _training_options(func):
    """``--epochs``, ``--average-epochs``, ``--batch-size``, ``--lr``, ``--lr-decay``,
    ``--optimizer``."""
    func = _option("--optimizer", param="optimizer", type=click.Choice(("adam", "adagrad")),
                   help="Adam (SparseAdam for sparse embedding rows) or Adagrad.")(func)
    func = _option("--lr-decay", param="lr_decay",
                   type=click.Choice(("auto", "none", "linear", "cosine")),
                   help="Learning-rate schedule over --epochs: auto = constant for 200 "
                        "optimiser steps, then linear to 0; none = constant; linear to 0; "
                        "half a cosine to 0.")(func)
    func = _option("--lr", param="lr", type=float, help="Learning rate.")(func)
    func = _option("--batch-size", param="batch_size", type=int,
                   help="Users per batch.")(func)
    func = _option("--average-epochs", param="average_epochs", type=str,
                   help="Keep the mean of the weights of the last N epochs (0 = the last "
                        "epoch's; auto = the last quarter of --epochs; ignored with early "
                        "stopping).")(func)
    func = _option("--epochs", param="epochs", type=int,
                   help="Maximum number of epochs (early stopping may end sooner).")(func)
    return func


def _stopping_options(func):
    """``--patience``, ``--validation-fraction``."""
    func = _option("--validation-fraction", param="validation_fraction",
                   type=click.FloatRange(0, 1, max_open=True),
                   help="Share of each training user's items held out for validation "
                        "(carved from the training part; the test split is never read); "
                        "0 = none.")(func)
    func = _option("--patience", param="patience", type=click.IntRange(min=0),
                   help="Stop after this many epochs without a better validation "
                        "recall@20; 0 = no early stopping (train all epochs).")(func)
    return func


def _checkpoint_options(func):
    """``--checkpoint-dir``, ``--resume``."""
    func = click.option("--resume", "resume", type=click.Path(file_okay=False), default=None,
                        help="Continue training from this checkpoint directory (checkpoints "
                             "keep being written there unless --checkpoint-dir says "
                             "otherwise).")(func)
    func = click.option("--checkpoint-dir", type=click.Path(file_okay=False), default=None,
                        help="Write a checkpoint (model + optimizer state) after every "
                             "epoch.")(func)
    return func


def _parallel_options(func):
    """``--processes``, ``--device``."""
    func = click.option("--device", type=click.Choice(("cpu", "cuda", "auto")), default="cpu",
                        show_default=True,
                        help="Where to train: cpu, cuda (an error without a GPU) or auto. "
                             "The DNN trains on CPU only so far: cuda is refused, auto "
                             "resolves to cpu.")(func)
    func = click.option("--processes", type=int, default=1, show_default=True,
                        help="Data-parallel CPU processes (torch.distributed, gloo); each "
                             "trains on its share of every batch, with the same result as "
                             "one process.  Under torchrun its WORLD_SIZE is used "
                             "instead.")(func)
    return func


def parse_hidden(text: str) -> tuple[int, ...]:
    """``"600,200"`` -> (600, 200); ``"none"`` or ``""`` -> ()."""
    text = text.strip().lower()
    if text in ("", "none"):
        return ()
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise RecompareError(
            f"--hidden must be comma-separated integers such as 256 or 600,200, got {text!r}"
        ) from None


def _loss_for(ctx: click.Context, loss: str) -> str:
    """Refuse ``--negatives``/``--num-negatives`` unless the loss is sampled: the full
    softmax has no negatives, and switching the loss behind the user's back changed the
    model they asked for."""
    from click.core import ParameterSource

    given = [name for name in ("negatives", "num_negatives")
             if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE]
    if given and loss != "sampled":
        flag = "--" + given[0].replace("_", "-")
        raise click.BadParameter(f"{flag} applies to the sampled softmax only: add --loss "
                                 "sampled, or drop it to keep the full softmax (the default)",
                                 param_hint=flag)
    return loss


@click.command("train-dnn")
@click.argument("dataset", type=click.Path())
@model_output_options
@_tower_options
@_input_options
@_loss_options
@_training_options
@_stopping_options
@_checkpoint_options
@_parallel_options
@seed_option
@threads_option
@json_option
def train_dnn(dataset: str, output: str, dim: int, hidden: str, activation: str,
              members: int, features: str, dropout: float, temperature: float, normalize: bool | None,
              loss: str,
              negatives: str, num_negatives: int, gravity: str, epochs: int,
              average_epochs: str, batch_size: int, lr: float, lr_decay: str,
              optimizer: str,
              patience: int, validation_fraction: float, checkpoint_dir: str | None,
              resume: str | None, processes: int, device: str, random_state: int,
              threads: int, overwrite: bool, as_json: bool) -> None:
    """Train the softmax DNN on DATASET and save it to MODEL (-o).

    The query tower reads the user's history (a bag of items, with the
    targets masked out) and user features; the loss is an exact softmax over
    all items (--loss full) or a sampled one with a choice of negatives.
    Progress (loss, validation recall@20) goes to stderr; a summary to stdout.

    \b
    Examples:
      recompare train-dnn data/planted -o models/dnn
      recompare train-dnn data/planted -o models/dnn-none --loss sampled --negatives none
      recompare train-dnn data/planted -o models/dnn-g --loss sampled --negatives none \\
          --gravity 1
      recompare train-dnn data/planted -o models/dnn --checkpoint-dir ckpt/   # then:
      recompare train-dnn data/planted -o models/dnn --resume ckpt/ --overwrite
      recompare train-dnn data/planted -o models/dnn-2 --processes 2
      torchrun --nproc-per-node 2 -m recompare train-dnn data/planted -o models/dnn-2
    """
    from ..models import ddp

    processes = ddp.check_processes(processes)
    device_type = ddp.resolve_device(device)
    _check_device(device_type, device)
    torchrun = ddp.from_environment()  # None unless torchrun started this process
    if torchrun is not None:
        processes = _torchrun_processes(click.get_current_context(), processes, torchrun)
    if Path(output).exists() and not overwrite:
        raise RecompareError(f"output path {output} already exists; choose another or pass "
                             "--overwrite")
    if resume is not None and not Path(resume).is_dir():
        raise RecompareError(f"checkpoint directory {resume} does not exist")
    hidden_sizes = parse_hidden(hidden)
    gravity = _auto_or(float, "--gravity", gravity)
    average = _auto_or(int, "--average-epochs", average_epochs)
    loss = _loss_for(click.get_current_context(), loss)

    from ..data.dataset import Dataset
    from ..models.softmax import SoftmaxDNN

    data = Dataset.load(dataset)
    model = SoftmaxDNN(
        dim=dim, hidden=hidden_sizes, activation=activation, dropout=dropout,
        features=features, normalize="auto" if normalize is None else normalize,
        temperature=temperature, loss=loss,
        negatives=negatives, num_negatives=num_negatives, gravity=gravity, epochs=epochs,
        average_epochs=average, batch_size=batch_size, lr=lr, lr_decay=lr_decay,
        optimizer=optimizer,
        patience=patience or None,  # --patience 0: no early stopping
        validation_fraction=validation_fraction, members=members, random_state=random_state,
        threads=threads,
    )
    model.check(data)  # bad input fails here, before the progress bar appears
    if checkpoint_dir is None and resume is not None:
        checkpoint_dir = resume
    if processes > 1 and loss == "sampled" and negatives == "in-batch":
        raise RecompareError("--negatives in-batch draws from each process's own batch: "
                             "use another --negatives with --processes > 1 or torchrun")
    if torchrun is not None:
        model = _fit_in_torchrun_group(torchrun, device_type, model, data, checkpoint_dir,
                                       resume, output, overwrite)
        if not ddp.is_main(torchrun):
            return  # rank 0 reports; the other ranks print nothing
    elif processes > 1:
        ddp.launch(processes, train_process, dataset, model.get_params(), checkpoint_dir,
                   resume, output, overwrite)
        model = SoftmaxDNN.load(output)
    else:
        console = stderr_console()
        with _EpochProgress(console, epochs, members) as progress:
            model.fit(data, callback=progress.callback, checkpoint_dir=checkpoint_dir,
                      resume_from=resume)
        model.save(output, overwrite=overwrite)
    info = {k: v for k, v in model.fit_info_.items() if k != "history"}
    summary = {"model": str(output), "kind": model.kind, "fingerprint": model.fingerprint_,
               "params": {k: (list(v) if isinstance(v, tuple) else v)
                          for k, v in model.get_params().items()},
               **info, "history": model.fit_info_["history"]}

    def rows() -> list[tuple[str, str]]:
        best = info.get("best_validation_recall")
        return [
            ("features", ", ".join(info["features"])),
            ("loss", loss if loss == "full" else f"sampled, negatives {negatives}"),
            ("gravity", f"{model.gravity_value():g}"),
            ("epochs run", str(info["epochs_run"]) if "members" not in info else
             " + ".join(str(m["epochs_run"]) for m in info["members"])
             + f" ({len(info['members'])} members)"),
            ("best epoch", str(info.get("best_epoch") or "-")),
            ("validation recall@20", "-" if best is None else f"{best:.4f}"),
            ("validation", info.get("validation") or "none"),
            ("stopped early", "yes" if info.get("stopped_early") else "no"),
            ("train time", f"{info['train_seconds']:.1f} s"),
        ]

    echo_summary(summary, f"softmax DNN -> {output}", rows, as_json)


def _check_device(resolved: str, asked: str) -> None:
    """Refuse a GPU: the DNN's batches and samplers are CPU tensors so far."""
    if resolved != "cpu" and asked == "cuda":
        raise RecompareError("--device cuda: train-dnn trains on CPU only so far; use "
                             "--device cpu (or --processes N for more CPU processes)")


def _torchrun_processes(click_ctx: click.Context, processes: int, torchrun) -> int:
    """Under torchrun the process count is its WORLD_SIZE; an explicit ``--processes``
    must agree with it (this command does not spawn processes of its own there)."""
    from click.core import ParameterSource

    given = click_ctx.get_parameter_source("processes") == ParameterSource.COMMANDLINE
    if given and processes != torchrun.world_size:
        raise RecompareError(f"--processes {processes} under torchrun, whose WORLD_SIZE is "
                             f"{torchrun.world_size}: drop --processes (torchrun starts the "
                             "processes)")
    return torchrun.world_size


def _fit_in_torchrun_group(torchrun, device_type: str, model, data, checkpoint_dir: str | None,
                           resume: str | None, output: str, overwrite: bool):
    """Join torchrun's process group (gloo on CPU, nccl on GPU) and fit this rank's shard
    of every batch; rank 0 shows the progress and writes the checkpoints and the model."""
    from ..models import ddp

    with ddp.process_group(torchrun.rank, torchrun.world_size, device_type) as ctx:
        if not ddp.is_main(ctx):
            model.fit(data, checkpoint_dir=checkpoint_dir, resume_from=resume, ctx=ctx)
            return model
        with _EpochProgress(stderr_console(), model.epochs) as progress:
            model.fit(data, callback=progress.callback, checkpoint_dir=checkpoint_dir,
                      resume_from=resume, ctx=ctx)
        model.save(output, overwrite=overwrite)
    return model


def train_process(ctx, dataset: str, params: dict, checkpoint_dir: str | None,
                  resume: str | None, output: str, overwrite: bool) -> None:
    """One process of ``train-dnn --processes N``: load the data, fit on this process's
    shard of every batch; the main process writes the model (atomically)."""
    from ..data.dataset import Dataset
    from ..models import ddp
    from ..models.softmax import SoftmaxDNN

    model = SoftmaxDNN(**params)
    model.fit(Dataset.load(dataset), checkpoint_dir=checkpoint_dir, resume_from=resume,
              ctx=ctx)
    if ddp.is_main(ctx):
        model.save(output, overwrite=overwrite)


class _EpochProgress:
    """A rich progress bar over epochs showing the loss and validation recall."""

    def __init__(self, console, epochs: int, members: int = 1) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.progress = Progress(
            TextColumn("[bold]train-dnn"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TextColumn("{task.fields[status]}"),
            console=console, transient=False,
        )
        self.epochs, self.members = epochs, members
        self.task = self.progress.add_task("epochs", total=epochs * members, status="")

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def callback(self, event: dict) -> None:
        stage = event.get("stage")
        # an ensemble's members report one after the other: member k's epochs follow
        # the k earlier members' on the bar
        member = event.get("member")
        before = 0 if member is None else member * self.epochs
        who = "" if member is None else f"member {member + 1}/{self.members}: "
        if stage == "start":
            self.progress.update(self.task, completed=before + event.get("start_epoch", 0),
                                 status=f"{who}{event['users']} users, {event['items']} items")
        elif stage == "batch":
            self.progress.update(self.task, status=f"{who}epoch {event['epoch']}: batch "
                                 f"{event['batch']}/{event['batches']}")
        elif stage == "epoch":
            val = event.get("validation_recall")
            status = f"{who}loss {event['loss']:.4f}"
            if val is not None:
                status += f"  val recall@20 {val:.4f} (best epoch {event.get('best_epoch')})"
            self.progress.update(self.task, completed=before + event["epoch"], status=status)
        elif stage == "done" and member is None:
            self.progress.update(self.task, total=max(1, event["epochs_run"]),
                                 completed=event["epochs_run"])


COMMANDS = [train_dnn]
