"""``recompare bench``: the scripted benchmarks, each side by side with its peer."""
from __future__ import annotations

import click

from ..cli import echo_json, json_option, stderr_console

SUITES = ("wals", "dnn", "eval", "scaling", "serving", "data")
_MODULES = {
    "wals": "recompare.bench.wals",
    "dnn": "recompare.bench.dnn",
    "eval": "recompare.bench.evaluation",
    "scaling": "recompare.bench.scaling",
    "serving": "recompare.bench.serving",
    "data": "recompare.bench.data",
    "scale": "recompare.bench.scale",
}
#: run only when named: it starts processes and Spark (its Spark part needs the spark
#: extra and a Java runtime; without them that part says why and the rest runs)
OPT_IN = ("scale",)


@click.command("bench")
@click.argument("suite", type=click.Choice(SUITES + OPT_IN + ("all",)), default="all")
@click.option("--scale", type=click.Choice(("tiny", "small", "full")), default="small",
              show_default=True,
              help="tiny: seconds, exercises every script (CI); full: the figures in the issues.")
@click.option("-o", "--output", "output", type=click.Path(file_okay=False), default=None,
              help="Directory for bench.json, bench.md and plots (replaced atomically) "
                   "[default: bench-results/SCALE].")
@click.option("--dataset", type=click.Path(exists=True, file_okay=False), default=None,
              help="dnn only: a prepared, split data set for the accuracy-vs-implicit part "
                   "(e.g. ml-latest-small) [default: the bundled planted data].")
@json_option
def bench(suite: str, scale: str, output: str | None, dataset: str | None,
          as_json: bool) -> None:
    """Run the scripted benchmarks and report figures as ratios to their peers.

    Each benchmark measures recompare and its peer in the same run (implicit for
    WALS, this machine's matmul for the DNN and for top-k evaluation, this
    machine's memory bandwidth and exact search for serving), because absolute
    times on a shared machine are noisy while ratios hold.  `serving` measures
    approximate search too when faiss is installed (pip install 'recompare[ann]').
    `scale` (Spark ALS vs local WALS on local[2], the DNN's epoch time in 1 vs 2
    processes) runs only when named; its Spark part needs pip install
    'recompare[spark]' and Java 17.

    \b
    Examples:
      recompare bench all --scale tiny          # every script, in seconds
      recompare bench wals --scale full --json  # the WALS figures against implicit
      recompare bench serving --scale full      # catalogue sweep up to 10^6 items
      recompare bench scale --scale small       # Spark / local WALS ratios
      recompare bench dnn --dataset mls/        # DNN and WALS vs tuned implicit there
    """
    import importlib
    import time

    from .._gc import frozen_heap
    from ..bench.common import machine_info
    from ..report.bench import bench_table, write_bench_outputs

    console = stderr_console()
    output = output or f"bench-results/{scale}"
    names = SUITES if suite == "all" else (suite,)
    results: dict = {"scale": scale, "machine": machine_info(), "suites": {}}
    for name in names:
        module = importlib.import_module(_MODULES[name])
        start = time.perf_counter()
        with console.status(f"[bold]bench {name}[/] ({scale})") as status:
            def callback(event: dict, _status=status, _name=name) -> None:
                message = event.get("message") or event.get("stage") or ""
                _status.update(f"[bold]bench {_name}[/] ({scale}) {message}")

            extra = {"dataset": dataset} if name == "dnn" and dataset else {}
            with frozen_heap():  # the collections before each measurement stay cheap
                results["suites"][name] = module.run(scale=scale, callback=callback, **extra)
        results["suites"][name]["wall_seconds"] = time.perf_counter() - start
        console.log(f"bench {name} done in {time.perf_counter() - start:.1f} s")
    write_bench_outputs(results, output)
    console.log(f"wrote {output}/bench.json and {output}/bench.md")
    if as_json:
        echo_json(results)
    else:
        from ..cli import stdout_console

        stdout_console().print(bench_table(results))


COMMANDS = [bench]
