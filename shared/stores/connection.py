"""Redis connections for bot, workers and RQ: a URL (``redis://``, ``rediss://`` for TLS, ``unix://``), the embedded
server when no URL is set, or a Sentinel-managed primary that clients follow through a failover.

Sentinel (``REDIS_SENTINELS`` and ``REDIS_SENTINEL_MASTER``): connections come from
``redis.sentinel.Sentinel(...).master_for(...)``, whose pool asks the sentinels for the primary's address whenever
it opens a connection, and drops a connection that finds itself on a demoted primary (READONLY). ``REDIS_URL``, if
set, then only gives the scheme (``rediss`` turns TLS on, for the data nodes and the sentinels), the user, password
and database; its host is ignored. Responses stay bytes (``decode_responses=False``), as RQ needs.

Why a retry policy bounded in time (``FailoverRetry``): between the primary's death and the promotion of a replica
(the sentinels' down-after-milliseconds plus an election, a few seconds), every command fails. redis-py's stock retry
gives up after 3 quick tries, and RQ's worker loop quits on a connection error outside its dequeue, so a worker, its
job heartbeat thread or the bot would stop or lose the write. With Sentinel, each command is retried with a short
back-off, re-asking the sentinels each time, for ``REDIS_FAILOVER_WAIT_S``; plain URLs keep redis-py's defaults (a
single server has no failover to wait for). A retried write applies twice if the old primary ran it, passed it to
the replica and died before answering (a window of microseconds): most writes on our paths set job-keyed state and
are harmless twice, but a queue push would list the job id twice and the job could run twice. Not handled here.

Why ``wait_for_replica``: replication is asynchronous, so an enqueue the old primary acknowledged but had not yet
sent to the replica is lost by a failover. Calling it after an enqueue (Redis ``WAIT 1 <REDIS_REPLICA_WAIT_MS>``)
makes the acknowledgement mean "on two nodes" at the cost of one round trip to the replica (well under a millisecond
on a LAN). A replica that does not answer in time is logged, not raised: the enqueue stands, with the old guarantee.
"""

from __future__ import annotations

import atexit
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import unquote, urlparse

import redis
from redis.backoff import ExponentialBackoff
from redis.connection import SSLConnection
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelManagedConnection
from redis.utils import SENTINEL

from shared import defaults
from shared.keys import keys_for
from shared.settings import Settings
from shared.stores.redis_server import EmbeddedRedis

log = logging.getLogger(__name__)

T = TypeVar("T")

_embedded: dict[str, EmbeddedRedis] = {}
"""Embedded servers this process started, by data folder (stopped at exit)."""

RETRY_BASE_S = 0.05
"""First back-off of a failover retry; doubled each try up to ``RETRY_CAP_S``."""

RETRY_CAP_S = 0.5
"""Longest back-off between two tries while a failover runs (the sentinels are re-asked each try)."""


def sentinel_configured(settings: Settings) -> bool:
    """Whether connections go through Redis Sentinel."""
    return bool(settings.redis_sentinels.strip())


def redis_url(settings: Settings) -> str:
    """The Redis URL in force: ``REDIS_URL``, else the embedded server's (started if needed). With Sentinel, the URL
    as given (maybe empty: the sentinels name the server), and no embedded server is started."""
    url = settings.redis_url.get_secret_value()
    if url or sentinel_configured(settings):
        return url
    key = str(settings.data_dir)
    if key not in _embedded:
        server = EmbeddedRedis(settings.data_dir)
        server.start()
        _embedded[key] = server
        atexit.register(server.stop)
    return _embedded[key].url


class FailoverRetry(Retry):
    """redis-py's ``Retry`` bounded by time instead of a count: connection errors and timeouts are retried until
    ``budget_s`` have passed since the first failure of a call (see the module doc). A connection's own connect
    retries with the same policy, so a command gives up after at most about twice ``budget_s``."""

    def __init__(self, budget_s: float) -> None:
        if budget_s <= 0:
            raise ValueError(f"REDIS_FAILOVER_WAIT_S must be > 0 seconds, got {budget_s}")
        super().__init__(ExponentialBackoff(cap=RETRY_CAP_S, base=RETRY_BASE_S), retries=-1)
        self.budget_s = budget_s

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, FailoverRetry) and other.budget_s == self.budget_s

    def __hash__(self) -> int:
        return hash(("FailoverRetry", self.budget_s))

    def call_with_retry(
        self,
        do: Callable[[], T],
        fail: Callable[..., Any],
        is_retryable: Callable[[Exception], bool] | None = None,
        with_failure_count: bool = False,
    ) -> T:
        self._backoff.reset()
        failures = 0
        deadline: float | None = None
        while True:
            try:
                return do()
            except self._supported_errors as error:
                if is_retryable is not None and not is_retryable(error):
                    raise
                failures += 1
                if with_failure_count:
                    fail(error, failures)
                else:
                    fail(error)
                now = time.monotonic()
                if deadline is None:
                    deadline = now + self.budget_s
                    log.warning("Redis unreachable (%s); retrying for up to %.0f s (failover?)", error, self.budget_s)
                if now >= deadline:
                    raise
                time.sleep(min(self._backoff.compute(failures), deadline - now))


