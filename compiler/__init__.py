"""Pure Sigma rule compiler: rules -> IR -> passes -> backend expressions (no I/O).

Nothing in this package outside ``compiler.backends`` may import an engine (pyarrow, polars,
datafusion) or do file/network I/O; ``tests/test_architecture.py`` enforces it.
"""
