"""The Kafka job: consume topics as a bounded batch, evaluate rules, write matches, commit offsets.

Guarantees (README "Kafka"):
- Offsets are committed only after the batch's outputs are durable: inside the same Kafka transaction
  as the match and DLQ messages (``send_offsets_to_transaction``) when writing to Kafka, after an
  fsync of the output file otherwise. A crash therefore never loses a match; it may repeat the last
  uncommitted batch (at-least-once for files; exactly-once for ``read_committed`` readers of the
  output topic on brokers that honour transactions).
- ``--until end`` fixes each partition's end offset when the job first fetches from it, so the job
  stops even while producers keep writing; the next run resumes from the committed offsets.
- A message that does not decode goes to the DLQ topic (original key, value and headers, plus the
  error and its original coordinates as headers) or, without one, to the error log.
- With worker processes (``KafkaJobConfig.workers``; sigma_arrow.kafka.parallel) batches are
  decoded and evaluated while later ones are fetched, but they complete (outputs written, offsets
  committed) strictly in order, so the guarantees above hold unchanged. A worker that dies stops the
  job before anything after the last completed batch is written or committed.
"""

from __future__ import annotations

import logging
import threading
import time
from array import array
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from compiler.errors import InputError, SigmaArrowError
from sigma_arrow.errorlog import ErrorLog
from sigma_arrow.gc_pause import gc_paused
from sigma_arrow.kafka.config import KafkaJobConfig
from sigma_arrow.kafka.output import DurableJsonl
from sigma_arrow.kafka.parallel import (
    BatchOutcome,
    EvaluateOptions,
    Evaluator,
    InlineEvaluator,
    MatchEngine,
    Pending,
    WorkerEvaluator,
    WorkerFailure,
)

#: Error kind recorded in the error log for undecodable messages (when there is no DLQ topic).
DECODE_ERROR_KIND = "kafka-decode"
#: Headers added to a DLQ message.
DLQ_HEADERS = ("sigma-arrow.error", "sigma-arrow.topic", "sigma-arrow.partition", "sigma-arrow.offset")
_TIMEOUT = 30.0
_MAX_TRANSACTION_RETRIES = 3
_BROKERS_DOWN_LIMIT = 30.0
#: Longest a batch keeps filling past the poll timeout while messages still arrive, in seconds.
_FILL_SECONDS = 5.0
_NOT_COMMITTED = "; nothing after the last completed batch was committed: run the job again to redo it"
#: Wait of each top-up poll: one that brings nothing in this time ends the batch.
_TOP_UP_WAIT = 0.05


class KafkaJobError(SigmaArrowError):
    """The job cannot go on (broker unreachable, fenced by another instance, fatal client error)."""


@dataclass
class KafkaJobSummary:
    """What a run did; ``lag_*`` is the sum over the job's partitions of (end offset - position)."""

    messages: int = 0
    events: int = 0
    matches: int = 0
    #: Messages that did not decode (sent to the DLQ topic, or to the error log without one).
    dlq: int = 0
    batches: int = 0
    lag_start: int = 0
    lag_end: int | None = None
    partitions: list[str] = field(default_factory=list)
    #: Why the run stopped: "end", "count", "duration" or "signal".
    stopped_by: str = "end"
    seconds: float = 0.0
    #: Until the group first assigned partitions (Tansu joins take seconds).
    join_seconds: float = 0.0
    #: Fetching messages from the client and picking those within the job's end.
    consume_seconds: float = 0.0
    decode_seconds: float = 0.0
    engine_seconds: float = 0.0
    #: Writing outputs and committing (transaction or fsync + offset commit).
    output_seconds: float = 0.0
    transactional_ids: list[str] = field(default_factory=list)
    #: Processes that decoded and evaluated (1: the job's own process).
    workers: int = 1
    #: Encoding match records (in the workers with ``workers`` > 1, like decode/engine seconds).
    encode_seconds: float = 0.0
    #: Worker mode: handing batches to the workers, and waiting for their results, in this process.
    handoff_seconds: float = 0.0
    wait_seconds: float = 0.0
    #: Worker mode: CPU seconds of the workers on batches and on starting (imports, engine build),
    #: and the sum of their peak RSS (bytes).
    worker_cpu_seconds: float = 0.0
    worker_start_seconds: float = 0.0
    worker_peak_rss: int = 0

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (for ``--json`` style reporting and tests)."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


