"""Every command has help with an example, and docs/cli.md matches --help."""
from pathlib import Path

import pytest
from click.testing import CliRunner

from recompare.cli import main
from recompare.report.clidoc import cli_markdown, iter_commands

DOC = Path(__file__).resolve().parents[1] / "docs" / "cli.md"
COMMANDS = list(iter_commands())


@pytest.mark.parametrize("path,command", COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_every_command_has_help(path, command):
    result = CliRunner().invoke(main, path[1:] + ["--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output
    assert command.help and len(command.help.strip()) > 20
    if not isinstance(command, type(main)):
        assert "Example" in command.help, f"{' '.join(path)} help has no example"


def test_short_help_flag_and_version():
    runner = CliRunner()
    assert runner.invoke(main, ["-h"]).exit_code == 0
    result = runner.invoke(main, ["--version"])
    assert result.exit_code == 0 and "recompare" in result.output


def test_cli_reference_is_fresh():
    assert DOC.is_file(), "docs/cli.md missing: python -m recompare.report.clidoc > docs/cli.md"
    assert DOC.read_text() == cli_markdown(), (
        "docs/cli.md is stale: run `python -m recompare.report.clidoc > docs/cli.md`"
    )


def test_help_does_not_import_heavy_libraries():
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from recompare.cli import main\n"
        "CliRunner().invoke(main, ['--help'])\n"
        "print(sorted(m for m in ('torch', 'pandas', 'scipy', 'matplotlib') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"  # --help stays instant
