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

FromOpt = Annotated[Optional[str], typer.Option("--from", help="Window start: RFC 3339, a date, or now.", show_default=False)]
ToOpt = Annotated[Optional[str], typer.Option("--to", help="Window end (exclusive): RFC 3339, a date, or now.", show_default=False)]
PeriodOpt = Annotated[Optional[str], typer.Option("--period", help="A calendar month, YYYY-MM.", show_default=False)]
LastOpt = Annotated[Optional[str], typer.Option("--last", help="The last N s/m/h/d/w, e.g. 10m, 24h, 30d.", show_default=False)]
TzOpt = Annotated[Optional[str], typer.Option("--tz", help="IANA zone for dates, --period and hour/day/month buckets.", show_default=False)]
GroupByOpt = Annotated[Optional[list[str]], typer.Option("--group-by", "-g", help="Group by a field, a dimension key, or hour/day/month; repeat for a cross-tab.", show_default=False)]
FilterOpt = Annotated[Optional[list[str]], typer.Option("--filter", help="KEY=VALUE[,VALUE...]; repeat for several keys.", show_default=False)]
SourceOpt = Annotated[str, typer.Option("--source", help="rollup (fast, current to the second) or raw (scan events).")]
PricesOpt = Annotated[Optional[str], typer.Option("--prices", help="Price book (TOML) to add cost.", metavar="FILE", show_default=False)]
FailOnUnpricedOpt = Annotated[bool, typer.Option("--fail-on-unpriced", help="Exit 1 when any quantity in the answer is unpriced (the document is still printed).")]
