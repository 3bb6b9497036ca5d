"""The only module that prints.

Commands hand it plain data.  Machines get exact numbers (``--format json``,
``csv``, ``ndjson``); people get Rich tables with thousands separators and
right-aligned numbers.  Colour appears only on a terminal and never with
``NO_COLOR`` (Rich honours both).  Errors go to stderr as one line.
"""

from __future__ import annotations

import csv
import io
import os
import sys
from decimal import Decimal
from typing import Any, Optional, Sequence

from usagebox_cli import exactjson
from usagebox_cli.quantity import exact_text

FORMATS = ("table", "json", "csv", "ndjson")


def _console(stderr: bool = False):
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    # Piped tables are not folded to 80 columns: they are as wide as their content.
    width = None if stream.isatty() or os.environ.get("COLUMNS") else 100_000
    return Console(stderr=stderr, highlight=False, soft_wrap=False, width=width)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, Decimal)) and not isinstance(value, bool)


def human_number(value: Any) -> str:
    """Exact digits with thousands separators: 18,412,900 and 1,234.5."""
    text = exact_text(value)
    sign = "-" if text.startswith("-") else ""
    whole, _, fraction = text.lstrip("-").partition(".")
    grouped = f"{int(whole):,}"
    return sign + grouped + ("." + fraction if fraction else "")


def short_instant(text: str) -> str:
    """A window edge for people: a bare date when it is midnight UTC."""
    return text[:10] if text.endswith("T00:00:00Z") else text


def cell_text(value: Any) -> str:
    if value is None:
        return ""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if is_number(value):
        return exact_text(value)
    if isinstance(value, (dict, list)):
        return exactjson.dumps(value)
    return str(value)


def document(doc: Any) -> None:
    """A JSON document on stdout."""
    _write(exactjson.dumps(doc, indent=2) + "\n")


def rows(
    records: Sequence[dict],
    columns: Sequence[str],
    fmt: str,
    *,
    title: Optional[str] = None,
    wrapper: Optional[dict] = None,
    row_key: str = "rows",
    caption: Optional[str] = None,
) -> None:
    """Records as a table, a JSON document (``wrapper`` plus the records under ``row_key``), CSV or NDJSON."""
    if fmt == "json":
        doc = dict(wrapper or {})
        doc[row_key] = list(records)
        document(doc)
    elif fmt == "ndjson":
        _write("".join(exactjson.dumps(record) + "\n" for record in records))
    elif fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        for record in records:
            writer.writerow([cell_text(record.get(column)) for column in columns])
        _write(buffer.getvalue())
    else:
        table(records, columns, title=title, caption=caption)


def table(records: Sequence[dict], columns: Sequence[str], *, title: Optional[str] = None, caption: Optional[str] = None, styles: Optional[dict] = None) -> None:
    from rich.table import Table

    numeric = {column for column in columns if any(is_number(r.get(column)) for r in records)}
    grid = Table(title=title, caption=caption, show_edge=True, header_style="bold")
    for column in columns:
        grid.add_column(column, justify="right" if column in numeric else "left", overflow="fold")
    for record in records:
        style = (styles or {}).get(id(record))
        grid.add_row(*[_human_cell(record.get(column)) for column in columns], style=style)
    _console().print(grid)


def _human_cell(value: Any) -> str:
    from rich.markup import escape

    if is_number(value):
        return human_number(value)
    if isinstance(value, list) and all(not isinstance(item, (dict, list)) for item in value):
        return escape(", ".join(cell_text(item) for item in value))
    return escape(cell_text(value))


def line(text: str) -> None:
    """A plain line on stdout."""
    _write(text + "\n")


def notice(text: str) -> None:
    """A line for people on stderr (progress notes, row caps): never mixed into data on stdout."""
    sys.stderr.write(text + "\n")


def error(message: str, hint: Optional[str] = None) -> None:
    text = f"Error: {message}"
    if hint:
        text += f" ({hint})"
    sys.stderr.write(text.replace("\n", " ") + "\n")


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def ingest_summary(summary: dict, fmt: str) -> None:
    if fmt == "json":
        document(summary)
        return
    parts = [f"{summary[key]:,} {key}" for key in ("accepted", "duplicates", "conflicts", "rejected", "skipped") if key in summary]
    prefix = "dry run, nothing committed: " if summary.get("dry_run") else ""
    line(prefix + ", ".join(parts))
    errors = summary.get("errors", [])
    for item in errors[:20]:
        event = f" [{item['event_id']}]" if item.get("event_id") else ""
        notice(f"{item['source']}:{item['line']}: {item['outcome']}{event}: {item['reason']}")
    hidden = (summary["rejected"] + summary["conflicts"]) - min(len(errors), 20)
    if hidden > 0:
        notice(f"... and {hidden:,} more; use --rejects FILE to keep them all, or --json")