@dataclass(slots=True)
class _Batch:
    """Messages of one micro-batch (columns of their values and coordinates) and offsets to commit."""

    #: ``topic:partition`` names that ``source_codes`` index (the job's, shared by every batch).
    source_names: list[str]
    messages: list[Any] = field(default_factory=list)
    values: list[bytes | None] = field(default_factory=list)
    #: Per message: its position in ``source_names``.
    source_codes: array[int] = field(default_factory=lambda: array("i"))
    offsets: array[int] = field(default_factory=lambda: array("q"))
    #: Per partition: the next offset to read once this batch is durable.
    commit: dict[tuple[str, int], int] = field(default_factory=dict)

    def topic_partitions(self) -> list[TopicPartition]:
        return [
            TopicPartition(topic, partition, offset) for (topic, partition), offset in self.commit.items()
        ]


@dataclass(slots=True)
class _Partition:
    """Progress of one partition of the job."""

    #: Next offset to consume (last processed + 1); None until known.
    position: int | None = None
    #: The job's end offset for it (``--until end``), fixed at the first fetch.
    end: int | None = None
    #: Next offset after the batches handed over for evaluation (ahead of ``position`` while batches
    #: are in flight); None: same as ``position``.
    fetched: int | None = None

    @property
    def done(self) -> bool:
        return self.end is not None and self.position is not None and self.position >= self.end

    @property
    def next_offset(self) -> int | None:
        """Where the next batch starts: past every batch handed over, committed or not."""
        return self.fetched if self.fetched is not None else self.position

    @property
    def fetched_all(self) -> bool:
        """Every message up to the end has been handed over (the batches may still be in flight)."""
        following = self.next_offset
        return self.end is not None and following is not None and following >= self.end


BatchCallback = Callable[[KafkaJobSummary], None]


def run_kafka_job(
    config: KafkaJobConfig,
    engine: MatchEngine,
    *,
    errors: ErrorLog | None = None,
    stop: threading.Event | None = None,
    on_batch: BatchCallback | None = None,
) -> KafkaJobSummary:
    """Run the job until its stop condition (or ``stop`` is set) and return what it did."""
    return _KafkaJob(config, engine, errors or ErrorLog(), stop or threading.Event(), on_batch).run()


