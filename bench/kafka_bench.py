"""Kafka job end to end: EVTX-derived events on a local Tansu topic → whole SigmaHQ corpus → matches.

    python bench/kafka_bench.py [--events 200000] [--partitions 4] [--shape flat|evtx] [--no-event]
                                [--max-batch 50000] [--output topic|file|none] [--instances N]

Events are the 8,255 records of ../shared/data/evtx-attack-samples, flattened (``--shape flat``, one
flat JSON object per message, as a log shipper would send them) or as the nested EVTX JSON the ``evtx``
package prints (``--shape evtx``), repeated up to ``--events``. The job reads them with the SigmaHQ
rules, rules-emerging-threats and rules-threat-hunting (windows logsource map) and writes the matches
transactionally to an output topic. Prints produce rate, job rate (with and without the group join)
and where the job's time went (decode / engine / output+commit / consume+other).
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Producer
from evtx import PyEvtxParser

PROJECT = Path(__file__).resolve().parents[1]
SHARED = PROJECT.parent / "shared"
sys.path[:0] = [str(PROJECT), str(PROJECT / "tests")]

from kafka_broker import TansuBroker  # noqa: E402

from sigma_arrow.engine import Engine  # noqa: E402
from sigma_arrow.flatten import flatten_record  # noqa: E402
from sigma_arrow.kafka import KafkaJobConfig, run_kafka_job  # noqa: E402
from sigma_arrow.kafka.decode import decode_messages, restore_coordinates  # noqa: E402
from sigma_arrow.kafka.output import MatchSet  # noqa: E402
from sigma_arrow.loader import load_rules  # noqa: E402

RULE_DIRS = [SHARED / "sigma" / name for name in ("rules", "rules-emerging-threats", "rules-threat-hunting")]


def evtx_values(shape: str) -> list[bytes]:
    """One JSON message value per EVTX record of the attack samples."""
    values = []
    for path in sorted((SHARED / "data" / "evtx-attack-samples").rglob("*.evtx")):
        try:
            for record in PyEvtxParser(str(path)).records_json():
                document = orjson.loads(record["data"])
                values.append(orjson.dumps(flatten_record(document) if shape == "flat" else document))
        except (OSError, RuntimeError):
            continue
    return values


def produce(broker: TansuBroker, topic: str, values: list[bytes], events: int, partitions: int) -> float:
    producer = Producer(
        {
            "bootstrap.servers": broker.bootstrap,
            "linger.ms": 50,
            "batch.num.messages": 10_000,
            "queue.buffering.max.messages": 1_000_000,
            "queue.buffering.max.kbytes": 2_097_151,
        }
    )
    started = time.perf_counter()
    for i in range(events):
        while True:
            try:
                producer.produce(topic, value=values[i % len(values)], partition=i % partitions)
                break
            except BufferError:
                producer.poll(0.1)
    producer.flush(120)
    return time.perf_counter() - started


def load() -> str:
    """The 1-minute load average (other work on this machine skews every rate above)."""
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "?"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--max-batch", type=int, default=50_000)
    parser.add_argument("--shape", choices=("flat", "evtx"), default="flat")
    parser.add_argument("--no-event", action="store_true", help="leave the event out of match records")
    parser.add_argument("--output", choices=("topic", "file", "none"), default="topic")
    parser.add_argument("--instances", type=int, default=1, help="job processes in one consumer group")
    args = parser.parse_args()

    started = time.perf_counter()
    rules = load_rules(RULE_DIRS)
    engine = Engine(rules)
    print(
        f"rules: {len(rules)} loaded, {len(rules.errors)} not usable ({time.perf_counter() - started:.1f} s)"
    )
    values = evtx_values(args.shape)
    size = sum(len(v) for v in values) / len(values)
    print(
        f"events: {len(values):,} EVTX records ({args.shape}, {size:.0f} B avg) repeated to {args.events:,}"
    )

    broker = TansuBroker().start()
    try:
        broker.create_topics({"events": args.partitions, "matches": 1})
        seconds = produce(broker, "events", values, args.events, args.partitions)
        print(f"produce: {args.events / seconds:,.0f} msgs/s ({seconds:.1f} s, {args.partitions} partitions)")
        config = KafkaJobConfig(
            broker.bootstrap,
            ("events",),
            "bench",
            output_topic="matches" if args.output == "topic" else None,
            output_file="/dev/null" if args.output == "file" else None,
            max_batch=args.max_batch,
            include_event=not args.no_event,
        )
        if args.output == "none":
            config = replace(config, output_file=None)
        context = multiprocessing.get_context("spawn")
        ready = context.Barrier(args.instances)
        results = context.Queue()
        others = [
            context.Process(target=other_instance, args=(config, ready, results))
            for _ in range(args.instances - 1)
        ]
        for process in others:
            process.start()
        ready.wait()
        cpu = time.process_time()
        summary = run_kafka_job(config, engine)
        cpu = time.process_time() - cpu
        summaries = [summary.as_dict(), *(results.get() for _ in others)]
        for process in others:
            process.join()
    finally:
        broker.stop()
    if args.instances > 1:
        busiest = max(s["seconds"] - s["join_seconds"] for s in summaries)
        total = sum(s["events"] for s in summaries)
        for number, other in enumerate(summaries):
            print(
                f"instance {number}: {other['events']:,} events, partitions {', '.join(other['partitions'])}"
            )
        rate = total / busiest
        print(f"{args.instances} instances: {total:,} events, {rate:,.0f} events/s after the group join")

    busy = summary.seconds - summary.join_seconds
    other = busy - summary.decode_seconds - summary.engine_seconds - summary.output_seconds
    print(f"job settings: --max-batch {args.max_batch}, output {args.output}, event {not args.no_event}")
    print(
        f"job: {summary.messages:,} messages, {summary.events:,} events, {summary.matches:,} matches, "
        f"{summary.dlq} undecodable, {summary.batches} batches"
    )
    print(
        f"job rate: {summary.events / busy:,.0f} events/s after the group join "
        f"({summary.events / summary.seconds:,.0f} events/s including the {summary.join_seconds:.1f} s join)"
    )
    print(
        f"job CPU: {cpu:.1f} s of this process (all threads) for {busy:.1f} s busy wall time; load {load()}"
    )
    for name, part in (
        ("decode", summary.decode_seconds),
        ("engine", summary.engine_seconds),
        ("output+commit", summary.output_seconds),
        ("consume+other", other),
    ):
        share = 100 * part / busy
        print(f"  {name:<14} {part:6.2f} s  {share:5.1f} %  ({summary.events / part:>12,.0f} events/s)")
    stage_cpu(engine, values, min(args.max_batch, args.events), not args.no_event)


def other_instance(config: KafkaJobConfig, ready: Any, results: Any) -> None:
    """One more member of the job's consumer group (``--instances``), in its own process."""
    engine = Engine(load_rules(RULE_DIRS))
    ready.wait()
    results.put(run_kafka_job(config, engine).as_dict())


