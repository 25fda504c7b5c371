"""What a Kafka job runs: topics, group, outputs, stop condition and client settings."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from compiler.errors import InputError

UntilKind = Literal["end", "count", "duration"]

#: Default messages per micro-batch in one process: the engine's cost per call is high, so
#: 262,144-event batches run ~15 % cheaper per event than 65,536 (measured, realistic events).
DEFAULT_MAX_BATCH = 262_144
#: ... and with worker processes, each evaluating its own batch: a worker's peak memory grows with its
#: batch (~0.5 GiB at 65,536 realistic events, ~0.8 GiB at 131,072, ~1.25 GiB at 262,144), and this
#: keeps a member with two workers at ~1.5 GiB.
WORKER_MAX_BATCH = 65_536

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)\s*$")
_SECONDS_PER_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True, slots=True)
class Until:
    """When a job stops: at the end offsets fixed at start, after N messages, or after a duration."""

    kind: UntilKind = "end"
    #: Message count (``count``) or seconds (``duration``); unused for ``end``.
    value: float = 0.0

    @classmethod
    def parse(cls, text: str) -> Until:
        """Parse ``end``, a message count (``10000``) or a duration (``500ms``, ``30s``, ``5m``, ``1h``)."""
        text = text.strip().lower()
        if text == "end":
            return cls("end")
        if text.isdigit():
            if int(text) <= 0:
                raise InputError(f"--until count must be positive, got {text}")
            return cls("count", int(text))
        found = _DURATION.match(text)
        if found is None or float(found.group(1)) <= 0:
            raise InputError(f"--until expects end, a message count or a duration like 30s/5m, got {text!r}")
        return cls("duration", float(found.group(1)) * _SECONDS_PER_UNIT[found.group(2)])

    def __str__(self) -> str:
        if self.kind == "end":
            return "end"
        if self.kind == "count":
            return str(int(self.value))
        return f"{self.value:g}s"


@dataclass(frozen=True)
class KafkaJobConfig:
    """One bounded, resumable run over Kafka topics (see sigma_arrow.kafka.job.run_kafka_job)."""

    bootstrap: str
    topics: tuple[str, ...]
    group: str
    output_topic: str | None = None
    output_file: str | None = None
    dlq_topic: str | None = None
    #: Largest number of messages decoded and evaluated together (one transaction); None:
    #: ``DEFAULT_MAX_BATCH`` in one process, ``WORKER_MAX_BATCH`` with worker processes.
    max_batch: int | None = None
    until: Until = field(default_factory=Until)
    #: librdkafka settings (``-X``); ``consumer.``/``producer.`` prefixes target one client only.
    client_config: Mapping[str, str] = field(default_factory=dict)
    include_event: bool = True
    min_level: str | None = None
    #: Fixed transactional.id; by default one is derived from the group and the assigned partitions.
    transactional_id: str | None = None
    #: How long one consume call waits for a batch to fill, in seconds.
    poll_timeout: float = 0.5
    #: Processes that decode and evaluate batches: 1 = this process; N > 1 = N spawned workers while
    #: this process consumes and commits; 0 = one per core (1 on a single core).
    workers: int = 1

    def __post_init__(self) -> None:
        if not self.topics:
            raise InputError("at least one topic is needed")
        if self.max_batch is not None and self.max_batch <= 0:
            raise InputError(f"--max-batch must be positive, got {self.max_batch}")
        if self.workers < 0:
            raise InputError(f"--workers must be 0 (one per core) or more, got {self.workers}")

    @property
    def worker_count(self) -> int:
        """Worker processes this job starts (1: it decodes and evaluates in its own process)."""
        return self.workers if self.workers > 0 else automatic_workers()

    @property
    def batch_limit(self) -> int:
        """Messages per micro-batch: ``max_batch``, or the default for one process or for workers."""
        if self.max_batch is not None:
            return self.max_batch
        return WORKER_MAX_BATCH if self.worker_count > 1 else DEFAULT_MAX_BATCH

    @property
    def prefetch_messages(self) -> int:
        """Messages librdkafka fetches ahead of the job (its ``queued.min.messages``).

        Its default (100,000) stops fetching at ~100k queued messages, which left consume() waiting
        on the broker for most of each big batch. One process evaluates one batch at a time: one
        batch ahead is enough (two measured no faster). With workers, the job's process also waits
        for the oldest batch while every worker is busy, and the broker should keep delivering
        then: as many batches as workers, plus two. Measured (2 workers, 65,536-message batches,
        1M realistic events): consume() waited 4.0-4.6 s per 1M at 100,000 and 1.9-2.1 s at
        300,000; 144-152k -> 170-179k events/s, +0.2 GiB in the job's process.
        """
        workers = self.worker_count
        ahead = self.batch_limit if workers <= 1 else self.batch_limit * (workers + 2)
        return min(10_000_000, max(100_000, ahead))

    @property
    def transactional(self) -> bool:
        """Whether outputs go to Kafka, so offsets are committed inside a Kafka transaction."""
        return self.output_topic is not None or self.dlq_topic is not None

    def consumer_config(self) -> dict[str, Any]:
        """Librdkafka consumer settings: manual commits, partition EOF events, quick group joins."""
        config: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap,
            "group.id": self.group,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": True,
            "isolation.level": "read_committed",
            # Tansu (and small clusters) join groups slowly with the 45 s default session timeout.
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 500,
            # Prefetch while batches are decoded and evaluated (``prefetch_messages``).
            "queued.min.messages": self.prefetch_messages,
            "queued.max.messages.kbytes": 1_048_576,
            "fetch.max.bytes": 104_857_600,
            "max.partition.fetch.bytes": 26_214_400,
            "fetch.wait.max.ms": 100,
        }
        config.update(_role_settings(self.client_config, "consumer"))
        return config

    def producer_config(self, transactional_id: str | None) -> dict[str, Any]:
        """Librdkafka producer settings (idempotent; transactional when an id is given)."""
        config: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap,
            "enable.idempotence": True,
            # Matches are produced in one burst per batch and flushed by the transaction commit:
            # long lingering makes fewer, fuller requests; lz4 halves the commit wait on
            # event-carrying match records (measured: 0.44 s -> 0.2 s per 56k matches).
            "linger.ms": 100,
            "compression.type": "lz4",
            "queue.buffering.max.messages": 1_000_000,
            "queue.buffering.max.kbytes": 2_097_151,
        }
        if transactional_id is not None:
            config["transactional.id"] = transactional_id
        config.update(_role_settings(self.client_config, "producer"))
        return config

    def derive_transactional_id(self, partitions: Iterable[tuple[str, int]]) -> str:
        """Return the transactional.id of an assignment (stable across restarts: reruns fence zombies)."""
        if self.transactional_id is not None:
            return self.transactional_id
        assigned = ",".join(f"{topic}:{partition}" for topic, partition in sorted(partitions))
        digest = hashlib.sha1(assigned.encode(), usedforsecurity=False).hexdigest()[:16]
        return f"sigma-arrow.{self.group}.{digest}"


def automatic_workers() -> int:
    """Worker processes for ``workers=0``: one per usable core, or none (1) on a single core."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return cores if cores >= 2 else 1


_ROLES = ("consumer.", "producer.")


def _role_settings(settings: Mapping[str, str], role: str) -> dict[str, str]:
    """``-X`` settings for one client: unprefixed keys apply to both, prefixed keys to their role."""
    chosen: dict[str, str] = {}
    for key, value in settings.items():
        if key.startswith(_ROLES):
            prefix, _, name = key.partition(".")
            if prefix == role:
                chosen[name] = value
        else:
            chosen[key] = value
    return chosen


def parse_client_settings(pairs: Iterable[str]) -> dict[str, str]:
    """Parse ``-X key=value`` pairs."""
    settings: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise InputError(f"-X expects key=value, got {pair!r}")
        settings[key.strip()] = value.strip()
    return settings
