"""Kafka job end to end: events on a local Tansu topic → whole SigmaHQ corpus → matches on a topic.

    python bench/kafka_bench.py [--data realistic|attack|samples] [--events 1000000] [--partitions 4]
                                [--instances 1,2] [--workers 1,2] [--max-batch N]
                                [--output topic|file|none] [--no-event] [--shape flat|evtx]

Data (``--data``), one JSON event per message:

* ``realistic`` (default): the benchmark harness's realistic lane (bench/datasets.py: a Windows host's
  channel mix of perturbed real events, ~0.1 % of them matching a rule), its first ``--events`` lines;
* ``attack``: the harness's attack lane (every EVTX attack-sample and regression event, cycling; ~19 %
  match);
* ``samples``: the 8,255 records of ../shared/data/evtx-attack-samples, flattened (``--shape flat``)
  or as the nested EVTX JSON the ``evtx`` package prints (``--shape evtx``), repeated.

The lane files are reused from bench/data when a cached one holds enough rows (any flattening key),
else built (seeded, so reproducible). The job reads the topic with the SigmaHQ rules,
rules-emerging-threats and rules-threat-hunting (windows logsource map) and writes the matches
transactionally to an output topic. For each entry of ``--instances`` and of ``--workers`` (worker
processes per member: 1 = the member decodes and evaluates itself, 0 = one per core) it runs that many
job processes in one fresh consumer group over the same topic and prints the aggregate rate (events /
wall time from the first partition assignment to the last member's end, and including the join), the
CPU seconds of the job processes (members and their workers) and of the broker, the summed peak RSS,
and each member's time split (consume / decode / engine / output+commit; with workers, the member's
own consume / hand-off / wait / output+commit and the workers' decode / engine / encode). The broker
runs on the same machine, so it competes for the cores; the consume-only line shows what the broker
alone delivers here.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import multiprocessing
import re
import resource
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import psutil
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

PROJECT = Path(__file__).resolve().parents[1]
SHARED = PROJECT.parent / "shared"
DATA = PROJECT / "bench" / "data"
sys.path[:0] = [str(PROJECT), str(PROJECT / "tests"), str(PROJECT / "bench")]

from kafka_broker import TansuBroker  # noqa: E402

from sigma_arrow.engine import Engine  # noqa: E402
from sigma_arrow.kafka import KafkaJobConfig, parse_client_settings, run_kafka_job  # noqa: E402
from sigma_arrow.kafka.config import DEFAULT_MAX_BATCH  # noqa: E402
from sigma_arrow.kafka.decode import decode_messages, restore_coordinates  # noqa: E402
from sigma_arrow.kafka.output import MatchSet  # noqa: E402
from sigma_arrow.kafka.parallel import peak_rss  # noqa: E402
from sigma_arrow.loader import load_rules  # noqa: E402

CORES = psutil.cpu_count() or 1
#: librdkafka's informational logs (e.g. at producer shutdown) would clutter the figures.
QUIET = logging.getLogger("kafka_bench.librdkafka")
QUIET.addHandler(logging.NullHandler())
QUIET.propagate = False
RULE_DIRS = [SHARED / "sigma" / name for name in ("rules", "rules-emerging-threats", "rules-threat-hunting")]


def sample_values(shape: str) -> list[bytes]:
    """One JSON message value per EVTX record of the attack samples."""
    from evtx import PyEvtxParser

    from sigma_arrow.flatten import flatten_record

    values = []
    for path in sorted((SHARED / "data" / "evtx-attack-samples").rglob("*.evtx")):
        try:
            for record in PyEvtxParser(str(path)).records_json():
                document = orjson.loads(record["data"])
                values.append(orjson.dumps(flatten_record(document) if shape == "flat" else document))
        except (OSError, RuntimeError):
            continue
    return values


def lane_values(lane: str, events: int) -> tuple[list[bytes], str]:
    """The first ``events`` lines of a harness lane's NDJSON (a cached file if one is big enough)."""
    pattern = re.compile(rf"{lane}-(\d+)-[0-9a-f]{{10}}\.ndjson")
    cached = sorted(
        (int(found.group(1)), path)
        for path in DATA.glob(f"{lane}-*.ndjson")
        if (found := pattern.fullmatch(path.name)) and int(found.group(1)) >= events
    )
    if cached:
        path = cached[0][1]
    else:
        import datasets

        path = datasets.build([lane], events, log=lambda line: print(line, file=sys.stderr))[lane].ndjson
    with path.open("rb") as lines:
        return [line.rstrip(b"\n") for line in itertools.islice(lines, events)], path.name