class SentinelConnection(SentinelManagedConnection):
    """redis-py's Sentinel-managed connection, but one that closes itself when a read is interrupted.

    redis-py 8's ``SentinelManagedConnection.read_response`` defaults ``disconnect_on_error`` to False (plain
    connections default to True). An exception raised while a reply is awaited (RQ's warm shutdown raises
    ``StopRequested`` from its SIGTERM handler during the idle BLPOP; a job timeout raises in the job thread) then
    returns the connection to the pool with the reply still unread, and the next command on it reads that stale
    reply: the worker died on SIGTERM with "Wrong number of response items from pipeline execution" in its
    ``register_death`` pipeline (found by tests/test_sentinel_failover.py).
    """

    def read_response(
        self,
        disable_decoding: bool = False,
        *,
        timeout: float | object = SENTINEL,
        disconnect_on_error: bool | None = True,
        push_request: bool | None = False,
    ) -> Any:
        return super().read_response(
            disable_decoding=disable_decoding,
            timeout=timeout,
            disconnect_on_error=disconnect_on_error,
            push_request=push_request,
        )


class SentinelSSLConnection(SentinelConnection, SSLConnection):
    """``SentinelConnection`` over TLS."""


def tls_options(settings: Settings) -> dict[str, Any]:
    """redis-py keyword arguments of a TLS connection from the ``REDIS_TLS_*`` settings."""
    options: dict[str, Any] = {"ssl_cert_reqs": settings.redis_tls_cert_reqs}
    if settings.redis_tls_ca_file:
        options["ssl_ca_certs"] = settings.redis_tls_ca_file
    if settings.redis_tls_cert_file:
        options["ssl_certfile"] = settings.redis_tls_cert_file
    if settings.redis_tls_key_file:
        options["ssl_keyfile"] = settings.redis_tls_key_file
    return options


def connect(settings: Settings) -> redis.Redis:
    """A Redis connection for ``settings`` (bytes responses, as RQ needs): Sentinel's primary when sentinels are
    configured, else ``REDIS_URL`` (TLS for ``rediss://``), else the embedded server."""
    if sentinel_configured(settings):
        return connect_sentinel(settings)
    url = redis_url(settings)
    if urlparse(url).scheme == "rediss":
        # The URL's own query (?ssl_cert_reqs=...) wins over these, as redis-py's from_url does.
        return redis.Redis.from_url(url, health_check_interval=30, **tls_options(settings))
    return redis.Redis.from_url(url, health_check_interval=30)


def connect_sentinel(settings: Settings) -> redis.Redis:
    """The Sentinel-managed primary of ``REDIS_SENTINEL_MASTER`` (see the module doc)."""
    url = urlparse(settings.redis_url.get_secret_value())
    if url.scheme and url.scheme not in {"redis", "rediss"}:
        raise ValueError(
            f"with REDIS_SENTINELS, REDIS_URL must be redis:// or rediss:// (or empty), got {url.scheme}://"
        )
    tls = tls_options(settings) if url.scheme == "rediss" else {}
    node: dict[str, Any] = {
        "socket_connect_timeout": defaults.REDIS_CONNECT_TIMEOUT_S,
        "socket_keepalive": True,
        "health_check_interval": 30,
        "retry": FailoverRetry(settings.redis_failover_wait_s),
        "decode_responses": False,
    }
    if url.username:
        node["username"] = unquote(url.username)
    if url.password:
        node["password"] = unquote(url.password)
    database = url.path.strip("/")
    if database:
        if not database.isdigit():
            raise ValueError(f"REDIS_URL's database must be a number, got {database!r}")
        node["db"] = int(database)
    sentinel_options: dict[str, Any] = {
        "socket_timeout": defaults.REDIS_SENTINEL_SOCKET_TIMEOUT_S,
        "socket_connect_timeout": defaults.REDIS_SENTINEL_SOCKET_TIMEOUT_S,
        **({"ssl": True, **tls} if tls else {}),
    }
    if settings.redis_sentinel_password.get_secret_value():
        sentinel_options["password"] = settings.redis_sentinel_password.get_secret_value()
    sentinel = Sentinel(
        settings.sentinel_addresses, sentinel_kwargs=sentinel_options, **node, **({"ssl": True, **tls} if tls else {})
    )
    connection_class = SentinelSSLConnection if tls else SentinelConnection
    return sentinel.master_for(settings.redis_sentinel_master, connection_class=connection_class)


def wait_for_replica(connection: redis.Redis, settings: Settings) -> int | None:
    """With Sentinel: block until one replica holds every write made so far (``WAIT 1 REDIS_REPLICA_WAIT_MS``);
    returns how many replicas acknowledged, or None without Sentinel (or with ``REDIS_REPLICA_WAIT_MS=0``).

    WAIT covers the writes of the connection that sends it, and a pool may hand out another connection than the
    enqueue's; so a marker key is incremented first in the same pipeline (one connection): the replication offset
    is global, and replicas at or past the marker hold every write acknowledged before it.
    """
    if not sentinel_configured(settings) or settings.redis_replica_wait_ms <= 0:
        return None
    with connection.pipeline(transaction=False) as pipe:
        pipe.incr(keys_for(settings).replication_mark)
        pipe.execute_command("WAIT", 1, settings.redis_replica_wait_ms)
        _, acknowledged = pipe.execute()
    if int(acknowledged) < 1:
        log.warning(
            "no Redis replica acknowledged within REDIS_REPLICA_WAIT_MS=%d ms: a failover now may lose the last writes",
            settings.redis_replica_wait_ms,
        )
    return int(acknowledged)
