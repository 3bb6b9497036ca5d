"""The only module that prints.

Commands hand it plain data.  Machines get exact numbers (``--format json``,
``csv``, ``ndjson``); people get Rich tables with thousands separators and
right-aligned numbers.  Colour appears only on a terminal and never with
``NO_COLOR`` (Rich honours both).  Errors go to stderr as one line.
"""

from __future__ import annotations

import os
import re
import sys
from decimal import Decimal
from typing import Any, Iterable, Optional, Sequence

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


_CSV_QUOTED = re.compile(r'[",\r\n]')


def csv_row(values: Sequence[Any]) -> str:
    """One CSV line: quoted where the csv module would quote, and a null apart from an empty string.

    ``csv.writer`` writes ``None`` and ``""`` both as an empty cell, so a
    null key and a ``""`` key look the same; here null is the empty cell and
    ``""`` is written quoted, which any CSV reader reads back as empty text.
    (A row of one null cell is still ``""``: an empty line would be skipped.)
    """
    values = list(values)
    cells = []
    for value in values:
        text = cell_text(value)
        if (value is not None and text == "") or _CSV_QUOTED.search(text) or (len(values) == 1 and text == ""):
            text = '"' + text.replace('"', '""') + '"'
        cells.append(text)
    return ",".join(cells) + "\n"


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
        _write(csv_row(columns) + "".join(csv_row([record.get(column) for column in columns]) for record in records))
    else:
        table(records, columns, title=title, caption=caption)


def flatten(record: dict, prefix: str = "") -> dict:
    """Nested objects as dotted keys (``frozen.quantity``); lists stay values."""
    flat: dict = {}
    for key, value in record.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def report(doc: dict, fmt: str, records: Sequence[dict], columns: Sequence[str], *, title: str) -> None:
    """A command's one JSON document in any format.

    JSON is the document.  CSV and NDJSON are its main rows (``records``,
    flattened to ``columns``).  A table shows the document's fields, then one
    table per list in it, so a person sees everything JSON holds.
    """
    if fmt == "json":
        document(doc)
        return
    if fmt in ("csv", "ndjson"):
        flat = [flatten(record) for record in records]
        rows([{column: record.get(column) for column in columns} for record in flat], columns, fmt)
        return
    fields = flatten(doc)
    scalars = [{"field": key, "value": value} for key, value in fields.items()
               if not (isinstance(value, list) and any(isinstance(item, dict) for item in value))]
    table(scalars, ("field", "value"), title=title)
    for key, value in fields.items():
        if isinstance(value, list) and any(isinstance(item, dict) for item in value):
            items = [flatten(item) for item in value]
            keys = list(dict.fromkeys(k for item in items for k in item))
            table(items, keys, title=key)


def stream_rows(columns: Sequence[str], rows: Iterable[Sequence[Any]], fmt: str, row_key: str = "rows") -> None:
    """Rows as JSON (``{row_key: [...]}``, the text ``rows`` would print), NDJSON or CSV, one at a time.

    Nothing is held but the current row, so memory stays flat however long
    the answer.  Nothing is written before the first row arrives, so an error
    on the way to it leaves stdout empty.
    """
    out = sys.stdout
    started = False
    if fmt == "csv":
        for row in rows:
            if not started:
                out.write(csv_row(columns))
                started = True
            out.write(csv_row(row))
        if not started:
            out.write(csv_row(columns))
    elif fmt == "ndjson":
        as_object = exactjson.object_writer(columns)
        for row in rows:
            out.write(as_object(row) + "\n")
    else:
        key = exactjson.dumps(row_key)
        as_item = exactjson.object_writer(columns, indent=2, depth=2)  # the text of document()'s rows list, row by row
        for row in rows:
            out.write(("{\n  " + key + ": [\n    ") if not started else ",\n    ")
            started = True
            out.write(as_item(row))
        out.write("\n  ]\n}\n" if started else "{\n  " + key + ": []\n}\n")
    out.flush()


def table(records: Sequence[dict], columns: Sequence[str], *, title: Optional[str] = None, caption: Optional[str] = None, styles: Optional[dict] = None) -> None:
    console = _console()
    grid, needed = _grid(records, columns, title=title, caption=caption, styles=styles, width=console.width)
    _print_fitted(console, grid, needed)