class _KafkaJob:
    def __init__(
        self,
        config: KafkaJobConfig,
        engine: MatchEngine,
        errors: ErrorLog,
        stop: threading.Event,
        on_batch: BatchCallback | None,
    ) -> None:
        self.config = config
        self.engine = engine
        self.errors = errors
        self.stop = stop
        self.on_batch = on_batch
        self.summary = KafkaJobSummary()
        # Partitions currently assigned, and every partition seen (their fixed ends survive rebalances).
        self.assigned: dict[tuple[str, int], _Partition] = {}
        self.ends: dict[tuple[str, int], int] = {}
        self.joined = False
        self.rebalancing = False
        #: Assignments and revocations so far (a batch stops topping up when this changes).
        self.rebalances = 0
        self.consumer: Consumer | None = None
        self.producer: Producer | None = None
        self.producer_id: str | None = None
        self.file: DurableJsonl | None = None
        self.brokers_down_since: float | None = None
        self.started = time.monotonic()
        self.source_codes: dict[tuple[str, int], int] = {}
        self.source_names: list[str] = []
        self.evaluator: Evaluator | None = None
        #: Batches handed over for evaluation and not committed yet, oldest first.
        self.inflight: deque[tuple[_Batch, Pending]] = deque()
        #: Messages handed over so far (committed or in flight).
        self.submitted = 0
        self.retries = 0
        #: Peak RSS of each worker process (by pid).
        self.worker_rss: dict[int, int] = {}
        self.worker_start: dict[int, float] = {}
        self.closing = False
        self.revoking = False

    # -- lifecycle ---------------------------------------------------------------------------------
    def run(self) -> KafkaJobSummary:
        started = self.started = time.monotonic()
        config = self.config
        finished = False
        try:
            self.file = DurableJsonl(config.output_file) if config.output_file else None
        except OSError as exc:
            raise InputError(f"cannot open output file {config.output_file}: {exc}") from exc
        try:
            self.consumer = Consumer(config.consumer_config(), logger=_client_logger(config))
        except KafkaException as exc:
            raise KafkaJobError(f"invalid Kafka consumer settings: {exc}") from exc
        try:
            self.evaluator = self._start_evaluator()
            self.summary.workers = self.evaluator.workers
            self.consumer.subscribe(
                list(config.topics),
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                on_lost=self._on_lost,
            )
            self._loop(started)
            self.summary.lag_end = self._lag_now()
            finished = True
        finally:
            self.summary.seconds = time.monotonic() - started
            self._close(finished)
        return self.summary

    def _start_evaluator(self) -> Evaluator:
        """Evaluate in this process, or in worker processes (``workers``; 0: one per core)."""
        config = self.config
        options = EvaluateOptions(
            include_event=config.include_event,
            min_level=config.min_level,
            keys=config.output_topic is not None,
        )
        workers = config.worker_count
        rules = getattr(self.engine, "rules", None)
        if workers <= 1 or rules is None:  # an engine that cannot be rebuilt in a worker: evaluate here
            return InlineEvaluator(self.engine, options)
        try:
            return WorkerEvaluator(rules, getattr(self.engine, "backend", "auto"), options, workers)
        except WorkerFailure as exc:
            raise KafkaJobError(str(exc)) from exc

    def _close(self, finished: bool = False) -> None:
        # Batches still in flight here were not committed (an error or a second Ctrl-C): end the
        # workers now and drop them, so that closing the consumer (a revocation) cannot commit them.
        self.closing = True
        if not finished and self.evaluator is not None:
            self.evaluator.close(wait=False)
        self.inflight.clear()
        try:
            if self.producer is not None:
                self.producer.flush(_TIMEOUT)
            if self.consumer is not None:
                self.consumer.close()
            if self.file is not None:
                self.file.close()
        finally:
            if self.evaluator is not None:
                self.evaluator.close(wait=finished)  # idle workers exit at once

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if not self.joined:
            self.summary.join_seconds = time.monotonic() - self.started
        self.joined = True
        self.rebalancing = False
        self.rebalances += 1
        # Start each partition at its committed offset, known here, so that a partition another member
        # already finished is done at once (and a stale pause from an earlier assignment is cleared).
        try:
            partitions = consumer.committed(partitions, timeout=_TIMEOUT)
        except KafkaException as exc:
            self.errors.report("kafka", None, "kafka-commit", f"cannot read committed offsets: {exc}")
        consumer.assign(partitions)
        if partitions:
            consumer.resume(partitions)
        for tp in partitions:
            key = (tp.topic, tp.partition)
            position = tp.offset if tp.offset >= 0 else None
            self.assigned[key] = _Partition(position=position, end=self.ends.get(key))
            name = f"{tp.topic}:{tp.partition}"
            if name not in self.summary.partitions:
                self.summary.partitions.append(name)
        if self.config.transactional and self.assigned:
            # Start the transactional producer now (init_transactions takes a broker round trip or
            # more) while the consumer fetches the first batch, not after that batch is evaluated.
            self._transactional_producer()

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Batches in flight are finished and committed now, while this member still owns their
        # partitions (a batch still filling drops what it holds at a rebalance: _next_batch). Until
        # the new assignment arrives the job is not done, even though it holds no partition now.
        if not self.closing:
            self._finish_inflight()
        self.rebalancing = True
        self.rebalances += 1
        for tp in partitions:
            self.assigned.pop((tp.topic, tp.partition), None)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Lost (not handed over): this member may no longer commit, so batches in flight are dropped;
        # the partitions' next owner reads them again from the committed offsets.
        self._discard_inflight()
        for batch_key in [key for key, state in self.assigned.items() if state.fetched is not None]:
            self.assigned[batch_key].fetched = None
        closing, self.closing = self.closing, True
        try:
            self._on_revoke(consumer, partitions)
        finally:
            self.closing = closing

    def _finish_inflight(self) -> None:
        """Complete every batch in flight; after a retried (aborted) transaction drop the rest."""
        self.revoking = True  # a rewind seeks nothing: the partitions restart from committed offsets
        try:
            while self.inflight:
                batches = self.summary.batches
                self._complete_oldest()
                if self.summary.batches == batches:  # it was rewound (with the later ones)
                    return
        finally:
            self.revoking = False

    # -- main loop ---------------------------------------------------------------------------------
    def _loop(self, started: float) -> None:
        """Fetch batches and hand them over while evaluated batches complete, in order.

        At most ``evaluator.capacity`` batches are in flight: one in the job's own process (it is
        evaluated at once), or one per worker process, so the next batch is fetched while the
        workers evaluate. Batches complete (outputs written, offsets committed) strictly in order.
        """
        config = self.config
        assert self.consumer is not None and self.evaluator is not None
        until = config.until
        deadline = started + until.value if until.kind == "duration" else None
        while True:
            reason = self._stop_reason(deadline)
            if reason is not None:
                while self.inflight:  # finish and commit what was handed over
                    self._complete_oldest()
                if reason == "end" and not self._all_done():
                    # A retried batch was rewound: read on from the committed positions.
                    for state in self.assigned.values():
                        if not state.done:
                            state.fetched = None
                    continue
                self.summary.stopped_by = reason
                return
            while self.inflight and self.inflight[0][1].ready():
                self._complete_oldest()
            if len(self.inflight) >= self.evaluator.capacity:
                self._complete_oldest()
                continue
            wanted = config.batch_limit
            if until.kind == "count":
                wanted = min(wanted, int(until.value) - self.submitted)
            elif until.kind == "end":
                # Near the end, ask for what is left (+ one EOF event per partition): consume()
                # returns once it has that many instead of waiting out its timeout for a full batch.
                wanted = min(wanted, self._left_to_end())
            timeout = config.poll_timeout
            if deadline is not None:
                timeout = max(0.0, min(timeout, deadline - time.monotonic()))
            # The cyclic GC would scan the batch's hundreds of thousands of live message objects again
            # and again while they are created (it doubled consume's cost); the batch makes no cycles.
            with gc_paused():
                # Time before the first assignment is the group join (join_seconds), not consuming.
                tick = time.monotonic() if self.joined else None
                batch = self._next_batch(wanted, timeout, deadline)
                if self.joined:
                    since = tick if tick is not None else started + self.summary.join_seconds
                    self.summary.consume_seconds += time.monotonic() - since
                if batch.messages or batch.commit:
                    self._submit(batch)
            del batch  # free the batch's messages (once completed) before the GC runs again

    def _stop_reason(self, deadline: float | None) -> str | None:
        """Why fetching stops now ("signal", "end", "count", "duration"), or None to go on."""
        until = self.config.until
        if self.stop.is_set():
            return "signal"
        assigned = self.assigned.values()
        if (
            until.kind == "end"
            and self.joined
            and not self.rebalancing
            and all(p.fetched_all for p in assigned)
        ):
            return "end"
        if until.kind == "count" and self.submitted >= until.value:
            return "count"
        if deadline is not None and time.monotonic() >= deadline:
            return "duration"
        return None

    def _all_done(self) -> bool:
        return all(p.done for p in self.assigned.values())

    def _submit(self, batch: _Batch) -> None:
        """Hand a batch over for evaluation; its partitions' next batch starts after it."""
        assert self.evaluator is not None
        if batch.messages:
            try:
                pending = self.evaluator.submit(
                    batch.values, self.source_names, batch.source_codes, batch.offsets
                )
            except WorkerFailure as exc:
                raise KafkaJobError(f"{exc}{_NOT_COMMITTED}") from exc
        else:  # only offsets to commit past (transaction markers): nothing to evaluate
            pending = Pending(outcome=BatchOutcome())
        batch.values = []  # the messages keep the values; the list itself is not needed any more
        self.summary.handoff_seconds += pending.handoff_seconds
        for key, offset in batch.commit.items():
            state = self.assigned.get(key)
            if state is not None:
                state.fetched = offset
        self.submitted += len(batch.messages)
        self.inflight.append((batch, pending))

    def _complete_oldest(self) -> None:
        """Wait for the oldest batch in flight, write its outputs and commit it."""
        assert self.evaluator is not None
        batch, pending = self.inflight[0]
        tick = time.monotonic()
        try:
            outcome = self.evaluator.result(pending)
        except WorkerFailure as exc:
            self.inflight.popleft()
            raise KafkaJobError(f"{exc}{_NOT_COMMITTED}") from exc
        if pending.future is not None:
            self.summary.wait_seconds += time.monotonic() - tick
        self.inflight.popleft()
        try:
            with gc_paused():
                self._process(batch, outcome)
            self.retries = 0
        except _RetryBatch as exc:
            self.retries += 1
            if self.retries > _MAX_TRANSACTION_RETRIES:
                raise KafkaJobError(f"transaction keeps failing: {exc}") from exc
            self._rewind([batch])

    def _discard_inflight(self) -> list[_Batch]:
        """Forget the batches in flight (not committed; read again later); return them."""
        dropped = []
        while self.inflight:
            batch, pending = self.inflight.popleft()
            if self.evaluator is not None:
                self.evaluator.discard(pending)
            dropped.append(batch)
        return dropped

    def _left_to_end(self) -> int:
        """Messages (and EOF events) left before every assigned partition's end; large when unknown."""
        if not self.assigned:
            return self.config.batch_limit
        left = 0
        for state in self.assigned.values():
            following = state.next_offset
            if state.end is None or following is None:
                return self.config.batch_limit
            if following < state.end:
                left += state.end - following + 1
        return max(1, left)

    def _next_batch(self, wanted: int, timeout: float, deadline: float | None) -> _Batch:
        """Consume up to ``wanted`` messages: wait ``timeout`` for them, then top up while they flow.

        Every batch costs the engine a large fixed amount, so a batch is not cut short just because
        the broker delivered less than ``wanted`` within ``timeout``: short top-up polls go on while
        each brings messages (for at most ``_FILL_SECONDS``), and stop at once when one brings
        nothing, at a rebalance, on ``stop`` or at the deadline.
        """
        assert self.consumer is not None
        batch = _Batch(self.source_names)
        received = self.consumer.consume(wanted, timeout)
        self._select(received, batch)
        fill_until = time.monotonic() + _FILL_SECONDS
        while received and len(batch.messages) < wanted and not self.stop.is_set():
            now = time.monotonic()
            if now >= fill_until or (deadline is not None and now >= deadline):
                break
            rebalances = self.rebalances
            received = self.consumer.consume(wanted - len(batch.messages), _TOP_UP_WAIT)
            if self.rebalances != rebalances:
                # The earlier polls' messages belong to the old assignment; the new one reads them
                # again from the committed offsets (_on_assign), so keep only this poll's.
                batch = _Batch(self.source_names)
                self._select(received, batch)
                break
            self._select(received, batch)
        return batch

    def _select(self, received: list[Any], batch: _Batch) -> None:
        """Add the messages to process (within the job's end) and the offsets to commit after them."""
        if not received:
            return
        if len(self.config.topics) == 1 and not any(map(Message.error, received)):
            self._select_runs(received, batch)  # the common case, with no Python work per message
        else:
            self._select_each(received, batch)

    def _select_runs(self, received: list[Any], batch: _Batch) -> None:
        """``_select`` for messages of one topic and no error or EOF event, a partition run at a time."""
        assert self.consumer is not None
        topic = self.config.topics[0]
        count = len(received)
        partitions = np.fromiter(map(Message.partition, received), dtype=np.int64, count=count)
        offsets = np.fromiter(map(Message.offset, received), dtype=np.int64, count=count)
        codes = np.empty(count, dtype=np.int32)
        keep = np.ones(count, dtype=bool)
        starts = [0, *(np.flatnonzero(np.diff(partitions)) + 1).tolist()]
        for start, stop in zip(starts, [*starts[1:], count], strict=True):
            key = (topic, int(partitions[start]))
            self.brokers_down_since = None
            state = self.assigned.get(key)
            if state is None:  # revoked while in flight; the new owner reads it again
                keep[start:stop] = False
                continue
            first = int(offsets[start])
            if state.position is None:
                state.position = first
            cut = stop
            if self.config.until.kind == "end":
                if state.end is None:
                    _, high = self.consumer.get_watermark_offsets(TopicPartition(*key), cached=True)
                    self._fix_end(key, state, max(high, first + 1), start=first)
                if state.end is not None:  # a partition's messages arrive in offset order
                    cut = start + int(np.searchsorted(offsets[start:stop], state.end))
                    if cut < stop:
                        self.consumer.pause([TopicPartition(*key)])
                        keep[cut:stop] = False
            codes[start:stop] = self._source_code(key)
            if cut > start:
                batch.commit[key] = int(offsets[cut - 1]) + 1
        if keep.all():
            batch.messages.extend(received)
            batch.values.extend(map(Message.value, received))
        else:
            kept = np.flatnonzero(keep)
            chosen = [received[i] for i in kept.tolist()]
            batch.messages.extend(chosen)
            batch.values.extend(map(Message.value, chosen))
            codes, offsets = codes[kept], offsets[kept]
        batch.source_codes.frombytes(codes.tobytes())
        batch.offsets.frombytes(offsets.tobytes())

    def _select_each(self, received: list[Any], batch: _Batch) -> None:
        """``_select`` for any messages: error and EOF events, several topics."""
        assert self.consumer is not None
        bounded = self.config.until.kind == "end"
        messages, values, codes, offsets = batch.messages, batch.values, batch.source_codes, batch.offsets
        only_topic = self.config.topics[0] if len(self.config.topics) == 1 else None
        # Messages come in runs of one partition (fetch order): look a partition up once per run.
        key: tuple[str, int] | None = None
        state: _Partition | None = None
        code = end = last = -1
        for message in received:
            error = message.error()
            if error is not None:
                if key is not None and last >= 0:
                    batch.commit[key] = last + 1
                key, last = None, -1
                if error.code() == KafkaError._PARTITION_EOF:
                    eof_key = (message.topic(), message.partition())
                    eof_state = self.assigned.get(eof_key)
                    if eof_state is not None:
                        self._at_partition_end(eof_key, eof_state, message.offset(), batch)
                    continue
                self._on_client_error(error)
                continue
            partition = message.partition()
            topic = only_topic or message.topic()
            if key is None or partition != key[1] or topic != key[0]:
                if key is not None and last >= 0:
                    batch.commit[key] = last + 1  # a partition's messages arrive in offset order
                key, last = (topic, partition), -1
                self.brokers_down_since = None
                state = self.assigned.get(key)
                code = self._source_code(key)
                end = -1 if state is None or state.end is None else state.end
            if state is None:  # revoked while in flight; the new owner reads it again
                continue
            offset = message.offset()
            if state.position is None:
                state.position = offset
            if bounded:
                if end < 0:
                    _, high = self.consumer.get_watermark_offsets(TopicPartition(*key), cached=True)
                    self._fix_end(key, state, max(high, offset + 1), start=offset)
                    end = -1 if state.end is None else state.end
                if offset >= end >= 0:
                    if last != -2:  # pause once per run
                        self.consumer.pause([TopicPartition(*key)])
                        if last >= 0:
                            batch.commit[key] = last + 1
                        last = -2
                    continue
            messages.append(message)
            values.append(message.value())
            codes.append(code)
            offsets.append(offset)
            last = offset
        if key is not None and last >= 0:
            batch.commit[key] = last + 1

    def _source_code(self, key: tuple[str, int]) -> int:
        """Position of ``topic:partition`` in the job's source names (added on first sight)."""
        code = self.source_codes.get(key)
        if code is None:
            code = self.source_codes[key] = len(self.source_names)
            self.source_names.append(f"{key[0]}:{key[1]}")
        return code

    def _at_partition_end(self, key: tuple[str, int], state: _Partition, offset: int, batch: _Batch) -> None:
        """Handle a partition EOF event: fix an unknown end, move past trailing control records."""
        self._fix_end(key, state, offset)
        eof = offset if state.end is None else min(offset, state.end)
        following = state.next_offset
        if following is None:
            state.position = eof
        elif eof > following and eof > batch.commit.get(key, -1):
            batch.commit[key] = eof  # only transaction markers lay between: commit past them
        if self.config.until.kind == "end" and state.done:
            assert self.consumer is not None
            self.consumer.pause([TopicPartition(*key)])

    def _on_client_error(self, error: Any) -> None:
        if error.fatal() or error.code() in _FATAL_CODES:
            raise KafkaJobError(f"Kafka: {error.str()}")
        if error.code() == KafkaError._ALL_BROKERS_DOWN:
            # Idle connections get closed; only a long outage ends the job.
            self.brokers_down_since = self.brokers_down_since or time.monotonic()
            if time.monotonic() - self.brokers_down_since > _BROKERS_DOWN_LIMIT:
                raise KafkaJobError(f"Kafka: {error.str()} for {_BROKERS_DOWN_LIMIT:.0f} s")
        # Anything else is transient (a broker restarting, a rebalance): librdkafka retries.

    def _fix_end(self, key: tuple[str, int], state: _Partition, end: int, start: int | None = None) -> None:
        if self.config.until.kind != "end" or state.end is not None:
            return
        state.end = self.ends.setdefault(key, end)
        begin = start if start is not None else (state.position if state.position is not None else end)
        self.summary.lag_start += max(0, state.end - begin)

    # -- one micro-batch ---------------------------------------------------------------------------
    def _process(self, batch: _Batch, outcome: BatchOutcome) -> None:
        """Write an evaluated batch's outputs and commit its offsets (batches come here in order)."""
        config = self.config
        summary = self.summary
        summary.decode_seconds += outcome.decode_seconds
        summary.engine_seconds += outcome.engine_seconds
        summary.encode_seconds += outcome.encode_seconds
        if outcome.pid:
            summary.worker_cpu_seconds += outcome.cpu_seconds
            self.worker_rss[outcome.pid] = max(self.worker_rss.get(outcome.pid, 0), outcome.peak_rss)
            self.worker_start[outcome.pid] = outcome.start_seconds
            summary.worker_peak_rss = sum(self.worker_rss.values())
            summary.worker_start_seconds = sum(self.worker_start.values())
        tick = time.monotonic()
        if config.transactional:
            self._write_transaction(batch, outcome)
        else:
            self._write_and_commit(batch, outcome)
        summary.output_seconds += time.monotonic() - tick

        # Only now, with outputs durable and offsets committed, does the batch count as done.
        for key, offset in batch.commit.items():
            state = self.assigned.get(key)
            if state is not None:
                state.position = offset
                if config.until.kind == "end" and state.done:
                    assert self.consumer is not None
                    self.consumer.pause([TopicPartition(*key)])
        summary.messages += len(batch.messages)
        summary.events += outcome.events
        summary.matches += outcome.matches
        summary.dlq += len(outcome.failures)
        summary.batches += 1
        if self.on_batch is not None:
            self.on_batch(summary)

    def _write_and_commit(self, batch: _Batch, evaluated: BatchOutcome) -> None:
        """No Kafka output: append + fsync the file, report undecodable messages, then commit."""
        assert self.consumer is not None
        if self.file is not None:
            self.file.write(evaluated.payloads)
            self.file.sync()
        for position, error in evaluated.failures:
            self._report_failure(batch.messages, position, error)
        if batch.commit:
            try:
                self.consumer.commit(offsets=batch.topic_partitions(), asynchronous=False)
            except KafkaException as exc:
                # Uncommitted offsets are read again by the next run (or the partition's new owner).
                if exc.args[0].fatal():
                    raise KafkaJobError(f"offset commit failed: {exc}") from exc
                self.errors.report("kafka", None, "kafka-commit", f"offset commit failed: {exc}")

    def _report_failure(self, messages: list[Any], position: int, error: str) -> None:
        if position < 0:
            self.errors.report("kafka", None, DECODE_ERROR_KIND, error)
            return
        message = messages[position]
        self.errors.report(
            f"{message.topic()}:{message.partition()}", message.offset(), DECODE_ERROR_KIND, error
        )

    def _write_transaction(self, batch: _Batch, evaluated: BatchOutcome) -> None:
        """Kafka output: matches, DLQ messages and the consumed offsets in one transaction."""
        assert self.consumer is not None
        config = self.config
        producer = self._transactional_producer()
        payloads = evaluated.payloads
        try:
            producer.begin_transaction()
            if config.output_topic is not None:
                for key, value in zip(evaluated.keys, payloads, strict=True):
                    _produce(producer, config.output_topic, value, key)
            for position, error in evaluated.failures:
                if config.dlq_topic is None or position < 0:
                    self._report_failure(batch.messages, position, error)
                else:
                    message = batch.messages[position]
                    coordinates = (error, message.topic(), str(message.partition()), str(message.offset()))
                    headers = list(message.headers() or [])
                    headers += [
                        (name, value.encode()) for name, value in zip(DLQ_HEADERS, coordinates, strict=True)
                    ]
                    _produce(producer, config.dlq_topic, message.value() or b"", message.key(), headers)
            if self.file is not None:
                self.file.write(payloads)
                self.file.sync()
            if batch.commit:
                metadata = self.consumer.consumer_group_metadata()
                producer.send_offsets_to_transaction(batch.topic_partitions(), metadata, _TIMEOUT)
            _commit_transaction(producer)
        except KafkaException as exc:
            error = exc.args[0]
            if error.txn_requires_abort():
                producer.abort_transaction(_TIMEOUT)
                raise _RetryBatch(error.str()) from exc
            # Fatal (e.g. fenced: another instance took this transactional.id) or out of retries.
            raise KafkaJobError(f"transaction failed: {error.str()}") from exc

    def _transactional_producer(self) -> Producer:
        """Return the producer of the current assignment (new transactional.id when it changes)."""
        transactional_id = self.config.derive_transactional_id(self.assigned)
        if self.producer is not None and self.producer_id == transactional_id:
            return self.producer
        if self.producer is not None:
            self.producer.flush(_TIMEOUT)
        try:
            producer = Producer(
                self.config.producer_config(transactional_id), logger=_client_logger(self.config)
            )
            # Aborts whatever a previous (crashed) holder of this id left open, and fences it.
            producer.init_transactions(_TIMEOUT)
        except KafkaException as exc:
            raise KafkaJobError(f"cannot start Kafka transactions ({transactional_id}): {exc}") from exc
        self.producer, self.producer_id = producer, transactional_id
        self.summary.transactional_ids.append(transactional_id)
        return producer

    def _rewind(self, batches: list[_Batch]) -> None:
        """After an aborted transaction: drop the batches in flight and read their messages again."""
        assert self.consumer is not None
        batches = [*batches[:1], *self._discard_inflight()]
        first: dict[tuple[str, int], int] = {}
        for batch in batches:
            self.submitted -= len(batch.messages)
            for message in batch.messages:
                key = (message.topic(), message.partition())
                first[key] = min(first.get(key, message.offset()), message.offset())
            for key in batch.commit:
                state = self.assigned.get(key)
                if state is not None:
                    state.fetched = None  # the next batch starts at the committed position again
        for (topic, partition), offset in first.items():
            if (topic, partition) in self.assigned and not self.revoking:
                self.consumer.seek(TopicPartition(topic, partition, offset))
                # _select may have paused it on a message past the end that came with this batch.
                self.consumer.resume([TopicPartition(topic, partition)])

    def _lag_now(self) -> int | None:
        """Sum over assigned partitions of (high watermark - position), from the client's cache."""
        if self.consumer is None:
            return None
        lag = 0
        for key, state in self.assigned.items():
            if state.position is None:
                continue
            try:
                _, high = self.consumer.get_watermark_offsets(TopicPartition(*key), cached=True)
            except KafkaException:
                continue
            if high >= 0:
                lag += max(0, high - state.position)
        return lag


