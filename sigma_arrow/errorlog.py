"""Bad input never stops a run or vanishes: every skipped record, file or rule is recorded here."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import IO

import orjson


@dataclass(frozen=True, slots=True)
class InputProblem:
    """One thing that could not be read: where it is (source + offset), what kind, and why."""

    source: str
    offset: int | None
    kind: str  # e.g. "json", "evtx-record", "evtx-chunk", "file", "parquet", "kafka-decode"
    message: str


@dataclass
class ErrorLog:
    """Counts problems by kind and, when given a stream, writes each one as a JSON line."""

    stream: IO[bytes] | None = None
    counts: Counter[str] = field(default_factory=Counter)
    examples: list[InputProblem] = field(default_factory=list)
    max_examples: int = 20
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, problem: InputProblem) -> None:
        """Record one problem (thread-safe)."""
        with self._lock:
            self.counts[problem.kind] += 1
            if len(self.examples) < self.max_examples:
                self.examples.append(problem)
            if self.stream is not None:
                self.stream.write(orjson.dumps(asdict(problem)) + b"\n")

    def report(self, source: str, offset: int | None, kind: str, message: str) -> None:
        """Shorthand for ``add(InputProblem(...))``."""
        self.add(InputProblem(source, offset, kind, message))

    @property
    def total(self) -> int:
        """How many problems were recorded."""
        return sum(self.counts.values())