def _grid(records: Sequence[dict], columns: Sequence[str], *, title: Optional[str], caption: Optional[str],
          styles: Optional[dict] = None, width: int = 100_000):
    """A Rich table laid out so that only text gives way; returns it and the least width it needs.

    A number, an id, a timestamp or a hash is never folded or elided: its
    column is as wide as its widest cell.  When the table is wider than
    ``width``, headers break at their underscores (``frozen_event_count``
    over three lines) and the other text columns wrap
    (at spaces where they have them).
    """
    from rich.cells import cell_len
    from rich.table import Table

    cells = [[_human_cell(record.get(column)) for column in columns] for record in records]
    specs = []
    for index, column in enumerate(columns):
        values = [record.get(column) for record in records if record.get(column) is not None]
        numeric = bool(values) and all(is_number(value) for value in values)
        texts = [row[index] for row in cells]
        wordy = not numeric and not _is_token_column(column)
        if wordy:  # wraps at spaces, and folds a long word at 12 cells at the least
            body = min(12, max([cell_len(word) for text in texts for word in text.split()] or [1]))
        else:
            body = max([cell_len(text) for text in texts] or [1])
        specs.append((column, numeric, wordy, body))
    natural = 1 + sum(max(body, cell_len(column)) + 3 for column, _, _, body in specs)
    fold_headers = natural > width
    # As wide as its title and caption (when there is room), so neither wraps inside a timestamp.
    label = max(cell_len(title or ""), cell_len(caption or ""))
    grid = Table(title=title, caption=caption, show_edge=True, header_style="bold", min_width=min(label, width) or None)
    needed = 1
    for column, numeric, wordy, body in specs:
        header = _fold_header(column, body) if fold_headers else column
        least = max([body] + [cell_len(part) for part in header.split("\n")])
        needed += least + 3  # one space of padding each side and a border
        grid.add_column(header, justify="right" if numeric else "left", no_wrap=not wordy, overflow="fold",
                        min_width=None if wordy else least)
    for record, row in zip(records, cells):
        grid.add_row(*row, style=(styles or {}).get(id(record)))
    return grid, needed


_TOKEN_COLUMNS = {"timestamp", "sha256", "period", "hour", "day", "month", "from", "to", "watermark", "line"}


def _is_token_column(name: str) -> bool:
    """Ids, instants and hashes: a person copies them whole, so they never fold."""
    return name in _TOKEN_COLUMNS or name.endswith(("_id", "_at"))


def _fold_header(name: str, width: int) -> str:
    """``adjustments_quantity`` as lines of at most ``width`` cells, broken after underscores."""
    lines: list[str] = []
    for piece in name.replace("_", "_\0").split("\0"):
        if lines and len(lines[-1]) + len(piece) <= width:
            lines[-1] += piece
        else:
            lines.append(piece)
    return "\n".join(lines)


def _print_fitted(console, grid, needed: int) -> None:
    """Print ``grid``; when it cannot fit the terminal, print it whole and say so rather than cut a token."""
    if needed > console.width:
        notice(f"this table needs {needed} columns and the terminal has {console.width}; "
               "numbers, ids and timestamps are not broken, so lines run over: widen the terminal or use --format csv")
        console.width = needed
    console.print(grid)


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


# Whether this run wrote an Error: line: the boundary adds "interrupted" after Ctrl-C only if nothing said more.
wrote_error = False


def error(message: str, hint: Optional[str] = None) -> None:
    global wrote_error
    wrote_error = True
    text = f"Error: {message}"
    if hint:
        text += f" ({hint})"
    sys.stderr.write(text.replace("\n", " ") + "\n")


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def counted(count: int, singular: str, plural: str) -> str:
    return f"{count:,} {singular if count == 1 else plural}"


def _outcomes(counts: dict) -> str:
    return ", ".join([
        f"{counts['accepted']:,} accepted", counted(counts["duplicates"], "duplicate", "duplicates"),
        counted(counts["conflicts"], "conflict", "conflicts"), f"{counts['rejected']:,} rejected",
    ] + ([f"{counts['skipped']:,} skipped"] if "skipped" in counts else []))


