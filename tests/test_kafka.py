"""The Kafka job against a real broker (Tansu): bounded runs, resume, DLQ, crash recovery, scaling,
worker processes (same outputs as one process; a killed worker or member loses nothing).

Tansu does not honour read_committed (aborted transactional records stay visible), so after a crash
the output topic may hold a killed run's aborted matches as well as the rerun's: those tests assert
at-least-once delivery and exact dedupe by message key, never exactly-once read isolation.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import orjson
import psutil
import pyarrow as pa
import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from kafka_broker import TansuBroker, kafka_broker

from sigma_arrow.engine import Engine
from sigma_arrow.errorlog import ErrorLog
from sigma_arrow.flatten import ndjson_to_batch
from sigma_arrow.kafka import DLQ_HEADERS, KafkaJobConfig, Until, run_kafka_job
from sigma_arrow.kafka.config import DEFAULT_MAX_BATCH, WORKER_MAX_BATCH, automatic_workers
from sigma_arrow.kafka.decode import decode_messages, restore_coordinates
from sigma_arrow.kafka.output import MatchSet
from sigma_arrow.loader import load_rules
from sigma_arrow.sinks.base import records as sink_records

__all__ = ["kafka_broker"]  # the fixture, imported so pytest finds it

PROJECT = Path(__file__).resolve().parents[1]

RULES = {
    "whoami.yml": """
title: Whoami
id: 5a1f8d41-0d6c-4b45-9d34-1b0c2b1d0001
status: test
level: medium
logsource: {product: windows, category: process_creation}
detection:
    selection: {CommandLine|contains: whoami}
    condition: selection
""",
    "encoded.yml": """
title: Encoded PowerShell
id: 5a1f8d41-0d6c-4b45-9d34-1b0c2b1d0002
status: test
level: high
logsource: {product: windows, category: process_creation}
detection:
    selection:
        Image|endswith: '\\powershell.exe'
        CommandLine|contains: ' -enc '
    condition: selection
""",
    "service.yml": """
title: Service Installed
id: 5a1f8d41-0d6c-4b45-9d34-1b0c2b1d0003
status: test
level: low
logsource: {product: windows, service: system}
detection:
    selection: {EventID: 7045}
    condition: selection