def stage_cpu(engine: Engine, values: list[bytes], batch_size: int, include_event: bool) -> None:
    """CPU seconds of each stage on one batch, in this process: the per-core ceiling whatever the load."""
    sample = [values[i % len(values)] for i in range(batch_size)]
    offsets = list(range(batch_size))
    started = time.process_time()
    decoded = decode_messages(sample, ["events:0"] * batch_size, offsets)
    decoded_at = time.process_time()
    assert decoded.batch is not None
    found = engine.matches(decoded.batch, include_event=False)
    evaluated_at = time.process_time()
    records, rows, sub_index = restore_coordinates(found, decoded)
    match_set = MatchSet(records, rows, sub_index, decoded.batch if include_event else None)
    payloads = match_set.payloads()
    keys = match_set.message_keys()
    done = time.process_time()
    print(f"stage CPU on one {batch_size:,}-event batch ({len(payloads):,} matches, {len(keys):,} keys):")
    for name, seconds in (
        ("decode", decoded_at - started),
        ("engine", evaluated_at - decoded_at),
        ("serialise", done - evaluated_at),
        ("all three", done - started),
    ):
        print(f"  {name:<10} {seconds:6.2f} s CPU  ({batch_size / seconds:>10,.0f} events per CPU-second)")


if __name__ == "__main__":
    main()
