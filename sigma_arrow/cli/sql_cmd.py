"""`sigma-arrow sql`: a DataFusion SQL session with the rules registered (sigma_arrow.sql)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import click

EXTENSION_FORMATS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".csv": "csv",
    ".parquet": "parquet",
    ".arrow": "arrow",
}

HELP = """\
Statements end with ';'. Commands: .tables  .schema NAME  .rules  .help  .quit
Functions: {p}_matches('table')  {p}_annotate('table')  {p}_rule_ids([names], [values])  table {p}_rules"""


@click.command(name="sql")
@click.option("-r", "--rules", "rule_paths", multiple=True, required=True, help="Rule file or directory.")
@click.option("-p", "--pipeline", "pipelines", multiple=True, help="pySigma pipeline (name or YAML).")
@click.option("--logsource-map", default="windows", show_default=True, help="Logsource map name or YAML.")
@click.option(
    "-t",
    "--table",
    "tables",
    multiple=True,
    metavar="NAME=PATH",
    help="Register PATH as table NAME (Parquet file/dir, .jsonl/.ndjson/.json, .evtx, .arrow).",
)
@click.option("-e", "--execute", "statements", help="SQL to run (';'-separated); else a prompt opens.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the last result here.")
@click.option("--prefix", default="sigma", show_default=True, help="Name prefix of the sigma functions.")
@click.option("--max-rows", default=200, show_default=True, help="Rows printed per result (0 = all).")
def sql(
    rule_paths: tuple[str, ...],
    pipelines: tuple[str, ...],
    logsource_map: str,
    tables: tuple[str, ...],
    statements: str | None,
    output: str | None,
    prefix: str,
    max_rows: int,
) -> None:
    """Query events and Sigma detections with SQL (DataFusion).

    \b
    Example:
      sigma-arrow sql -r rules/ -t events=logs.parquet -e "
        SELECT rule_level, event['Computer'] AS host, count(*) AS hits
        FROM sigma_matches('events') GROUP BY 1, 2 ORDER BY hits DESC"
    """  # noqa: D301 - click's \b paragraph marker must be a real backspace
    if output is not None and Path(output).suffix.lower() not in EXTENSION_FORMATS:
        raise click.UsageError(f"-o {output}: unknown extension (use {', '.join(EXTENSION_FORMATS)})")
    table_specs = [_parse_table(spec) for spec in tables]

    from compiler.errors import SigmaArrowError
    from sigma_arrow.errorlog import ErrorLog
    from sigma_arrow.sql import error_message, register, register_path

    session = _Session(prefix=prefix, max_rows=max_rows)
    try:
        from sigma_arrow.loader import load_rules

        ruleset = load_rules(list(rule_paths), pipelines=list(pipelines), logsource_map=logsource_map)
    except SigmaArrowError as exc:
        _fail(str(exc), code=2)
    if len(ruleset) == 0:
        _fail("no rule could be loaded" + (f" ({ruleset.errors[0]})" if ruleset.errors else ""), code=2)
    if ruleset.errors:
        _note(f"{len(ruleset.errors)} rule(s) not loaded (see `sigma-arrow rules check`)")

    errors = ErrorLog()
    try:
        for name, path in table_specs:
            register_path(session.ctx, name, path, errors=errors)
        register(session.ctx, ruleset, prefix=prefix)
    except Exception as exc:
        _fail(error_message(exc))
    if errors.total:
        kinds = ", ".join(f"{k}: {n}" for k, n in errors.counts.items())
        _note(f"{errors.total} input problem(s) skipped ({kinds})")

    if statements is not None:
        ok = session.run_script(statements, output)
        sys.exit(0 if ok else 1)
    if sys.stdin.isatty():
        session.repl()
        return
    ok = session.run_script(sys.stdin.read(), output)
    sys.exit(0 if ok else 1)


class _Session:
    """A SessionContext plus the printing and the prompt."""

    def __init__(self, *, prefix: str, max_rows: int) -> None:
        from datafusion import SessionConfig, SessionContext
        from rich.console import Console

        config = (
            SessionConfig()
            # Sigma field names are mixed case: `Computer`, `EventID` work without double quotes.
            .set("datafusion.sql_parser.enable_ident_normalization", "false")
            # Plain strings (not Utf8View) from Parquet: what the engine, sinks and printing expect.
            .set("datafusion.execution.parquet.schema_force_view_types", "false")
            # A single file is read in file order, so event_index is the row's position in the file.
            .set("datafusion.optimizer.repartition_file_scans", "false")
        )
        self.ctx = SessionContext(config)
        self.prefix = prefix
        self.max_rows = max_rows
        self.console = Console(soft_wrap=False, width=None if sys.stdout.isatty() else 200)
        self.err = Console(stderr=True)

    def run_script(self, text: str, output: str | None) -> bool:
        """Run every statement of ``text``; print each result (or write the last to ``output``)."""
        items = list(split_statements(text))
        if not items:
            _note("no SQL statement given")
            return False
        for position, statement in enumerate(items):
            last = position == len(items) - 1
            if not self.run(statement, output if last else None):
                return False
        return True

    def run(self, statement: str, output: str | None = None) -> bool:
        """Run one statement or dot-command; report errors as one line. False on error."""
        from sigma_arrow.sql import error_message

        if statement.startswith("."):
            return self.command(statement)
        try:
            frame = self.ctx.sql(statement)
            if output is not None:
                rows = write_result(frame, output)
                _note(f"{rows} row(s) written to {output}")
            else:
                self.show(frame.to_arrow_table())
        except Exception as exc:
            click.echo(f"error: {error_message(exc)}", err=True)  # one line, never wrapped
            return False
        return True

    def command(self, line: str) -> bool:
        """Dot-commands of the prompt."""
        word, _, argument = line.partition(" ")
        if word == ".tables":
            names = sorted(self.ctx.catalog().schema().names())
            self.console.print("\n".join(names), markup=False, highlight=False)
            return True
        if word == ".schema" and argument.strip():
            return self.run(f'DESCRIBE "{argument.strip()}"')
        if word == ".rules":
            return self.run(f"SELECT id, level, title FROM {self.prefix}_rules ORDER BY id")
        if word == ".help":
            self.console.print(HELP.format(p=self.prefix), markup=False, highlight=False)
            return True
        click.echo(f"error: unknown command {word} (try .help)", err=True)
        return False

    def show(self, table: Any) -> None:
        """Print an Arrow table as a rich table (at most ``max_rows`` rows)."""
        from rich.table import Table

        shown = table if not self.max_rows else table.slice(0, self.max_rows)
        view = Table(show_lines=False)
        for name in table.column_names:
            view.add_column(name, overflow="fold")
        for row in shown.to_pylist():
            view.add_row(*(_cell(v) for v in row.values()))
        self.console.print(view)
        more = table.num_rows - shown.num_rows
        suffix = f" ({more} more not shown; use -o FILE)" if more > 0 else ""
        click.echo(f"{table.num_rows} row(s){suffix}", err=True)

    def repl(self) -> None:
        """Interactive prompt: ';'-terminated statements and dot-commands."""
        with contextlib.suppress(ImportError):  # line editing and history for input()
            import readline  # noqa: F401
        self.err.print(HELP.format(p=self.prefix), markup=False, highlight=False)
        pending: list[str] = []
        while True:
            try:
                line = input("sigma> " if not pending else "   ...> ")
            except (EOFError, KeyboardInterrupt):
                self.err.print()
                return
            stripped = line.strip()
            if not pending and stripped.startswith("."):
                if stripped in (".quit", ".exit"):
                    return
                self.command(stripped)
                continue
            pending.append(line)
            text = "\n".join(pending)
            if not text.rstrip().endswith(";"):
                continue
            pending.clear()
            for statement in split_statements(text):
                self.run(statement)


def split_statements(text: str) -> Iterator[str]:
    """Split SQL text on ';' outside quotes and comments; dot-commands are whole lines."""
    current: list[str] = []
    quote: str | None = None
    i = 0
    while i < len(text):
        ch = text[i]
        if quote is not None:
            current.append(ch)
            if ch == quote:
                quote = None
        elif ch in ("'", '"'):
            quote = ch
            current.append(ch)
        elif text.startswith("--", i):
            end = text.find("\n", i)
            i = len(text) if end < 0 else end
            continue
        elif ch == "." and not "".join(current).strip() and text[i + 1 : i + 2].isalpha():
            end = text.find("\n", i)
            end = len(text) if end < 0 else end
            yield text[i:end].strip()
            i = end
            continue
        elif ch == ";":
            statement = "".join(current).strip()
            if statement:
                yield statement
            current = []
        else:
            current.append(ch)
        i += 1
    statement = "".join(current).strip()
    if statement:
        yield statement


def write_result(frame: Any, output: str) -> int:
    """Stream a DataFusion result into ``output`` (format from the extension); return the row count."""
    import pyarrow as pa

    kind = EXTENSION_FORMATS[Path(output).suffix.lower()]
    schema = frame.schema()
    rows = 0
    batches = (b.to_pyarrow() for b in frame.execute_stream())
    if kind == "parquet":
        import pyarrow.parquet as pq

        with pq.ParquetWriter(output, _plain(schema)) as writer:
            for batch in batches:
                writer.write_batch(batch.cast(_plain(schema)))
                rows += batch.num_rows
        return rows
    if kind == "arrow":
        with pa.OSFile(output, "wb") as sink, pa.ipc.new_file(sink, _plain(schema)) as ipc:
            for batch in batches:
                ipc.write_batch(batch.cast(_plain(schema)))
                rows += batch.num_rows
        return rows
    if kind == "csv":
        import pyarrow.csv as pacsv

        csv_schema = pa.schema([pa.field(f.name, _csv_type(f.type)) for f in schema])
        with pacsv.CSVWriter(output, csv_schema) as csv_writer:
            for batch in batches:
                csv_writer.write_batch(_csv_batch(batch, csv_schema))
                rows += batch.num_rows
        return rows
    with open(output, "wb") as stream:
        rows = _write_json(batches, stream, array=kind == "json")
    return rows


def _write_json(batches: Iterator[Any], stream: IO[bytes], *, array: bool) -> int:
    import orjson

    rows = 0
    if array:
        stream.write(b"[")
    for batch in batches:
        for record in batch.to_pylist():
            if array:
                stream.write(b",\n" if rows else b"\n")
            stream.write(orjson.dumps(record, default=str))
            if not array:
                stream.write(b"\n")
            rows += 1
    if array:
        stream.write(b"\n]\n")
    return rows


def _plain(schema: Any) -> Any:
    from sigma_arrow.sql import _plain_schema

    return _plain_schema(schema)


def _csv_type(t: Any) -> Any:
    import pyarrow as pa

    nested = pa.types.is_nested(t) or pa.types.is_string_view(t) or pa.types.is_binary_view(t)
    return pa.string() if nested else t


def _csv_batch(batch: Any, schema: Any) -> Any:
    """Nested values (lists, structs) become JSON text in CSV cells."""
    import orjson
    import pyarrow as pa

    columns = []
    for f, column in zip(schema, batch.columns, strict=True):
        if column.type == f.type:
            columns.append(column)
        elif pa.types.is_nested(column.type):
            values = column.to_pylist()
            columns.append(
                pa.array([None if v is None else orjson.dumps(v, default=str).decode() for v in values])
            )
        else:
            columns.append(column.cast(f.type))
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        import orjson

        if isinstance(value, dict):
            value = {k: v for k, v in value.items() if v is not None}
        return orjson.dumps(value, default=str).decode()
    return str(value)


def _parse_table(spec: str) -> tuple[str, str]:
    name, sep, path = spec.partition("=")
    if not sep or not name.strip() or not path.strip():
        raise click.UsageError(f"--table {spec!r}: expected NAME=PATH")
    if name.strip() != name.strip().lower():
        raise click.UsageError(f"--table {spec!r}: use a lowercase table name")
    return name.strip(), path.strip()


def _note(message: str) -> None:
    click.echo(message, err=True)


def _fail(message: str, code: int = 1) -> Any:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)