""",
}

COMMANDS = [
    ("C:\\Windows\\System32\\cmd.exe", "cmd.exe /c whoami /all"),
    ("C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe", "powershell.exe -nop -enc SQBFAFgA"),
    ("C:\\Windows\\System32\\notepad.exe", "notepad.exe C:\\notes.txt"),
    ("C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe", "powershell.exe whoami -enc AAAA"),
    ("C:\\Windows\\explorer.exe", "explorer.exe"),
]


def event(i: int) -> dict[str, object]:
    """An EVTX-shaped event; about half of them match one or two rules."""
    system: dict[str, object] = {"Computer": f"host{i % 7}", "EventRecordID": i}
    if i % 11 == 0:
        system |= {"EventID": 7045, "Channel": "System"}
        return {"Event": {"System": system, "EventData": {"ServiceName": f"svc{i}"}}}
    image, command = COMMANDS[i % len(COMMANDS)]
    system |= {"EventID": 1, "Channel": "Microsoft-Windows-Sysmon/Operational"}
    return {"Event": {"System": system, "EventData": {"Image": image, "CommandLine": f"{command} #{i}"}}}


@dataclass
class Produced:
    """Events written to a topic: per event, the (partition, offset, sub-index) it landed at."""

    topic: str
    lines: list[bytes]
    coordinates: list[tuple[int, int, int]]
    ends: dict[int, int]

    @property
    def messages(self) -> int:
        return len({(p, o) for p, o, _ in self.coordinates})


def produce(
    broker: TansuBroker, topic: str, events: int, partitions: int, *, group_every: int = 0
) -> Produced:
    """Create ``topic``, write events round-robin (every ``group_every``-th message: NDJSON of 3)."""
    broker.create_topics({topic: partitions})
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5})
    lines = [orjson.dumps(event(i)) for i in range(events)]
    messages: list[list[int]] = []
    i = 0
    while i < events:
        size = 3 if group_every and len(messages) % group_every == group_every - 1 else 1
        messages.append(list(range(i, min(i + size, events))))
        i += size
    delivered: dict[int, tuple[int, int]] = {}
    for number, members in enumerate(messages):
        value = b"\n".join(lines[k] for k in members) + (b"\n" if len(members) > 1 else b"")

        def on_delivery(err: object, msg: object, number: int = number) -> None:
            assert err is None, err
            delivered[number] = (msg.partition(), msg.offset())  # type: ignore[attr-defined]

        producer.produce(topic, value=value, partition=number % partitions, on_delivery=on_delivery)
    producer.flush(30)
    coordinates = []
    for number, members in enumerate(messages):
        partition, offset = delivered[number]
        coordinates += [(partition, offset, sub) for sub in range(len(members))]
    ends = {p: 0 for p in range(partitions)}
    for partition, offset, _ in coordinates:
        ends[partition] = max(ends[partition], offset + 1)
    return Produced(topic, lines, coordinates, ends)


@pytest.fixture(scope="module")
def rules_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("rules")
    for name, text in RULES.items():
        (folder / name).write_text(text)
    return folder


@pytest.fixture(scope="module")
def engine(rules_dir: Path) -> Engine:
    rules = load_rules([rules_dir])
    assert len(rules) == len(RULES), rules.errors
    return Engine(rules)


def expected_keys(engine: Engine, produced: Produced) -> set[str]:
    """Dedupe keys the job must emit: the engine run over the same events as one NDJSON file."""
    batch = ndjson_to_batch(b"\n".join(produced.lines), source="file", first_index=0, errors=ErrorLog())
    matches = engine.matches(batch)
    keys = set()
    for rule_id, line in zip(matches["rule_id"].to_pylist(), matches["event_index"].to_pylist(), strict=True):
        partition, offset, sub = produced.coordinates[line]
        keys.add(f"{rule_id}:{produced.topic}:{partition}:{offset}:{sub}")
    assert keys, "the test data must produce matches"
    return keys


def read_topic(
    broker: TansuBroker, topic: str
) -> list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]]:
    """Every record of a topic (key, value, headers), read by assignment (no group join)."""
    consumer = Consumer(
        {
            "bootstrap.servers": broker.bootstrap,
            "group.id": "test-reader",
            "enable.partition.eof": True,
            "enable.auto.commit": False,
        }
    )
    metadata = consumer.list_topics(topic, timeout=10).topics[topic]
    partitions = sorted(metadata.partitions)
    consumer.assign([TopicPartition(topic, p, -2) for p in partitions])  # -2: OFFSET_BEGINNING
    records = []
    at_end: set[int] = set()
    deadline = time.monotonic() + 30
    while len(at_end) < len(partitions) and time.monotonic() < deadline:
        for message in consumer.consume(1000, 0.5):
            if message.error():
                if message.error().code() == KafkaError._PARTITION_EOF:
                    at_end.add(message.partition())
                continue
            records.append((message.key(), message.value(), list(message.headers() or [])))
    consumer.close()
    return records


def keys_of(records: Sequence[tuple[bytes | None, bytes | None, object]]) -> list[str]:
    return [key.decode() for key, _, _ in records if key is not None]


def file_keys(path: Path) -> list[str]:
    """Keys (without sub-index) of a JSONL match file: rule:topic:partition:offset."""
    keys = []
    for line in path.read_bytes().splitlines():
        record = orjson.loads(line)
        keys.append(f"{record['rule_id']}:{record['source']}:{record['event_index']}")
    return keys


def without_sub(keys: set[str]) -> set[str]:
    return {key.rsplit(":", 1)[0] for key in keys}


def committed(broker: TansuBroker, group: str, produced: Produced) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group})
    try:
        found = consumer.committed([TopicPartition(produced.topic, p) for p in produced.ends], timeout=10)
    finally:
        consumer.close()
    return {tp.partition: max(tp.offset, 0) for tp in found}


def cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "from sigma_arrow.cli import main; main()", "kafka", *args]


def cli_env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT), os.environ.get("PYTHONPATH")])),
    }


# ---------------------------------------------------------------- no broker needed

UNTIL_CASES = [
    ("end", Until("end")),
    ("250", Until("count", 250)),
    ("30s", Until("duration", 30.0)),
    ("5m", Until("duration", 300.0)),
    ("500ms", Until("duration", 0.5)),
    ("1.5h", Until("duration", 5400.0)),
]


@pytest.mark.parametrize(("text", "until"), UNTIL_CASES)
def test_until_parses(text: str, until: Until) -> None:
    assert Until.parse(text) == until


@pytest.mark.parametrize("text", ["", "0", "-3", "soon", "5 days", "0s"])
def test_until_rejects(text: str) -> None:
    with pytest.raises(Exception, match="until"):
        Until.parse(text)


CLI_USAGE_ERRORS = [
    (["--until", "soon"], "--until expects"),
    (["--max-batch", "0"], "max-batch"),
    (["-X", "no-equals-sign"], "-X expects key=value"),
]


@pytest.mark.parametrize(("extra", "message"), CLI_USAGE_ERRORS)
def test_cli_usage_errors_exit_2(rules_dir: Path, extra: list[str], message: str) -> None:
    args = cli("-b", "127.0.0.1:1", "-t", "t", "-g", "g", "-r", str(rules_dir), *extra)
    done = subprocess.run(args, env=cli_env(), capture_output=True, timeout=60, check=False)
    assert done.returncode == 2
    assert message in done.stderr.decode()


def test_cli_without_loadable_rules_exits_2(tmp_path: Path) -> None:
    args = cli("-b", "127.0.0.1:1", "-t", "t", "-g", "g", "-r", str(tmp_path / "missing"))
    done = subprocess.run(args, env=cli_env(), capture_output=True, timeout=60, check=False)
    assert done.returncode == 2
    assert done.stderr.decode().startswith("sigma-arrow kafka: error:")


BATCH_LIMIT_CASES = [
    # (--max-batch, --workers, messages per batch)
    (None, 1, DEFAULT_MAX_BATCH),
    (None, 2, WORKER_MAX_BATCH),
    (5000, 1, 5000),
    (5000, 3, 5000),
    (None, 0, WORKER_MAX_BATCH if automatic_workers() > 1 else DEFAULT_MAX_BATCH),
]


@pytest.mark.parametrize(("max_batch", "workers", "expected"), BATCH_LIMIT_CASES)
def test_batch_limit_defaults_by_worker_count(max_batch: int | None, workers: int, expected: int) -> None:
    config = KafkaJobConfig("b:9092", ("t",), "g", max_batch=max_batch, workers=workers)
    assert config.batch_limit == expected


def test_cli_leaves_the_batch_default_to_the_config() -> None:
    from sigma_arrow.cli import kafka_cmd

    context = kafka_cmd.kafka.make_context("kafka", ["-b", "b:9092", "-t", "t", "-g", "g", "-r", "r"])
    assert context.params["max_batch"] is None and context.params["workers"] == 0
    assert KafkaJobConfig.max_batch is None and KafkaJobConfig.workers == 1  # library: one process


PREFETCH_CASES = [
    # (max batch, worker processes, -X settings, expected queued.min.messages)
    (1, 1, {}, 100_000),
    (50_000, 1, {}, 100_000),
    (262_144, 1, {}, 262_144),
    (20_000_000, 1, {}, 10_000_000),  # librdkafka's maximum
    (262_144, 1, {"consumer.queued.min.messages": "5000"}, "5000"),
    # With workers: a batch per worker plus two, so the broker delivers while the job waits on them.
    (65_536, 2, {}, 262_144),
    (10_000, 3, {}, 100_000),
    (65_536, 2, {"consumer.queued.min.messages": "5000"}, "5000"),
]


@pytest.mark.parametrize(("max_batch", "workers", "settings", "expected"), PREFETCH_CASES)
def test_consumer_prefetches_ahead(
    max_batch: int, workers: int, settings: dict[str, str], expected: int | str
) -> None:
    config = KafkaJobConfig(
        "b:9092", ("t",), "g", max_batch=max_batch, workers=workers, client_config=settings
    )
    assert config.consumer_config()["queued.min.messages"] == expected


GOOD = b'{"CommandLine": "a"}'
DECODE_CASES = [
    # (values, per event: (message position, position of its line in the message), failed messages)
    ([GOOD, GOOD], [(0, 0), (1, 0)], []),
    ([GOOD + b"\n" + GOOD + b"\n"], [(0, 0), (0, 1)], []),
    ([b'{\n  "CommandLine": "pretty"\n}\n'], [(0, 0)], []),
    ([b"not json", GOOD], [(1, 0)], [0]),
    ([b"[1, 2]", b"42", b'"text"'], [], [0, 1, 2]),
    ([None, b"", b"  \n \n"], [], [0, 1, 2]),
    # A bad line fails its message (DLQ) but its good lines still count, keeping their line positions.
    ([GOOD + b"\n{broken\n\n" + GOOD, GOOD], [(0, 0), (0, 2), (1, 0)], [0]),
]


@pytest.mark.parametrize("columnar", [False, True], ids=["lists", "arrays"])
@pytest.mark.parametrize(("values", "events", "failed"), DECODE_CASES)
def test_decode_messages(
    values: list[bytes | None], events: list[tuple[int, int]], failed: list[int], columnar: bool
) -> None:
    offsets = [100 + n for n in range(len(values))]
    sources = [f"t:{n}" for n in range(len(values))]
    if columnar:  # what the job passes: an Arrow array of sources, an array('q') of offsets
        decoded = decode_messages(values, pa.array(sources, pa.string()), array("q", offsets))
    else:
        decoded = decode_messages(values, sources, offsets)
    assert decoded.events == len(events)
    assert decoded.offsets.tolist() == [100 + message for message, _ in events]
    assert decoded.sub_index.tolist() == [sub for _, sub in events]
    assert decoded.sources.to_pylist() == [f"t:{message}" for message, _ in events]
    assert [position for position, _ in decoded.failures] == failed
    if decoded.batch is not None:
        assert decoded.batch.column("__source").to_pylist() == decoded.sources.to_pylist()
        assert decoded.batch.column("__event_index").to_pylist() == list(range(len(events)))


BLOCK_CASES = [
    # (values, whether every value is one event that decodes: the block path takes them)
    ([GOOD, b'{"Image": "x", "CommandLine": "b"}', GOOD], True),
    ([b'{"a": 1, "b": {"c": "\\u00e9"}}', b'{"Event": {"System": {"EventID": 4688}}}'], True),
    ([GOOD, GOOD + b"\n" + GOOD], False),  # NDJSON in a message
    ([b'{\n  "CommandLine": "pretty"\n}'], False),
    ([GOOD, b"not json"], False),
    ([GOOD, None], False),  # tombstone
    ([GOOD, b""], False),
    ([b"   "], False),
]


@pytest.mark.parametrize(("values", "simple"), BLOCK_CASES)
def test_worker_tasks_decode_like_decode_messages(values: list[bytes | None], simple: bool) -> None:
    """A worker decodes a batch from its values' bytes at once when it can; the result is the same."""
    from sigma_arrow.kafka.decode import decode_message_block
    from sigma_arrow.kafka.parallel import _Task

    offsets = np.arange(500, 500 + len(values), dtype=np.int64)
    codes = np.arange(len(values), dtype=np.int32) % 2
    lengths = np.array([-1 if v is None else len(v) for v in values], dtype=np.int64)
    blob = b"".join(v for v in values if v is not None)
    task = _Task(lengths.tobytes(), ("t:0", "t:1"), codes.tobytes(), offsets.tobytes(), blob=blob)
    block = decode_message_block(blob, lengths, task.sources(), offsets)
    assert (block is not None) == simple
    expected = decode_messages(values, task.sources(), offsets)
    for decoded in (task.decode(), *([block] if block is not None else [])):
        assert decoded.events == expected.events
        assert decoded.offsets.tolist() == expected.offsets.tolist()
        assert decoded.sub_index.tolist() == expected.sub_index.tolist()
        assert decoded.sources.to_pylist() == expected.sources.to_pylist()
        assert decoded.failures == expected.failures
        if expected.batch is not None:
            assert decoded.batch is not None and decoded.batch.to_batch().equals(expected.batch.to_batch())