def produce(broker: TansuBroker, topic: str, values: list[bytes], events: int, partitions: int) -> float:
    producer = Producer(
        {
            "bootstrap.servers": broker.bootstrap,
            "linger.ms": 50,
            "batch.num.messages": 10_000,
            "queue.buffering.max.messages": 1_000_000,
            "queue.buffering.max.kbytes": 2_097_151,
        },
        logger=QUIET,
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


def consume_only(config: KafkaJobConfig, partitions: int) -> tuple[int, float]:
    """Read the whole topic with the job's consumer settings and nothing else: the broker's ceiling."""
    consumer = Consumer({**config.consumer_config(), "group.id": "bench-consume-only"})
    consumer.assign([TopicPartition(config.topics[0], p, 0) for p in range(partitions)])
    messages, at_end = 0, set()
    started = time.perf_counter()
    while len(at_end) < partitions:
        for message in consumer.consume(config.batch_limit, 0.5):
            error = message.error()
            if error is None:
                messages += 1
            elif error.code() == KafkaError._PARTITION_EOF:
                at_end.add(message.partition())
    seconds = time.perf_counter() - started
    consumer.close()
    return messages, seconds


def load() -> str:
    """The 1-minute load average (other work on this machine skews every rate above)."""
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "?"


def member(config: KafkaJobConfig, ready: Any, results: Any) -> None:
    """One member of the job's consumer group, in its own process (its workers are its children)."""
    engine = Engine(load_rules(RULE_DIRS))
    ready.wait()
    started = time.monotonic()
    cpu = time.process_time()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    summary = run_kafka_job(config, engine).as_dict()
    summary["member_cpu"] = time.process_time() - cpu
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the workers, joined when the job ends
    summary["cpu"] = (
        summary["member_cpu"] + (after.ru_utime + after.ru_stime) - (children.ru_utime + children.ru_stime)
    )
    summary["started_at"] = started
    summary["member_rss"] = peak_rss()  # not ru_maxrss: it counts this bench's own size (fork)
    summary["max_rss"] = summary["member_rss"] + summary["worker_peak_rss"]
    results.put(summary)


def run_group(config: KafkaJobConfig, instances: int) -> list[dict[str, Any]]:
    """Run ``instances`` job processes in one consumer group until they all reach the end."""
    context = multiprocessing.get_context("spawn")
    ready = context.Barrier(instances + 1)
    results = context.Queue()
    processes = [context.Process(target=member, args=(config, ready, results)) for _ in range(instances)]
    for process in processes:
        process.start()
    ready.wait()
    summaries = [results.get() for _ in processes]
    for process in processes:
        process.join()
    return summaries


def broker_cpu(broker: TansuBroker) -> float:
    """CPU seconds the broker process has used so far."""
    assert broker.process is not None
    times = psutil.Process(broker.process.pid).cpu_times()
    return float(times.user + times.system)


def report(instances: int, summaries: list[dict[str, Any]], broker_seconds: float) -> float:
    """Print the group's aggregate rate and each member's split; return the aggregate rate."""
    joined = min(s["started_at"] + s["join_seconds"] for s in summaries)
    first_start = min(s["started_at"] for s in summaries)
    ended = max(s["started_at"] + s["seconds"] for s in summaries)
    events = sum(s["events"] for s in summaries)
    matches = sum(s["matches"] for s in summaries)
    rate = events / (ended - joined)
    workers = summaries[0]["workers"]
    print(
        f"{instances} member(s) x {workers} worker(s): {events:,} events, {matches:,} matches, "
        f"{sum(s['dlq'] for s in summaries)} undecodable: "
        f"{rate:,.0f} events/s after the group join "
        f"({events / (ended - first_start):,.0f} events/s including the {joined - first_start:.1f} s join); "
        f"load {load()}"
    )
    job_cpu = sum(s["cpu"] for s in summaries)
    per_event = (job_cpu + broker_seconds) / events
    print(
        f"  CPU: {job_cpu:.1f} s in the job process(es) + {broker_seconds:.1f} s in the broker = "
        f"{per_event * 1e6:.1f} us per event, so at most {CORES / per_event:,.0f} events/s on "
        f"{CORES} idle cores; peak RSS summed over all job processes "
        f"{sum(s['max_rss'] for s in summaries) / 2**30:.2f} GiB"
    )
    start_cpu = sum(s["worker_start_seconds"] for s in summaries)
    if start_cpu:
        steady = (job_cpu - start_cpu + broker_seconds) / events
        print(
            f"  without the workers' start-up ({start_cpu:.1f} s CPU, during the group join): "
            f"{steady * 1e6:.1f} us per event, at most {CORES / steady:,.0f} events/s on {CORES} idle cores"
        )
    for number, s in enumerate(summaries):
        busy = s["seconds"] - s["join_seconds"]
        print(
            f"  member {number}: {s['events']:,} events in {s['batches']} batches "
            f"(partitions {', '.join(sorted(s['partitions']))}), {s['events'] / busy:,.0f} events/s, "
            f"{s['cpu']:.1f} s CPU ({s['member_cpu']:.1f} s in the member) for {busy:.1f} s busy, "
            f"peak RSS {s['max_rss'] / 2**30:.2f} GiB ({s['member_rss'] / 2**30:.2f} GiB in the member)"
        )
        if s["workers"] > 1:
            parts = (
                ("consume", s["consume_seconds"]),
                ("hand-off", s["handoff_seconds"]),
                ("wait for workers", s["wait_seconds"]),
                ("output+commit", s["output_seconds"]),
            )
            print("    member: " + ", ".join(f"{name} {seconds:.2f} s" for name, seconds in parts))
            parts = (
                ("decode", s["decode_seconds"]),
                ("engine", s["engine_seconds"]),
                ("encode", s["encode_seconds"]),
                ("CPU on batches", s["worker_cpu_seconds"]),
                ("CPU starting", s["worker_start_seconds"]),
            )
            print("    workers (summed): " + ", ".join(f"{name} {seconds:.2f} s" for name, seconds in parts))
            continue
        other = (
            busy
            - s["consume_seconds"]
            - s["decode_seconds"]
            - s["engine_seconds"]
            - s["encode_seconds"]
            - s["output_seconds"]
        )
        parts = (
            ("consume", s["consume_seconds"]),
            ("decode", s["decode_seconds"]),
            ("engine", s["engine_seconds"]),
            ("encode", s["encode_seconds"]),
            ("output+commit", s["output_seconds"]),
            ("other", other),
        )
        print("    " + ", ".join(f"{name} {seconds:.2f} s" for name, seconds in parts))
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", choices=("realistic", "attack", "samples"), default="realistic")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--instances", default="1,2", help="comma-separated group sizes to run, in order")
    parser.add_argument(
        "--workers", default="1", help="comma-separated worker processes per member (0: one per core)"
    )
    parser.add_argument("--max-batch", type=int, default=None, help="default: the job's (by workers)")
    parser.add_argument("--shape", choices=("flat", "evtx"), default="flat", help="--data samples only")
    parser.add_argument("--no-event", action="store_true", help="leave the event out of match records")
    parser.add_argument("--output", choices=("topic", "file", "none"), default="topic")
    parser.add_argument("-X", dest="settings", action="append", default=[], help="librdkafka key=value")
    parser.add_argument("--skip-stages", action="store_true", help="skip the per-stage CPU measurement")
    args = parser.parse_args()
    sizes = [int(n) for n in args.instances.split(",")]
    worker_counts = [int(n) for n in args.workers.split(",")]

    if args.data == "samples":
        values, origin = sample_values(args.shape), f"evtx-attack-samples ({args.shape})"
    else:
        values, origin = lane_values(args.data, args.events)
    size = sum(len(v) for v in values) / len(values)
    print(f"events: {args.events:,} from {origin}: {len(values):,} distinct lines, {size:.0f} B avg")
    started = time.perf_counter()
    rules = load_rules(RULE_DIRS)
    print(
        f"rules: {len(rules)} loaded, {len(rules.errors)} not usable ({time.perf_counter() - started:.1f} s)"
    )

    broker = TansuBroker().start()
    try:
        broker.create_topics({"events": args.partitions, "matches": args.partitions})
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
            client_config=parse_client_settings(args.settings),
        )
        messages, seconds = consume_only(config, args.partitions)
        print(f"consume only (no decode, no rules): {messages / seconds:,.0f} msgs/s")
        print(
            f"job settings: --max-batch {args.max_batch or 'default'}, --workers {args.workers}, "
            f"output {args.output}, "
            f"event {not args.no_event}, -X {' '.join(args.settings) or '(none)'}"
        )
        for instances, workers in itertools.product(sizes, worker_counts):
            group = replace(config, group=f"bench-{instances}-{time.time_ns()}", workers=workers)
            before = broker_cpu(broker)
            summaries = run_group(group, instances)
            report(instances, summaries, broker_cpu(broker) - before)
    finally:
        broker.stop()
    if not args.skip_stages:
        batch = args.max_batch or DEFAULT_MAX_BATCH
        stage_cpu(Engine(rules), values, min(batch, args.events), not args.no_event)


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