def _client_logger(config: KafkaJobConfig) -> logging.Logger:
    """Route librdkafka logs nowhere (errors surface as events), or to stderr with ``-X debug=...``."""
    logger = logging.getLogger("sigma_arrow.kafka.librdkafka")
    logger.propagate = False
    if not logger.handlers:
        wanted = any(key.rpartition(".")[2] == "debug" for key in config.client_config)
        logger.addHandler(logging.StreamHandler() if wanted else logging.NullHandler())
    return logger


class _RetryBatch(Exception):
    """The transaction was aborted; the batch is read and processed again."""


_FATAL_CODES = frozenset(
    {
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.GROUP_AUTHORIZATION_FAILED,
        KafkaError._AUTHENTICATION,
    }
)


def _commit_transaction(producer: Producer) -> None:
    """Commit, retrying what librdkafka marks retriable (the outcome is unknown until it succeeds)."""
    for attempt in range(_MAX_TRANSACTION_RETRIES + 1):
        try:
            producer.commit_transaction(_TIMEOUT)
            return
        except KafkaException as exc:
            if not exc.args[0].retriable() or attempt == _MAX_TRANSACTION_RETRIES:
                raise


def _produce(
    producer: Producer,
    topic: str,
    value: bytes,
    key: bytes | None,
    headers: list[tuple[str, str | bytes | None]] | None = None,
) -> None:
    """Produce, waiting for queue space when the local buffer is full."""
    while True:
        try:
            producer.produce(topic, value=value, key=key, headers=headers)
            return
        except BufferError:
            producer.poll(0.1)
