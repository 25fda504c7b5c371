"""Worker process for parallel cold rule parsing: pickled (docs, pipeline sources) in, ParsedDocuments out.

Run as ``python -m sigma_arrow._parse_worker``; a plain subprocess (not multiprocessing) so that the
caller's ``__main__`` is never re-imported.
"""

from __future__ import annotations

import pickle
import sys


def main() -> None:
    """Read the job from stdin, write the pickled result list to stdout."""
    docs, pipeline_sources = pickle.load(sys.stdin.buffer)
    from sigma_arrow.loader import parse_chunk

    try:
        payload: object = ("ok", parse_chunk(docs, pipeline_sources))
    except Exception as exc:  # reported by the parent, which then parses the chunk itself
        payload = ("error", f"{type(exc).__name__}: {exc}")
    pickle.dump(payload, sys.stdout.buffer, protocol=pickle.HIGHEST_PROTOCOL)
    sys.stdout.buffer.flush()


if __name__ == "__main__":
    main()
