"""Which reader reads which input: ``expand_inputs`` (files, directories, globs, ``-``) and ``reader_for``."""

from __future__ import annotations

import glob
import os
from collections.abc import Callable, Iterable
from typing import Any

from compiler.errors import InputError
from sigma_arrow.errorlog import ErrorLog
from sigma_arrow.readers.arrow import ARROW_FILE_MAGIC, ARROW_STREAM_MAGIC, ArrowReader
from sigma_arrow.readers.base import Reader
from sigma_arrow.readers.evtx import EVTX_MAGIC, EvtxReader
from sigma_arrow.readers.inputs import STDIN, head_bytes, strip_compression
from sigma_arrow.readers.json import JsonReader
from sigma_arrow.readers.lines import LinesReader

#: ``--format`` values.
FORMATS = ("auto", "evtx", "jsonl", "json", "parquet", "arrow", "lines")

#: File extensions (after stripping a compression extension) → format.
EXTENSIONS = {
    ".evtx": "evtx",
    ".json": "json",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".arrow": "arrow",
    ".arrows": "arrow",
    ".feather": "arrow",
    ".ipc": "arrow",
    ".log": "lines",
    ".raw": "lines",
    ".txt": "lines",
}
#: Extensions a directory contributes only when named explicitly (a README.txt is no log).
EXPLICIT_ONLY = frozenset({".txt"})
PARQUET_MAGIC = b"PAR1"


def _parquet_reader(**options: Any) -> Reader:
    try:
        from sigma_arrow.readers.parquet import ParquetReader
    except ImportError as exc:  # the Parquet reader is optional in a partial install
        raise InputError(f"Parquet input needs sigma_arrow.readers.parquet: {exc}") from exc
    reader: Reader = ParquetReader(**options)
    return reader


_FACTORIES: dict[str, Callable[..., Reader]] = {
    "evtx": lambda **_: EvtxReader(),
    "json": lambda **_: JsonReader("auto"),
    "jsonl": lambda **_: JsonReader("ndjson"),
    "arrow": lambda **_: ArrowReader(),
    "parquet": _parquet_reader,
    "lines": lambda **_: LinesReader(),
}


def format_of_name(path: str) -> str | None:
    """Return the format a file name announces (``x.jsonl.gz`` → ``jsonl``), or None."""
    _, extension = os.path.splitext(strip_compression(path).lower())
    return EXTENSIONS.get(extension)


def sniff_format(path: str) -> str | None:
    """Return the format from the input's first bytes (decompressed), or None when unknown."""
    head = head_bytes(path, 64)
    if head.startswith(EVTX_MAGIC):
        return "evtx"
    if head.startswith(PARQUET_MAGIC):
        return "parquet"
    if head.startswith(ARROW_FILE_MAGIC) or head.startswith(ARROW_STREAM_MAGIC):
        return "arrow"
    if head.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] in (b"{", b"["):
        return "json"
    return None


def detect_format(path: str) -> str:
    """Return the format of an input: a Parquet directory, the file name, or else its first bytes."""
    if path != STDIN and os.path.isdir(path):
        return "parquet"
    if "://" in path:  # s3://, gs://, file:// ...: Parquet archives through pyarrow filesystems
        return format_of_name(path) or "parquet"
    by_name = format_of_name(path) if path != STDIN else None
    if by_name == "lines":  # a .log/.txt/.raw file may still hold JSON events
        return "json" if sniff_format(path) == "json" else "lines"
    if by_name is not None:
        return by_name
    sniffed = sniff_format(path)
    if sniffed is None:
        raise InputError(f"{path}: cannot tell the input format (use --format)")
    return sniffed


def reader_for(path: str, format: str = "auto", **options: Any) -> Reader:
    """Return the reader for one input; ``options`` go to the Parquet reader (``rules``...)."""
    if format not in FORMATS:
        raise InputError(f"unknown input format {format!r} (choose from {', '.join(FORMATS)})")
    name = detect_format(path) if format == "auto" else format
    return _FACTORIES[name](**options)


def _is_input_file(name: str) -> bool:
    """Whether a file name found in a directory names an input format (hidden files skipped)."""
    if os.path.basename(name).startswith("."):
        return False
    _, extension = os.path.splitext(strip_compression(name).lower())  # as ``format_of_name``
    return extension in EXTENSIONS and extension not in EXPLICIT_ONLY


def _expand_directory(directory: str) -> list[str]:
    found: list[str] = []
    for root, dirs, files in os.walk(directory, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(os.path.join(root, f) for f in sorted(files) if _is_input_file(f))
    if found and all(format_of_name(f) == "parquet" for f in found):
        return [directory]  # a Parquet dataset: the Parquet reader handles partitions and pruning
    return found


def expand_inputs(inputs: Iterable[str], errors: ErrorLog | None = None) -> list[str]:
    """Input paths: files as given, directories recursively, globs expanded, ``-`` for stdin.

    Directories contribute the files whose extension names a format (hidden ones skipped); a
    directory holding only Parquet files stays one input (a dataset). An input that does not exist
    is reported to ``errors`` (kind ``file``) and skipped, or raises InputError without ``errors``.
    """
    out: list[str] = []
    for item in inputs:
        if item == STDIN or "://" in item:  # URIs are resolved by the (Parquet) reader itself
            out.append(item)
            continue
        if os.path.isdir(item):
            out.extend(_expand_directory(item))
        elif os.path.exists(item):
            out.append(item)
        elif glob.has_magic(item):
            matches = sorted(glob.glob(item, recursive=True))
            expanded: list[str] = []
            for match in matches:
                if os.path.isdir(match):
                    expanded.extend(_expand_directory(match))
                elif os.path.isfile(match):
                    expanded.append(match)
            if not expanded:
                _missing(item, "no input matches this pattern", errors)
            out.extend(expanded)
        else:
            _missing(item, "no such file or directory", errors)
    return list(dict.fromkeys(out))


def _missing(item: str, message: str, errors: ErrorLog | None) -> None:
    if errors is None:
        raise InputError(f"{item}: {message}")
    errors.report(item, None, "file", message)
