"""Flattened EVTX events for the engine bench and corpus tests (standalone: evtx + sigma_arrow.flatten)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pyarrow as pa
from evtx import PyEvtxParser

from sigma_arrow.flatten import flatten_record


def evtx_rows(paths: list[Path]) -> list[dict[str, object]]:
    """Every record of the given EVTX files, flattened (Event.System.* / EventData.* at top level)."""
    rows: list[dict[str, object]] = []
    for path in paths:
        try:
            for record in PyEvtxParser(str(path)).records_json():
                try:
                    rows.append(flatten_record(orjson.loads(record["data"])))
                except Exception:  # a broken record: skip it (bench/test data only)
                    continue
        except Exception:
            continue
    return rows


def rows_to_table(rows: list[dict[str, object]]) -> pa.Table:
    """A string-typed table with the union of the rows' keys as columns."""
    names: dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(row))
    columns = {
        name: pa.array([None if (v := row.get(name)) is None else str(v) for row in rows], type=pa.string())
        for name in names
    }
    return pa.table(columns)