@pytest.mark.parametrize("include_event", [True, False])
def test_match_payloads_equal_the_jsonl_sink(engine: Engine, include_event: bool) -> None:
    values = [orjson.dumps(event(i)) for i in range(40)] + [
        orjson.dumps(event(40)) + b"\n" + orjson.dumps(event(41))
    ]
    offsets = [1000 + 2 * n for n in range(len(values))]
    decoded = decode_messages(values, ["t:3"] * len(values), offsets)
    assert decoded.batch is not None
    found = engine.matches(decoded.batch, include_event=False)
    records, rows, sub_index = restore_coordinates(found, decoded)
    match_set = MatchSet(records, rows, sub_index, decoded.batch if include_event else None)

    reference = list(sink_records(engine.matches(decoded.batch, include_event=include_event)))
    for record in reference:
        record["event_index"] = int(decoded.offsets[record["event_index"]])
    assert [orjson.loads(payload) for payload in match_set.payloads()] == reference
    assert len(set(match_set.message_keys())) == len(reference) > 0


# ---------------------------------------------------------------- real broker


SELECT_CASES = [
    # (messages as (partition, offset), assigned partitions: (position, end), selected, commits)
    (
        [(0, 0), (0, 1), (1, 0), (0, 2), (1, 1)],
        {0: (0, 10), 1: (0, 10)},
        [(0, 0), (0, 1), (1, 0), (0, 2), (1, 1)],
        {0: 3, 1: 2},
    ),
    ([(0, 3), (0, 4), (0, 5), (0, 6)], {0: (3, 5)}, [(0, 3), (0, 4)], {0: 5}),  # past the fixed end
    ([(0, 0), (2, 0), (2, 1), (0, 1)], {0: (0, 9)}, [(0, 0), (0, 1)], {0: 2}),  # 2 was revoked
    ([(1, 7), (1, 8)], {1: (7, 7)}, [], {}),  # all past the end
    ([(1, 5), (0, 2), (1, 6)], {0: (2, 3), 1: (5, 6)}, [(1, 5), (0, 2)], {0: 3, 1: 6}),
]


