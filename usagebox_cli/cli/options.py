"""Options shared by several commands, declared once."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

DbOpt = Annotated[
    Optional[str],
    typer.Option("--db", help="Database file [default: $USAGEBOX_DB, else ./usagebox.db].", show_default=False),
]
FormatOpt = Annotated[
    str,
    typer.Option("--format", "-f", help="Output format: table, json, csv or ndjson.", metavar="FORMAT"),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Shorthand for --format json.")]
