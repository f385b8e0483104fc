"""Generate ``docs/cli.md`` from the commands' ``--help`` (a test keeps it fresh).

Regenerate with ``python -m recompare.report.clidoc > docs/cli.md``.
"""
from __future__ import annotations

import click


def _walk(command: click.Command, path: list[str]):
    yield path, command
    if isinstance(command, click.Group):
        for name in command.list_commands(click.Context(command)):
            yield from _walk(command.commands[name], path + [name])


def iter_commands():
    """(path, command) for the group and every registered command, depth first."""
    from ..cli import main

    yield from _walk(main, ["recompare"])


def help_text(path: list[str], command: click.Command) -> str:
    """The exact text ``recompare ... --help`` prints (at a fixed width of 100)."""
    from click.testing import CliRunner

    from ..cli import main

    # prog_name: the name a user types (click would take it from the function, ``main``)
    result = CliRunner().invoke(main, path[1:] + ["--help"], terminal_width=100,
                                prog_name="recompare")
    return result.output


def cli_markdown() -> str:
    lines = [
        "# CLI reference",
        "",
        "Generated from `--help` by `python -m recompare.report.clidoc > docs/cli.md`;",
        "`tests/test_cli_docs.py` fails when this page is stale.",
        "",
    ]
    for path, command in iter_commands():
        lines += [f"## `{' '.join(path)}`", "", "```text", help_text(path, command).rstrip(),
                  "```", ""]
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    print(cli_markdown(), end="")
