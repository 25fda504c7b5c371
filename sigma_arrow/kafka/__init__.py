"""Kafka topics as bounded, resumable batch jobs: decode, evaluate, write matches, commit offsets.

```python
from sigma_arrow.kafka import KafkaJobConfig, Until, run_kafka_job
config = KafkaJobConfig("localhost:9092", ("winlogs",), "hunt", output_topic="matches", dlq_topic="dlq",
                        workers=0)  # 0: a worker process per core (default 1: this process)
summary = run_kafka_job(config, sa.Engine(rules))
```
"""

from __future__ import annotations

from sigma_arrow.kafka.config import KafkaJobConfig, Until, parse_client_settings
from sigma_arrow.kafka.job import DLQ_HEADERS, KafkaJobError, KafkaJobSummary, run_kafka_job
from sigma_arrow.kafka.parallel import MatchEngine

__all__ = [
    "DLQ_HEADERS",
    "KafkaJobConfig",
    "KafkaJobError",
    "KafkaJobSummary",
    "MatchEngine",
    "Until",
    "parse_client_settings",
    "run_kafka_job",
]
