"""The generated reference pages in docs/ equal what the code gives now.

``docs/generate.py`` writes docs/schema.md (the migrations' schema) and
docs/cli.md (every command's --help).  A command, flag or migration step
added without rerunning it fails here, and the message names the command
that regenerates the pages.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

_spec = importlib.util.spec_from_file_location("usagebox_docs_generate", DOCS / "generate.py")
generate = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(generate)

REGENERATE = "python docs/generate.py"


@pytest.mark.parametrize("name", sorted(generate.PAGES))
def test_generated_page_is_current(name):
    shipped = (DOCS / name).read_text(encoding="utf-8")
    assert shipped == generate.PAGES[name](), f"docs/{name} is stale; regenerate it with: {REGENERATE}"


def test_schema_page_holds_the_live_sqlite_schema():
    from usagebox_cli.engines.sqlite.schema import schema_sql

    page = (DOCS / "schema.md").read_text(encoding="utf-8")
    assert "```sql\n" + schema_sql() + "```\n" in page, f"docs/schema.md is stale; regenerate it with: {REGENERATE}"


def test_schema_page_holds_every_postgres_step_in_order():
    from usagebox_cli.engines.postgres.migrations import MIGRATIONS

    page = (DOCS / "schema.md").read_text(encoding="utf-8")
    positions = [page.index(f"### {name}\n\n```sql\n{sql.strip(chr(10))}\n```\n") for name, sql in MIGRATIONS]
    assert positions == sorted(positions) and len(positions) >= 1


def test_cli_page_shows_what_a_user_sees():
    """The generator renders --help in-process; a real process at the same width prints the same."""
    env = {k: v for k, v in os.environ.items() if k not in ("USAGEBOX_DB",)}
    env.update(generate.HELP_ENV)
    printed = subprocess.run([sys.executable, "-m", "usagebox_cli", "prices", "import", "--help"],
                             capture_output=True, text=True, env=env, check=True).stdout
    page = (DOCS / "cli.md").read_text(encoding="utf-8")
    assert "## usagebox prices import\n\n```text\n" + printed.rstrip() + "\n```\n" in page


def test_cli_page_has_a_section_for_every_command_in_help_order():
    page = (DOCS / "cli.md").read_text(encoding="utf-8")
    headings = re.findall(r"^## (.+)$", page, re.M)
    top = list(generate._root_command().commands)
    assert headings[0] == "usagebox"
    assert [h.split()[1] for h in headings[1:] if len(h.split()) == 2] == top
    assert "usagebox prices import" in headings


def test_check_names_a_stale_page_and_the_command_and_exits_1(tmp_path, monkeypatch, capsys):
    for name, build in generate.PAGES.items():
        (tmp_path / name).write_text(build(), encoding="utf-8")
    (tmp_path / "cli.md").write_text("old\n", encoding="utf-8")
    monkeypatch.setattr(generate, "DOCS", tmp_path)
    assert generate.main(["--check"]) == 1
    assert capsys.readouterr().err == f"docs/cli.md is stale; regenerate it with: {REGENERATE}\n"
    assert (tmp_path / "cli.md").read_text(encoding="utf-8") == "old\n"


def test_check_passes_and_writes_nothing_when_pages_are_current(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(generate, "DOCS", tmp_path)
    assert generate.main([]) == 0
    assert capsys.readouterr().out == "wrote docs/schema.md\nwrote docs/cli.md\n"
    assert generate.main(["--check"]) == 0
    assert capsys.readouterr().err == ""


def test_generate_refuses_an_unknown_argument(capsys):
    assert generate.main(["--bogus"]) == 2
    assert capsys.readouterr().err == f"usage: {REGENERATE} [--check]\n"


def test_docs_index_lists_every_page():
    index = (DOCS / "README.md").read_text(encoding="utf-8")
    pages = sorted(p.name for p in DOCS.glob("*.md") if p.name != "README.md")
    assert [p for p in pages if f"({p})" not in index] == [], "add the page to docs/README.md"
    assert REGENERATE in index


def test_readme_points_at_the_schema_page_instead_of_a_dump():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("\n## Schema\n"):readme.index("\n## ", readme.index("\n## Schema\n") + 1)]
    assert "(docs/schema.md)" in section
    assert "CREATE TABLE" not in readme