@pytest.fixture(scope="module")
def select_topic(kafka_broker: TansuBroker) -> str:
    kafka_broker.create_topics({"select-in": 3})
    return "select-in"


@pytest.mark.kafka
@pytest.mark.parametrize(("received", "assigned", "selected", "commits"), SELECT_CASES)
def test_select_runs_and_select_each_agree(
    kafka_broker: TansuBroker,
    select_topic: str,
    engine: Engine,
    received: list[tuple[int, int]],
    assigned: dict[int, tuple[int, int]],
    selected: list[tuple[int, int]],
    commits: dict[int, int],
) -> None:
    """The vectorised selection (one topic, no events) picks exactly what the general one does."""
    from confluent_kafka import Message

    from sigma_arrow.kafka.job import _Batch, _KafkaJob, _Partition

    config = KafkaJobConfig(kafka_broker.bootstrap, (select_topic,), "select")
    for select in ("_select_runs", "_select_each"):
        job = _KafkaJob(config, engine, ErrorLog(), threading.Event(), None)
        job.consumer = Consumer(config.consumer_config())
        job.consumer.assign([TopicPartition("select-in", p, 0) for p in assigned])
        for partition, (position, end) in assigned.items():
            job.assigned[("select-in", partition)] = _Partition(position=position, end=end)
        messages = [Message(topic="select-in", partition=p, offset=o, value=b"%d" % o) for p, o in received]
        batch = _Batch(job.source_names)
        getattr(job, select)(messages, batch)
        job.consumer.close()
        picked = [(m.partition(), m.offset()) for m in batch.messages]
        assert picked == selected, select
        assert batch.values == [b"%d" % o for _, o in selected]
        assert list(batch.offsets) == [o for _, o in selected]
        assert [job.source_names[c] for c in batch.source_codes] == [f"select-in:{p}" for p, _ in selected]
        assert {key[1]: offset for key, offset in batch.commit.items()} == commits, select