def interrupted_ingest(committed: Optional[dict]) -> None:
    """Ctrl-C during an ingest: what its earlier commits kept (``None``: a dry run, nothing kept)."""
    if committed is None:
        error("interrupted; dry run, nothing committed")
    elif not any(committed.values()):
        error("interrupted before the first commit; nothing was committed", "running the same command again is safe")
    else:
        error(f"interrupted; committed before it: {_outcomes(committed)}",
              "the rest was not stored; running the same command again is safe")


def ingest_summary(summary: dict, fmt: str) -> None:
    if fmt == "json":
        document(summary)
        return
    prefix = "dry run, nothing committed: " if summary.get("dry_run") else ""
    line(prefix + _outcomes(summary))
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

    console = _console()

    def build(doc: dict):
        return _grid(doc["rows"], columns, title=f"{title} at {doc.get('at', '')}", caption=doc.get("currency"),
                     styles=status_styles(doc["rows"]), width=console.width)

    doc = compute()
    grid, needed = build(doc)
    if needed > console.width:
        notice(f"this table needs {needed} columns and the terminal has {console.width}; "
               "numbers, ids and timestamps are not broken, so lines run over: widen the terminal or use --format csv")
        console.width = needed
    try:
        with Live(grid, console=console, auto_refresh=False) as view:
            while True:
                time.sleep(seconds)
                doc = compute()
                view.update(build(doc)[0], refresh=True)
    except KeyboardInterrupt:
        pass
    return doc


class Progress:
    """A Rich progress bar on stderr, only when stderr is a terminal; ``unit`` is ``bytes`` or ``rows``."""

    def __init__(self, unit: str = "bytes") -> None:
        self._progress = None
        self._started = False
        self._tasks: dict[str, Any] = {}
        if sys.stderr.isatty() and not os.environ.get("USAGEBOX_NO_PROGRESS"):
            from rich.progress import (BarColumn, DownloadColumn, MofNCompleteColumn, Progress as RichProgress,
                                       TextColumn, TimeRemainingColumn)

            self._progress = RichProgress(
                TextColumn("{task.description}"), BarColumn(), DownloadColumn() if unit == "bytes" else MofNCompleteColumn(),
                TimeRemainingColumn(), console=_console(stderr=True), transient=True,
            )

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self._started:
            self._progress.stop()  # type: ignore[union-attr]
        return False

    def update(self, source, done: int) -> None:
        """An ingest source read up to byte ``done``."""
        self.step(source.label, source.total_bytes, done)

    def step(self, label: str, total: Optional[int], done: int) -> None:
        """``done`` of ``total`` (None: unknown) on the bar named ``label``."""
        if self._progress is None:
            return
        if not self._started:
            # Rich refreshes from a thread; starting it only now means the
            # ingest has already forked its reader process (forking a process
            # that runs threads can deadlock the child).
            self._progress.start()
            self._started = True
        task = self._tasks.get(label)
        if task is None:
            task = self._tasks[label] = self._progress.add_task(label, total=total)
        self._progress.update(task, completed=done)


def copy_summary(doc: dict, fmt: str) -> None:
    """``usagebox copy``: the document, or for people the rows copied per table and verify's verdict on DST."""
    if fmt == "json":
        document(doc)
        return
    line(f"copied {doc['src']} -> {doc['dst']}")
    records = [{"table": table, "rows": count} for table, count in doc["copied"].items()]
    verdict = "ok" if doc["ok"] else "DRIFT, see the lines below"
    table(records, ("table", "rows"), caption=f"verify on DST: {verdict}")


REPORT_COLUMNS = ("modelsUsed", "inputTokens", "outputTokens", "cacheCreationTokens", "cacheReadTokens", "totalTokens", "totalCost")
REPORT_HEADINGS = {"modelsUsed": "models", "inputTokens": "input", "outputTokens": "output",
                   "cacheCreationTokens": "cache create", "cacheReadTokens": "cache read",
                   "totalTokens": "total", "totalCost": "cost", "unpricedTokens": "unpriced"}
BAR_WIDTH = 20


