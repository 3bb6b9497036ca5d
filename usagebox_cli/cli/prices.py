"""Price book commands: ``prices import`` builds a book from a published price table."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from usagebox_cli.cli.app import app

prices_app = typer.Typer(
    help="Build price books from published price tables.\n\nExample: usagebox prices import litellm model_prices_and_context_window.json -o prices.toml",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(prices_app, name="prices")

SOURCES = ("litellm",)


@prices_app.command("import")
def import_(
    source: Annotated[str, typer.Argument(help="The table's format: litellm.", metavar="SOURCE", show_default=False)],
    file: Annotated[str, typer.Argument(help="The table, e.g. LiteLLM's model_prices_and_context_window.json.", metavar="FILE", show_default=False)],
    model: Annotated[Optional[list[str]], typer.Option("--model", help="Import this model (a glob such as 'claude-*' works); repeat for several [default: every chat model].", metavar="PATTERN", show_default=False)] = None,
    meter: Annotated[str, typer.Option("--meter", help="The meter_id the rules price.", metavar="ID")] = "claude_code",
    output: Annotated[Optional[str], typer.Option("--output", "-o", help="Write the book to this new file [default: stdout]; with --into, -o BOOK (the same file) writes the merged book back.", metavar="BOOK", show_default=False)] = None,
    into: Annotated[Optional[str], typer.Option("--into", help="Merge with this existing book (close its changed rules at --effective-from, open the new ones) and print the merged book; BOOK itself changes only with -o BOOK.", metavar="BOOK", show_default=False)] = None,
    effective_from: Annotated[Optional[str], typer.Option("--effective-from", help="With --into: when the new prices start (a date or RFC 3339 time, UTC).", metavar="DATE", show_default=False)] = None,
) -> None:
    """Turn a price table into a price book: one rule per model and token type, per million tokens.

    Exit 1 when a --model the table does not price was asked for (the book is
    still written for the others).

    Example: usagebox prices import litellm examples/litellm_prices.json --model 'claude-*' -o prices.toml
    """
    from usagebox_cli import render
    from usagebox_cli.errors import CannotRun
    from usagebox_cli.ops.litellm_import import import_litellm, missing_error, models_text, write_book

    if source not in SOURCES:
        raise CannotRun(f"unknown price table {source!r}; usagebox imports: {', '.join(SOURCES)}")
    result = import_litellm(file, list(model or []), meter, into, effective_from)
    if output is None:
        render.line(result.text.rstrip("\n"))
    else:
        write_book(result.text, output, into)
        if into is None:
            render.notice(f"wrote {render.counted(result.opened, 'rule', 'rules')} for {models_text(len(result.models))} to {output}")
        else:
            render.notice(f"wrote {output}: {render.counted(result.opened, 'rule', 'rules')} opened from {effective_from}, {result.closed} closed, "
                          f"{result.continued} unchanged, {result.replaced} repriced")
    if result.missing:
        raise missing_error(file, result)
