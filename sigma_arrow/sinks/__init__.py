"""Sinks: where match records go (JSONL, JSON, CSV, Parquet, Arrow IPC), behind one small interface.

``open_sink(path, format)`` picks one by ``format`` or by the file extension; ``None``/``-`` is stdout.
"""

from sigma_arrow.sinks.base import OUTPUT_FORMATS, Sink, format_for_path, open_sink

__all__ = ["OUTPUT_FORMATS", "Sink", "format_for_path", "open_sink"]