@pytest.mark.kafka
def test_bounded_run_matches_engine_then_resumes(
    kafka_broker: TansuBroker, engine: Engine, tmp_path: Path
) -> None:
    produced = produce(kafka_broker, "resume-in", 900, 3, group_every=10)
    kafka_broker.create_topics({"resume-out": 1})
    out_file = tmp_path / "matches.jsonl"
    config = KafkaJobConfig(
        kafka_broker.bootstrap,
        ("resume-in",),
        "resume",
        output_topic="resume-out",
        output_file=str(out_file),
        max_batch=128,
        until=Until("count", 100),
    )
    expected = expected_keys(engine, produced)

    first = run_kafka_job(config, engine)  # exactly 100 messages, then stop
    assert (first.messages, first.stopped_by) == (100, "count")
    rest = run_kafka_job(replace(config, until=Until("end")), engine)
    assert rest.stopped_by == "end"
    assert first.messages + rest.messages == produced.messages
    assert first.events + rest.events == len(produced.lines)
    assert rest.lag_start == produced.messages - 100 and rest.lag_end == 0

    output = keys_of(read_topic(kafka_broker, "resume-out"))
    assert sorted(output) == sorted(expected)  # every match once: no crash, no rebalance here
    assert sorted(file_keys(out_file)) == sorted(k.rsplit(":", 1)[0] for k in expected)
    assert committed(kafka_broker, "resume", produced) == produced.ends

    again = run_kafka_job(replace(config, until=Until("end")), engine)
    assert (again.messages, again.matches, again.lag_start) == (0, 0, 0)
    assert len(read_topic(kafka_broker, "resume-out")) == len(expected)


BAD_MESSAGES = [
    (b"definitely not json", "invalid JSON"),
    (b"[1, 2, 3]", "expected a JSON object"),
    (b"", "empty"),
    (b'{"Event": {"System": {"EventID": 1}}}\n{"unterminated": ', "event 1: invalid JSON"),
]