def bar(value, peak) -> str:
    """A bar of at most BAR_WIDTH blocks for ``value`` against the largest positive ``peak``.

    A net-negative row (corrections exceeding usage) gets no bar; so does every row when nothing is
    positive.  (Scaling by a negative peak once made a bar of trillions of characters.)
    """
    if peak <= 0 or value <= 0:
        return ""
    return "█" * min(BAR_WIDTH, round(value * BAR_WIDTH / peak))


def usage_report(doc: dict, kind: str, fmt: str, breakdown: bool = False) -> None:
    """``usagebox report``: the ccusage-shaped document, or a table with a bar per row."""
    if fmt == "json":
        document(doc)
        return
    if kind == "blocks":
        _blocks_report(doc, fmt, breakdown)
        return
    rows_key = next(key for key in doc if key not in ("totals", "currency"))
    label = {"daily": "date", "weekly": "week", "monthly": "month", "session": "sessionId"}[kind]
    priced = "unpricedTokens" in doc["totals"]
    columns = [label] + list(REPORT_COLUMNS[: -1 if not priced else None]) + (["unpricedTokens"] if priced else [])
    peak = max((row["totalTokens"] for row in doc[rows_key]), default=0)
    records = []
    for row in doc[rows_key]:
        records.append(dict(row, bar=bar(row["totalTokens"], peak)))
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


# -- the documents of the reading and money commands, as tables ------------------------------------

STATUS_STYLES = {"hard": "bold red", "soft": "yellow"}


def status_styles(rows: Sequence[dict]) -> dict:
    """A budget row's style by its status (hard red, soft yellow), for one table or a live one."""
    return {id(row): STATUS_STYLES.get(row.get("status")) for row in rows}


def _span_caption(doc: dict) -> str:
    return f"{short_instant(doc['from'])} → {short_instant(doc['to'])}"


def usage(doc: dict, group_by: list[str], metric_names: list[str], fmt: str, title: str) -> None:
    """``usage`` and ``query``: the groups, with money columns when the document has them."""
    money = [name for name in ("cost", "unpriced_sum", "compare_cost", "compare_unpriced_sum", "cost_change")
             if any(name in group for group in doc["groups"])]
    columns = list(group_by) + list(metric_names) + money
    if fmt == "json":
        document(doc)
    elif fmt in ("csv", "ndjson"):
        rows(doc["groups"], columns, fmt)
    else:
        caption = f"{_span_caption(doc)} ({doc['source']}"
        caption += f", {doc['currency']})" if doc.get("currency") else ")"
        table(doc["groups"], columns, title=title, caption=caption)


def budgets(doc: dict, columns: Sequence[str], fmt: str) -> None:
    if fmt == "table":
        table(doc["rows"], columns, title=f"Budgets at {doc['at']}", caption=doc["currency"], styles=status_styles(doc["rows"]))
    else:
        rows(doc["rows"], columns, fmt, wrapper={"currency": doc["currency"], "at": doc["at"]})


def margin(doc: dict, by: str, columns: Sequence[str], fmt: str) -> None:
    if fmt == "table":
        styles = {id(r): "bold red" for r in doc["rows"] if r["margin"] < 0}
        total = dict(doc["total"], **{by: "TOTAL"})
        table(doc["rows"] + [total], columns, title=f"Margin by {by}",
              caption=f"{_span_caption(doc)} · {doc['currency']} · negative margins in red", styles=styles)
    elif fmt == "json":
        document(doc)
    else:
        rows(doc["rows"], columns, fmt)


def reconciliation(doc: dict, columns: Sequence[str], fmt: str, corrections_out: Optional[str]) -> None:
    if fmt == "table":
        styles = {id(r): "yellow" for r in doc["rows"] if r["gap"] != 0}
        total = dict(doc["total"], **{doc["by"][0]: "TOTAL"})
        table(doc["rows"] + [total], columns, title="Reconciliation (gap = vendor - metered)",
              caption=f"{_span_caption(doc)} · verify: {'ok' if doc['verify']['ok'] else 'DRIFT'}", styles=styles)
        for item in doc["rounded"]:
            named = ", ".join(f"{k}={v}" for k, v in item.items() if k in doc["by"])
            notice(f"note: vendor quantity for {named} is {item['exact']}, rounded half-even to 6 decimals: {item['vendor']}")
        if corrections_out:
            notice(f"wrote {doc['corrections_written']} Correction events to {corrections_out}; review, then ingest")
    elif fmt == "json":
        document(doc)
    else:
        rows(doc["rows"], columns, fmt)

