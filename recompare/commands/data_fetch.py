"""``recompare data fetch``: download a GroupLens data set, verified, into a folder.

Kept apart from :mod:`recompare.commands.data`, which registers it in the ``data`` group.
"""
from __future__ import annotations

from pathlib import Path

import click

from ..cli import echo_json, json_option, stderr_console, stdout_console


@click.command("fetch")
@click.argument("name", required=False)
@click.argument("target", metavar="DIR", required=False, type=click.Path(file_okay=False))
@click.option("--list", "list_only", is_flag=True, help="List the data sets, sizes and terms.")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
              help="Download cache [default: $RECOMPARE_CACHE, else ~/.cache/recompare].")
@json_option
def fetch_command(name: str | None, target: str | None, list_only: bool,
                  cache_dir: str | None, as_json: bool) -> None:
    """Download a public MovieLens data set, verify its SHA-256, and unpack it into DIR.

    The archive is kept in a cache (a broken download resumes from there) and
    unpacked into DIR/NAME all-or-nothing; members that would land outside DIR
    are refused.  GroupLens data is for research use and may not be
    redistributed: recompare downloads it from GroupLens, never ships it.

    \b
    Examples:
      recompare data fetch --list
      recompare data fetch ml-100k downloads
      recompare data fetch ml-25m downloads --cache-dir /scratch/cache
    """
    from ..data import fetch as fetching

    if list_only:
        _list_archives(fetching, as_json)
        return
    if name is None or target is None:
        raise click.UsageError("pass NAME and DIR (or --list to see the names)")
    console = stderr_console()
    archive = fetching.ARCHIVES.get(name)
    if archive is not None:
        console.print(f"[bold]{name}[/]: {archive.license}", highlight=False)
    folder = _fetch_with_progress(fetching, name, target, cache_dir, console)
    if as_json:
        echo_json({"name": name, "path": str(folder), "license": archive.license})
    else:
        stdout_console().print(f"{folder}\nnext: recompare data prepare {folder} "
                               f"{Path(target) / (name + '-prepared')}", highlight=False)


def _fetch_with_progress(fetching, name: str, target: str, cache_dir: str | None,
                         console) -> Path:
    from rich.progress import DownloadColumn, Progress, TransferSpeedColumn

    with Progress(*Progress.get_default_columns(), DownloadColumn(), TransferSpeedColumn(),
                  console=console, transient=True) as progress:
        task = progress.add_task(f"downloading {name}", total=None)

        def callback(event: dict) -> None:
            if event.get("stage") == "download":
                progress.update(task, completed=event["done"], total=event["total"])
            elif "message" in event:
                progress.console.log(event["message"])

        return fetching.fetch(name, target, cache=cache_dir, callback=callback)


def _list_archives(fetching, as_json: bool) -> None:
    rows = [{"name": a.name, "bytes": a.size, "description": a.description, "url": a.url,
             "sha256": a.sha256, "license": a.license} for a in fetching.ARCHIVES.values()]
    if as_json:
        echo_json(rows)
        return
    from rich.table import Table

    table = Table(title="data sets for `recompare data fetch`", title_justify="left",
                  caption=fetching.LICENSE)
    for column in ("name", "size", "contents"):
        table.add_column(column, justify="right" if column == "size" else "left")
    for row in rows:
        table.add_row(row["name"], f"{row['bytes'] / 1e6:,.1f} MB", row["description"])
    stdout_console().print(table)