@pytest.mark.kafka
def test_undecodable_messages_go_to_the_dlq(kafka_broker: TansuBroker, engine: Engine) -> None:
    kafka_broker.create_topics({"dlq-in": 2, "dlq-out": 1, "dlq": 1})
    producer = Producer({"bootstrap.servers": kafka_broker.bootstrap})
    good = orjson.dumps(event(0))  # matches the whoami rule
    for n, (value, _) in enumerate(BAD_MESSAGES):
        producer.produce("dlq-in", value=good, partition=n % 2)
        producer.produce(
            "dlq-in", value=value, key=b"k%d" % n, partition=n % 2, headers=[("origin", b"test")]
        )
    producer.flush(30)

    config = KafkaJobConfig(
        kafka_broker.bootstrap, ("dlq-in",), "dlq-job", output_topic="dlq-out", dlq_topic="dlq"
    )
    summary = run_kafka_job(config, engine)
    assert summary.messages == 2 * len(BAD_MESSAGES)
    assert summary.dlq == len(BAD_MESSAGES)
    assert summary.events == len(BAD_MESSAGES) + 1  # the good line of the half-broken NDJSON message too

    dead = read_topic(kafka_broker, "dlq")
    by_key = {key: (value, dict(headers)) for key, value, headers in dead}
    assert len(dead) == len(BAD_MESSAGES)
    for n, (value, error) in enumerate(BAD_MESSAGES):
        original, headers = by_key[b"k%d" % n]
        assert original == value
        assert headers["origin"] == b"test"  # the original headers are kept
        assert error in headers["sigma-arrow.error"].decode()
        assert headers["sigma-arrow.topic"] == b"dlq-in"
        assert headers["sigma-arrow.partition"] == str(n % 2).encode()
        assert int(headers["sigma-arrow.offset"]) == 2 * (n // 2) + 1
    assert set(DLQ_HEADERS) <= set(next(iter(by_key.values()))[1])


@pytest.mark.kafka
def test_without_dlq_undecodable_messages_are_logged(
    kafka_broker: TansuBroker, engine: Engine, tmp_path: Path
) -> None:
    kafka_broker.create_topics({"log-in": 1})
    producer = Producer({"bootstrap.servers": kafka_broker.bootstrap})
    for value, _ in BAD_MESSAGES:
        producer.produce("log-in", value=value, partition=0)
    producer.flush(30)
    errors = ErrorLog()
    config = KafkaJobConfig(
        kafka_broker.bootstrap, ("log-in",), "log-job", output_file=str(tmp_path / "m.jsonl")
    )
    summary = run_kafka_job(config, engine, errors=errors)
    assert summary.dlq == len(BAD_MESSAGES) == errors.counts["kafka-decode"]
    assert [(p.source, p.offset) for p in errors.examples] == [
        ("log-in:0", n) for n in range(len(BAD_MESSAGES))
    ]


def wait_for_commit(
    broker: TansuBroker, group: str, produced: Produced, process: subprocess.Popen[bytes]
) -> int:
    """Wait until the job has committed some (not all) offsets; returns how many."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        done = sum(committed(broker, group, produced).values())
        if done > 0:
            return done
        time.sleep(0.05)
    raise AssertionError(f"the job committed nothing (exit code {process.poll()})")


def worker_processes(pid: int) -> list[psutil.Process]:
    """The job's worker processes (its spawned children, not multiprocessing's resource tracker)."""
    children = []
    for child in psutil.Process(pid).children():
        with contextlib.suppress(psutil.Error):
            if "resource_tracker" not in " ".join(child.cmdline()):
                children.append(child)
    return children


@pytest.mark.kafka
@pytest.mark.parametrize("workers", ["1", "2"])
def test_kill_9_then_rerun_loses_nothing(
    kafka_broker: TansuBroker, engine: Engine, rules_dir: Path, tmp_path: Path, workers: str
) -> None:
    topic, group = f"kill-in-{workers}", f"kill-{workers}"
    produced = produce(kafka_broker, topic, 3000, 2, group_every=25)
    kafka_broker.create_topics({f"kill-out-{workers}": 1})
    expected = expected_keys(engine, produced)
    out_file = tmp_path / "matches.jsonl"
    args = cli(
        "-b",
        kafka_broker.bootstrap,
        "-t",
        topic,
        "-g",
        group,
        "-r",
        str(rules_dir),
        "--output-topic",
        f"kill-out-{workers}",
        "-o",
        str(out_file),
        "--max-batch",
        "10",
        "--workers",
        workers,
    )
    victim = subprocess.Popen(args, env=cli_env(), stderr=subprocess.PIPE)
    done_at_kill = wait_for_commit(kafka_broker, group, produced, victim)
    orphans = worker_processes(victim.pid)
    assert len(orphans) == (int(workers) if workers != "1" else 0)
    victim.send_signal(signal.SIGKILL)
    victim.wait(30)
    assert done_at_kill < produced.messages, "the job finished before it could be killed"
    _, alive = psutil.wait_procs(orphans, timeout=10)
    assert not alive, "worker processes outlived their killed job"

    rerun = subprocess.run(args, env=cli_env(), stderr=subprocess.PIPE, timeout=120, check=False)
    assert rerun.returncode == 0, rerun.stderr.decode()
    # At-least-once plus dedupe by key (Tansu keeps aborted records visible; see the module docstring).
    output = keys_of(read_topic(kafka_broker, f"kill-out-{workers}"))
    assert set(output) == expected
    assert set(file_keys(out_file)) == without_sub(expected)
    assert committed(kafka_broker, group, produced) == produced.ends


def matches_of_committed(engine: Engine, produced: Produced, offsets: dict[int, int]) -> list[str]:
    """Keys (without sub-index) of the matches in the committed part of each partition."""
    kept = {
        key
        for key in expected_keys(engine, produced)
        if int(key.split(":")[3]) < offsets[int(key.split(":")[2])]
    }
    return sorted(without_sub(kept))


@pytest.mark.kafka
def test_a_killed_worker_fails_the_job_and_a_rerun_completes(
    kafka_broker: TansuBroker, engine: Engine, rules_dir: Path, tmp_path: Path
) -> None:
    produced = produce(kafka_broker, "crash-in", 3000, 2)
    out_file = tmp_path / "matches.jsonl"
    args = cli(
        "-b",
        kafka_broker.bootstrap,
        "-t",
        "crash-in",
        "-g",
        "crash",
        "-r",
        str(rules_dir),
        "-o",
        str(out_file),
        "--max-batch",
        "10",
        "--workers",
        "2",
    )
    job = subprocess.Popen(args, env=cli_env(), stderr=subprocess.PIPE)
    wait_for_commit(kafka_broker, "crash", produced, job)
    workers = worker_processes(job.pid)
    assert len(workers) == 2
    workers[0].kill()
    _, stderr = job.communicate(timeout=60)
    assert job.returncode == 1, stderr.decode()
    lines = stderr.decode().strip().splitlines()
    assert lines[-1].startswith("sigma-arrow kafka: error: a worker process died"), lines
    assert "Traceback" not in stderr.decode()
    # Nothing past the last completed batch: the file holds exactly the committed offsets' matches.
    offsets = committed(kafka_broker, "crash", produced)
    assert sum(offsets.values()) < produced.messages
    assert sorted(file_keys(out_file)) == matches_of_committed(engine, produced, offsets)

    rerun = subprocess.run(args, env=cli_env(), stderr=subprocess.PIPE, timeout=120, check=False)
    assert rerun.returncode == 0, rerun.stderr.decode()
    assert sorted(file_keys(out_file)) == matches_of_committed(engine, produced, produced.ends)
    assert committed(kafka_broker, "crash", produced) == produced.ends


@pytest.mark.kafka
def test_workers_give_the_same_outputs_and_offsets_as_one_process(
    kafka_broker: TansuBroker, engine: Engine, tmp_path: Path
) -> None:
    produced = produce(kafka_broker, "same-in", 2000, 3, group_every=10)
    producer = Producer({"bootstrap.servers": kafka_broker.bootstrap})
    bad = [value for value, _ in BAD_MESSAGES] + [None]  # None: a tombstone
    for n, value in enumerate(bad):
        producer.produce("same-in", value=value, key=b"bad%d" % n, partition=n % 3)
    producer.flush(30)
    ends = dict(produced.ends)
    for n in range(len(bad)):
        ends[n % 3] += 1
    runs = {}
    for workers in (1, 2):
        kafka_broker.create_topics({f"same-out-{workers}": 1, f"same-dlq-{workers}": 1})
        config = KafkaJobConfig(
            kafka_broker.bootstrap,
            ("same-in",),
            f"same-{workers}",
            output_topic=f"same-out-{workers}",
            dlq_topic=f"same-dlq-{workers}",
            output_file=str(tmp_path / f"{workers}.jsonl"),
            max_batch=150,
            workers=workers,
        )
        summary = run_kafka_job(config, engine)
        assert summary.workers == workers
        output = read_topic(kafka_broker, f"same-out-{workers}")
        dead = read_topic(kafka_broker, f"same-dlq-{workers}")
        runs[workers] = (
            (summary.messages, summary.events, summary.matches, summary.dlq, summary.lag_end),
            sorted((key, value) for key, value, _ in output),
            sorted((key, value, tuple(headers)) for key, value, headers in dead),
            sorted((tmp_path / f"{workers}.jsonl").read_bytes().splitlines()),
            committed(kafka_broker, f"same-{workers}", produced),
        )
        assert runs[workers][-1] == ends
        assert sorted(keys_of(output)) == sorted(expected_keys(engine, produced))
        assert summary.dlq == len(bad)
    assert runs[1] == runs[2]


TASK_VALUES = [
    [b'{"a": 1}', b"", None, b"\xff\x00 raw", b'{"b": "x"}'],
    [None],
    [b"only"],
]


@pytest.mark.parametrize("through", ["memfd", "pipe"])
@pytest.mark.parametrize("values", TASK_VALUES)
def test_worker_task_carries_values_exactly(values: list[bytes | None], through: str) -> None:
    """What a worker rebuilds from a hand-off is the batch's values, tombstones included."""
    from sigma_arrow.kafka.parallel import _Task

    lengths = np.array([-1 if v is None else len(v) for v in values], dtype=np.int64).tobytes()
    data = b"".join(v for v in values if v is not None)
    common = {
        "lengths": lengths,
        "source_names": ("t:0", "t:1"),
        "source_codes": np.array([n % 2 for n in range(len(values))], dtype=np.int32).tobytes(),
        "offsets": np.arange(len(values), dtype=np.int64).tobytes(),
    }
    if through == "pipe":
        task = _Task(blob=data, **common)  # type: ignore[arg-type]
        assert task.values() == values
    else:
        number = os.memfd_create("test")
        try:
            os.pwrite(number, data, 0)
            task = _Task(memfd=(os.getpid(), number, len(data)), **common)  # type: ignore[arg-type]
            assert task.values() == values
        finally:
            os.close(number)
    assert task.sources().to_pylist() == [f"t:{n % 2}" for n in range(len(values))]