def live(compute, columns: Sequence[str], seconds: float, title: str) -> dict:
    """Re-run ``compute`` every ``seconds`` into a live table until Ctrl-C; return the last document."""
    import time

    from rich.live import Live
    from rich.table import Table

    def build(doc: dict):
        grid = Table(title=f"{title} at {doc.get('at', '')}", caption=doc.get("currency"), header_style="bold")
        for column in columns:
            grid.add_column(column, justify="right" if any(is_number(r.get(column)) for r in doc["rows"]) else "left")
        for record in doc["rows"]:
            status = record.get("status")
            style = "bold red" if status == "hard" else "yellow" if status == "soft" else None
            grid.add_row(*[_human_cell(record.get(column)) for column in columns], style=style)
        return grid

    doc = compute()
    try:
        with Live(build(doc), console=_console(), auto_refresh=False) as view:
            while True:
                time.sleep(seconds)
                doc = compute()
                view.update(build(doc), refresh=True)
    except KeyboardInterrupt:
        pass
    return doc


class Progress:
    """A Rich progress bar on stderr, only when stderr is a terminal."""

    def __init__(self) -> None:
        self._progress = None
        self._started = False
        self._tasks: dict[str, Any] = {}
        if sys.stderr.isatty() and not os.environ.get("USAGEBOX_NO_PROGRESS"):
            from rich.progress import BarColumn, DownloadColumn, Progress as RichProgress, TextColumn, TimeRemainingColumn

            self._progress = RichProgress(
                TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
                console=_console(stderr=True), transient=True,
            )

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self._started:
            self._progress.stop()  # type: ignore[union-attr]
        return False

    def update(self, source, done: int) -> None:
        if self._progress is None:
            return
        if not self._started:
            # Rich refreshes from a thread; starting it only now means the
            # ingest has already forked its reader process (forking a process
            # that runs threads can deadlock the child).
            self._progress.start()
            self._started = True
        task = self._tasks.get(source.label)
        if task is None:
            task = self._tasks[source.label] = self._progress.add_task(source.label, total=source.total_bytes)
        self._progress.update(task, completed=done)


REPORT_COLUMNS = ("modelsUsed", "inputTokens", "outputTokens", "cacheCreationTokens", "cacheReadTokens", "totalTokens", "totalCost")
REPORT_HEADINGS = {"modelsUsed": "models", "inputTokens": "input", "outputTokens": "output",
                   "cacheCreationTokens": "cache create", "cacheReadTokens": "cache read",
                   "totalTokens": "total", "totalCost": "cost", "unpricedTokens": "unpriced"}
BAR_WIDTH = 20


def report(doc: dict, kind: str, fmt: str, breakdown: bool = False) -> None:
    """``usagebox report``: the ccusage-shaped document, or a table with a bar per row."""
    if fmt == "json":
        document(doc)
        return
    rows_key = next(key for key in doc if key not in ("totals", "currency"))
    label = {"daily": "date", "weekly": "week", "monthly": "month", "session": "sessionId"}[kind]
    priced = "unpricedTokens" in doc["totals"]
    columns = [label] + list(REPORT_COLUMNS[: -1 if not priced else None]) + (["unpricedTokens"] if priced else [])
    peak = max((row["totalTokens"] for row in doc[rows_key]), default=0)
    records = []
    for row in doc[rows_key]:
        records.append(dict(row, bar="█" * (round(row["totalTokens"] * BAR_WIDTH / peak) if peak else 0)))
        if breakdown:
            for part in row["modelBreakdowns"]:
                total = sum(part[name] for name in ("inputTokens", "outputTokens", "cacheCreationTokens", "cacheReadTokens"))
                records.append({label: "  " + part["modelName"], **part, "totalTokens": total, "totalCost": part["cost"]})
    records.append({label: "total", **doc["totals"]})
    if fmt in ("csv", "ndjson"):
        rows([{k: v for k, v in r.items() if k not in ("bar", "modelBreakdowns")} for r in records], columns, fmt)
        return
    headed = [{REPORT_HEADINGS.get(key, key): value for key, value in record.items()} for record in records]
    names = [REPORT_HEADINGS.get(column, column) for column in columns] + ["bar"]
    table(headed, names, title=f"Agent usage, {kind}", caption=doc.get("currency"))

