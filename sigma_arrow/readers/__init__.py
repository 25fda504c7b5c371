"""Readers: turn inputs (EVTX, JSON, Parquet, Arrow IPC, ...) into flattened event RecordBatches.

Every reader follows ``sigma_arrow.readers.base.Reader``; ``sigma_arrow.readers.registry`` picks one
per input by ``--format`` or by file name/contents.
"""