def test_workers_setting_is_checked() -> None:
    with pytest.raises(Exception, match="--workers"):
        KafkaJobConfig("b:9092", ("t",), "g", workers=-1)


@pytest.mark.kafka
@pytest.mark.parametrize("workers", ["1", "2"])
def test_sigterm_finishes_the_batch_commits_and_exits_0(
    kafka_broker: TansuBroker, engine: Engine, rules_dir: Path, tmp_path: Path, workers: str
) -> None:
    topic, group = f"term-in-{workers}", f"term-{workers}"
    produced = produce(kafka_broker, topic, 3000, 2)
    out_file = tmp_path / "matches.jsonl"
    args = cli(
        "-b",
        kafka_broker.bootstrap,
        "-t",
        topic,
        "-g",
        group,
        "-r",
        str(rules_dir),
        "-o",
        str(out_file),
        "--max-batch",
        "10",
        "--until",
        "5m",
        "--workers",
        workers,
    )
    job = subprocess.Popen(args, env=cli_env(), stderr=subprocess.PIPE)
    wait_for_commit(kafka_broker, group, produced, job)
    job.send_signal(signal.SIGTERM)
    _, stderr = job.communicate(timeout=60)
    assert job.returncode == 0, stderr.decode()
    assert b"stopped by signal" in stderr
    # The file holds exactly the matches of the committed offsets: nothing more, nothing less, no
    # duplicates; with workers, the batches in flight at the signal were finished and committed too.
    offsets = committed(kafka_broker, group, produced)
    assert sorted(file_keys(out_file)) == matches_of_committed(engine, produced, offsets)
    assert 0 < sum(offsets.values()) <= len(produced.coordinates)