BLOCK_CSV_COLUMNS = ("id", "startTime", "endTime", "actualEndTime", "isActive", "isGap", "entries",
                     "tokenCounts.inputTokens", "tokenCounts.outputTokens", "tokenCounts.cacheCreationInputTokens",
                     "tokenCounts.cacheReadInputTokens", "totalTokens", "costUSD", "models",
                     "burnRate.tokensPerMinute", "burnRate.tokensPerMinuteForIndicator", "burnRate.costPerHour",
                     "projection.totalTokens", "projection.totalCost", "projection.remainingMinutes")


def _blocks_report(doc: dict, fmt: str, breakdown: bool) -> None:
    """``report blocks`` for people: a row per block or gap, the active block's burn rate and projection under it."""
    priced = "unpricedTokens" in doc["totals"]
    if fmt in ("csv", "ndjson"):
        columns = list(BLOCK_CSV_COLUMNS) + (["unpricedTokens"] if priced else [])
        flat = [flatten({k: v for k, v in block.items() if k != "modelBreakdowns"}) for block in doc["blocks"]]
        rows([{column: record.get(column) for column in columns} for record in flat], columns, fmt)
        return
    columns = ["block", "status"] + list(REPORT_COLUMNS[: -1 if not priced else None]) + (["unpricedTokens"] if priced else [])
    peak = max((block["totalTokens"] for block in doc["blocks"]), default=0)
    records = []
    for block in doc["blocks"]:
        counts = {name: block["tokenCounts"][name.replace("cacheCreation", "cacheCreationInput").replace("cacheRead", "cacheReadInput")]
                  for name in REPORT_COLUMNS[1:5]}
        record = {"block": _block_time(block["startTime"]), "status": _block_status(block), "modelsUsed": block["models"],
                  **counts, "totalTokens": block["totalTokens"], "totalCost": block["costUSD"],
                  "unpricedTokens": block.get("unpricedTokens"),
                  "bar": "" if block["isGap"] else bar(block["totalTokens"], peak)}
        if block["isGap"]:
            record = {"block": record["block"], "status": record["status"]}
        records.append(record)
        if breakdown:
            for part in block["modelBreakdowns"]:
                total = sum(part[name] for name in REPORT_COLUMNS[1:5])
                records.append({"block": "  " + part["modelName"], **part, "totalTokens": total, "totalCost": part["cost"]})
        burn, projection = block["burnRate"], block["projection"]
        if burn is not None:
            rate = f"{human_number(burn['tokensPerMinute'])} tokens/min"
            if priced:
                rate += f", {human_number(burn['costPerHour'])} {doc['currency']}/hour"
            records.append({"block": "  burn rate", "status": rate})
            records.append({"block": "  projected", "status": f"at {_block_time(block['endTime'])}, {projection['remainingMinutes']} min left",
                            "totalTokens": projection["totalTokens"], "totalCost": projection["totalCost"]})
    records.append({"block": "total", **doc["totals"]})
    headed = [{REPORT_HEADINGS.get(key, key): value for key, value in record.items()} for record in records]
    names = [REPORT_HEADINGS.get(column, column) for column in columns] + ["bar"]
    table(headed, names, title="Agent usage, 5-hour blocks (UTC)", caption=doc.get("currency"))


def _block_time(text: str) -> str:
    """``2026-11-25T11:00:00.000Z`` as ``2026-11-25 11:00Z``: blocks are hour-exact."""
    return f"{text[:10]} {text[11:16]}Z"


def _block_status(block: dict) -> str:
    from usagebox_cli.timefmt import parse_rfc3339

    if block["isGap"]:
        return f"gap until {_block_time(block['endTime'])}"
    minutes = (parse_rfc3339(block["actualEndTime"]) - parse_rfc3339(block["startTime"])) // 60_000_000
    span = f"{minutes // 60}h {minutes % 60}m"
    return f"ACTIVE, {span} so far" if block["isActive"] else span
