"""Conventions every reader, the engine and every sink share.

Event batches: readers yield ``pa.RecordBatch`` whose columns are the flattened event fields plus two
reserved columns naming where each row came from. Match records: DESIGN.md §4.
"""

from __future__ import annotations

import pyarrow as pa

#: Reserved batch column: the file path, or ``topic:partition`` for Kafka (string).
SOURCE_COLUMN = "__source"
#: Reserved batch column: 0-based record position in its source, or the Kafka offset (int64).
INDEX_COLUMN = "__event_index"
RESERVED_COLUMNS = frozenset({SOURCE_COLUMN, INDEX_COLUMN})

#: Event fields tried in order for a match record's ``timestamp``.
TIMESTAMP_FIELDS = ("SystemTime", "@timestamp", "timestamp", "TimeCreated", "UtcTime", "EventTime")

#: Columns of a match record before the optional ``event`` struct.
MATCH_FIELDS: list[pa.Field] = [
    pa.field("rule_id", pa.string(), nullable=False),
    pa.field("rule_title", pa.string()),
    pa.field("rule_level", pa.string()),
    pa.field("rule_tags", pa.list_(pa.string())),
    pa.field("source", pa.string()),
    pa.field("event_index", pa.int64()),
    pa.field("timestamp", pa.string()),
]

LEVELS = ("informational", "low", "medium", "high", "critical")


def match_schema(event_type: pa.DataType | None = None) -> pa.Schema:
    """Build the match record schema; ``event`` (a struct) is present when ``event_type`` is given."""
    fields = list(MATCH_FIELDS)
    if event_type is not None:
        fields.append(pa.field("event", event_type))
    return pa.schema(fields)


def event_columns(schema: pa.Schema) -> list[str]:
    """List the event field columns of a batch schema (reserved columns excluded)."""
    return [name for name in schema.names if name not in RESERVED_COLUMNS]