@pytest.mark.kafka
def test_two_instances_split_the_partitions(
    kafka_broker: TansuBroker, engine: Engine, rules_dir: Path
) -> None:
    produced = produce(kafka_broker, "split-in", 4000, 4)
    kafka_broker.create_topics({"split-out": 1})
    args = cli(
        "-b",
        kafka_broker.bootstrap,
        "-t",
        "split-in",
        "-g",
        "split",
        "-r",
        str(rules_dir),
        "--output-topic",
        "split-out",
        "--max-batch",
        "50",
    )
    jobs = [subprocess.Popen(args, env=cli_env(), stderr=subprocess.PIPE) for _ in range(2)]
    results = [job.communicate(timeout=120) for job in jobs]
    for job, (_, stderr) in zip(jobs, results, strict=True):
        assert job.returncode == 0, stderr.decode()
    # Each instance prints how many messages it processed; together at least all of them (more only
    # when a rebalance handed over a partition whose last batch was not committed yet).
    processed = [
        int(re.search(rb"kafka: ([\d,]+) messages", stderr).group(1).replace(b",", b""))
        for _, stderr in results
    ]
    assert sum(processed) >= produced.messages
    output = keys_of(read_topic(kafka_broker, "split-out"))
    assert set(output) == expected_keys(engine, produced)  # duplicates only from rebalancing, deduped by key
    assert committed(kafka_broker, "split", produced) == produced.ends
