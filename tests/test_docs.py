"""Every command teaches itself: a one-line summary, an example, working --help.

Modelled on sqlite-utils' test_docs.py: adding a command without help text,
or without an example, fails here.  The shipped shell completion scripts must
equal what the app generates now, so they cannot go stale.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import typer

from conftest import run_cli, run_cli_inprocess
from usagebox_cli import __version__
from usagebox_cli.cli import app, completion_script

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = sorted(typer.main.get_command(app).commands)  # type: ignore[attr-defined]
from usagebox_cli.cli.completions import TARGETS as COMPLETIONS


def test_the_commands_are_the_ones_the_spec_names():
    assert set(COMMANDS) == {
        "accounts", "budget", "close-period", "conflicts", "copy", "explain", "export", "ingest", "margin", "period",
        "periods", "prices", "query", "reconcile", "report", "sources", "sql", "usage", "verify",
    }


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_has_a_summary_and_an_example(name):
    command = typer.main.get_command(app).commands[name]  # type: ignore[attr-defined]
    help_text = command.help or ""
    summary = help_text.strip().splitlines()[0] if help_text.strip() else ""
    assert summary and summary.endswith("."), f"{name} needs a one-line summary"
    assert f"Example: usagebox {name}" in help_text, f"{name} needs an 'Example: usagebox {name} ...' line"


@pytest.mark.parametrize("name", COMMANDS)
def test_help_runs_for_every_command(name):
    result = run_cli_inprocess([name, "--help"])
    assert result.returncode == 0
    assert "Example: usagebox" in result.stdout


def test_version():
    result = run_cli(["--version"])
    assert result.returncode == 0
    assert result.stdout.decode().strip() == f"usagebox {__version__}"


@pytest.mark.parametrize("shell", sorted(COMPLETIONS))
def test_completion_scripts_are_current(shell):
    shipped = (ROOT / "completions" / COMPLETIONS[shell]).read_text(encoding="utf-8")
    assert shipped == completion_script(shell), f"regenerate completions/{COMPLETIONS[shell]}: python -m usagebox_cli.cli.completions"


def test_completion_answers_a_partial_option():
    result = run_cli([], env={"_USAGEBOX_COMPLETE": "complete_bash", "COMP_WORDS": "usagebox usage acct --gr", "COMP_CWORD": "3"})
    assert result.returncode == 0
    assert result.stdout.decode().split() == ["--group-by"]


@pytest.mark.parametrize("args, message", [
    (["--bogus"], "No such option: --bogus"),
    (["usage"], "Missing argument"),
    (["ingest", "--extra"], "requires an argument"),
    (["usage", "a", "--period", "2026-06", "--from", "2026-06-01"], "--period and --from contradict each other"),
    (["usage", "a", "--json", "--format", "csv"], "--json and --format csv contradict each other"),
    (["verify", "--format", "xml"], "--format must be one of table, json, csv, ndjson, not 'xml'"),
])
def test_usage_errors_are_one_line_with_exit_2(args, message, tmp_path):
    (tmp_path / "e.ndjson").write_text('{"event_id":"e","account_id":"a","meter_id":"m","quantity":1,"timestamp":"2026-06-01T00:00:00Z"}\n')
    run_cli_inprocess(["ingest", tmp_path / "e.ndjson"], db=tmp_path / "u.db")
    result = run_cli_inprocess(args, db=tmp_path / "u.db")
    stderr = result.stderr
    assert result.returncode == 2
    assert stderr.startswith("Error: ") and stderr.count("\n") == 1, stderr
    assert message in stderr
    assert "Traceback" not in stderr
