"""Every Redis key name of the system, spelled in this one module.

Our own keys live under the queue prefix (``settings.queue_prefix``, default ``imagine``). RQ's keys are built from
RQ's own class attributes (``Queue.redis_queue_namespace_prefix``, ``Job.key_for``, the registries' ``key_template``,
``Worker.redis_workers_keys``), never spelled here, so an RQ release that renames them changes them here too. A lane
is one RQ queue named ``<prefix>:<lane>``, so the prefix can be read back from any of our queues' names
(``Keys.of_queue``): code that RQ calls without our settings (callbacks, queues RQ builds itself) still finds every key.

A test (``tests/test_keys.py``) fails when another module spells a key.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache

from rq.executions import Execution
from rq.job import Job
from rq.queue import Queue
from rq.registry import StartedJobRegistry
from rq.results import Result
from rq.utils import parse_composite_key
from rq.worker import Worker

log = logging.getLogger(__name__)

RQ_JOB_PREFIX: str = Job.redis_job_namespace_prefix
"""RQ's job hash prefix (``rq:job:``): Lua scripts that read a job's hash get it as an argument."""

RQ_QUEUE_PREFIX: str = Queue.redis_queue_namespace_prefix
"""RQ's queue list prefix (``rq:queue:``): Lua scripts that push to a lane get it as an argument."""

RQ_WORKERS: str = Worker.redis_workers_keys
"""RQ's set of registered workers."""

JOB_MODEL_FIELD: str = "imagine_model"
"""Our field in RQ's job hash: the model key a job is routed by (set when it is queued; RQ ignores unknown fields
and deletes it with the job)."""


@dataclass(frozen=True)
class Keys:
    """The key names under one queue prefix. Build with ``keys_for(settings)`` or ``Keys.of_queue(name)``."""

    prefix: str

    def __post_init__(self) -> None:
        if not self.prefix or any(ch.isspace() for ch in self.prefix):
            raise ValueError(f"queue prefix must be a non-empty word without blanks, got {self.prefix!r}")

    @classmethod
    def of_queue(cls, queue_name: str) -> Keys:
        """The keys of the system that owns the RQ queue ``queue_name`` (``<prefix>:<lane>``)."""
        prefix, sep, lane = queue_name.rpartition(":")
        if not sep or not prefix or not lane:
            raise ValueError(f"queue name must be '<prefix>:<lane>', got {queue_name!r}")
        return cls(prefix)

    # -- RQ: lanes, jobs, registries, workers ------------------------------------------------------------------------

    def queue_name(self, lane: str) -> str:
        """The RQ queue name of ``lane``."""
        return f"{self.prefix}:{lane}"

    def lane_list(self, lane: str) -> str:
        """The Redis list RQ keeps ``lane``'s waiting job ids in."""
        return RQ_QUEUE_PREFIX + self.queue_name(lane)

    def started_registry(self, lane: str) -> str:
        """The sorted set of ``lane``'s running executions (RQ's started registry)."""
        return StartedJobRegistry.key_template.format(self.queue_name(lane))

    @staticmethod
    def job(job_id: str) -> str:
        """RQ's hash of job ``job_id``."""
        return Job.key_for(job_id)

    @staticmethod
    def job_results(job_id: str) -> str:
        """RQ's stream of job ``job_id``'s results."""
        return Result.get_key(job_id)

    @staticmethod
    def execution(composite_key: str) -> str:
        """RQ's hash of one execution (``<job id>:<execution id>``, as the started registry lists it)."""
        job_id, execution_id = parse_composite_key(composite_key)
        return Execution(execution_id, job_id, connection=None).key  # type: ignore[arg-type]  # key needs no Redis

    # -- queue control: limits, fair share, pause, cancel -----------------------------------------------------------

    @property
    def limits_queued(self) -> str:
        """Hash member -> jobs waiting."""
        return f"{self.prefix}:limits:queued"

    @property
    def limits_running(self) -> str:
        """Hash member -> jobs running (worker passes)."""
        return f"{self.prefix}:limits:running"

    @property
    def limits_owners(self) -> str:
        """Hash job id -> member, for every counted job."""
        return f"{self.prefix}:limits:owner"

    @property
    def limits_caps(self) -> str:
        """Hash member -> their running cap, written at enqueue (the dequeue script reads it)."""
        return f"{self.prefix}:limits:cap"

    @property
    def limits_active(self) -> str:
        """Set of job ids counted as running."""
        return f"{self.prefix}:limits:active"

    @property
    def limits_riders(self) -> str:
        """Set of job ids riding in another job's batch (not counted as running)."""
        return f"{self.prefix}:limits:riders"

    @property
    def limits_since(self) -> str:
        """Hash job id -> when its count last changed (reconcile's grace period)."""
        return f"{self.prefix}:limits:since"

    @property
    def limits_config(self) -> str:
        """Hash scope (``default``, ``role:<id>``) -> limits set by ``/limits set``."""
        return f"{self.prefix}:limits:config"

    @property
    def limits_reconciled(self) -> str:
        """Lock: present while one worker's reconcile is recent."""
        return f"{self.prefix}:limits:reconciled"

    @property
    def banned(self) -> str:
        """Hash member -> ban (reason, by, at) as JSON."""
        return f"{self.prefix}:banned"

    @property
    def paused(self) -> str:
        """Flag whose presence stops every worker taking new jobs (``/queue pause``)."""
        return f"{self.prefix}:paused"

    @property
    def fair_round(self) -> str:
        """Hash job id -> fair-share round of every waiting owned job."""
        return f"{self.prefix}:fair:round"

    def fair_last_round(self, lane_list: str) -> str:
        """Hash member -> round of their newest waiting job in the lane whose list is ``lane_list``."""
        return f"{self.prefix}:fair:last:{lane_list}"

    @property
    def fair_wake(self) -> str:
        """List every enqueue pushes a token onto, waking an idle worker blocked on it."""
        return f"{self.prefix}:fair:wake"

    def cancel(self, job_id: str) -> str:
        """Flag asking the worker running ``job_id`` to stop at its next denoising step."""
        return f"{self.prefix}:cancel:{job_id}"

    # -- throughput and the audit log ----------------------------------------------------------------------------------

    @property
    def eta_seconds(self) -> str:
        """Hash ``model|lane`` -> moving average of job seconds."""
        return f"{self.prefix}:eta:seconds"

    @property
    def eta_done(self) -> str:
        """Sorted set job id -> finish time of recently finished jobs."""
        return f"{self.prefix}:eta:done"

    @property
    def audit_events(self) -> str:
        """Stream of audit entries (admin actions, refusals, delivery failures, abandoned jobs)."""
        return f"{self.prefix}:audit:events"

    # -- results and delivery ------------------------------------------------------------------------------------------

    @property
    def image_prefix(self) -> str:
        """What every image key starts with (the Redis result store's Lua script evicts by it)."""
        return f"{self.prefix}:image:"

    def image(self, job_id: str, index: int) -> str:
        """PNG bytes of image ``index`` (0-based) of ``job_id``."""
        return f"{self.image_prefix}{job_id}:{index}"

    @property
    def record_prefix(self) -> str:
        """What every record key starts with."""
        return f"{self.prefix}:record:"

    def record(self, job_id: str) -> str:
        """A finished job's record (JSON)."""
        return f"{self.record_prefix}{job_id}"

    def result_pointer(self, job_id: str) -> str:
        """Where ``job_id``'s result lives (``shared.stores.results.Location`` as JSON)."""
        return f"{self.prefix}:result:{job_id}"

    @property
    def results_index(self) -> str:
        """Sorted set job id -> time its images were put in the Redis result store."""
        return f"{self.prefix}:results:index"

    @property
    def results_sizes(self) -> str:
        """Hash job id -> "bytes count" of its images in the Redis result store."""
        return f"{self.prefix}:results:sizes"

    @property
    def results_bytes(self) -> str:
        """PNG bytes the Redis result store holds now (checked against ``REDIS_RESULT_MAX_BYTES``)."""
        return f"{self.prefix}:results:bytes"

    @property
    def replication_mark(self) -> str:
        """A counter ``wait_for_replica`` increments, so its WAIT covers every earlier write of any connection."""
        return f"{self.prefix}:replication-mark"

    @property
    def results_swept(self) -> str:
        """Lock: present while one worker's retention sweep is recent."""
        return f"{self.prefix}:results:swept"

    @property
    def outbox(self) -> str:
        """Sorted set job id -> when the next re-delivery is due."""
        return f"{self.prefix}:outbox"

    @property
    def outbox_dead(self) -> str:
        """Sorted set of job ids whose re-delivery was given up."""
        return f"{self.prefix}:outbox:dead"

    def outbox_entry(self, job_id: str) -> str:
        """Hash of one undelivered result (record, attempts, last error)."""
        return f"{self.prefix}:outbox:job:{job_id}"

    def discord_posted(self, job_id: str) -> str:
        """The message id a job's result was posted as (posted at most once)."""
        return f"{self.prefix}:discord:posted:{job_id}"

    # -- members -----------------------------------------------------------------------------------------------------

    def member_settings(self, member: str) -> str:
        """A member's /settings and /prefer values (JSON)."""
        return f"{self.prefix}:member:{member}:settings"

    def member_jobs(self, member: str) -> str:
        """Sorted set of a member's recent job ids by creation time (/info, /cancel)."""
        return f"{self.prefix}:member:{member}:jobs"

    def member_made(self, member: str) -> str:
        """Counter of the jobs a member has made."""
        return f"{self.prefix}:member:{member}:made"

    def profile_likes(self, member: str) -> str:
        """Sorted set ``<job id>:<image index>`` -> when the member liked it (a star reaction): the ``--p`` profile."""
        return f"{self.prefix}:member:{member}:profile:likes"

    def profile_code(self, member: str) -> str:
        """The member's shareable profile code (``--p <code>``)."""
        return f"{self.prefix}:member:{member}:profile:code"

    def profile_vectors(self, member: str, encoder: str) -> str:
        """Hash ``<job id>:<image index>`` -> the liked image's embedding (float32 bytes) under image encoder
        ``encoder`` (a fingerprint), filled by workers as ``--p`` jobs need them."""
        return f"{self.prefix}:member:{member}:profile:vectors:{encoder}"

    def profile_owner(self, code: str) -> str:
        """The member whose profile code is ``code``."""
        return f"{self.prefix}:profile-code:{code}"

    def waiting_message(self, message_id: str) -> str:
        """The job whose "(Waiting to start)" message is ``message_id`` (reactions find it)."""
        return f"{self.prefix}:message:{message_id}:job"

    # -- the web companion's gallery index (shared/stores/gallery.py) --------------------------------------------------

    def gallery_member(self, member: str) -> str:
        """Sorted set job id -> creation time of a member's jobs with a stored result ("My images")."""
        return f"{self.prefix}:gallery:member:{member}"

    def gallery_text(self, member: str) -> str:
        """Hash job id -> the prompt's words in lower case, of a member's indexed jobs (prompt search)."""
        return f"{self.prefix}:gallery:text:{member}"

    @property
    def gallery_public(self) -> str:
        """Sorted set job id -> creation time of jobs stored while their member was public (the shared gallery)."""
        return f"{self.prefix}:gallery:public"

    def gallery_entry(self, job_id: str) -> str:
        """A job's gallery entry (JSON: owner, prompt, kind, size, visibility), kept as long as its result."""
        return f"{self.prefix}:gallery:job:{job_id}"

    def region_link_used(self, token_digest: str) -> str:
        """Flag: the Vary (Region) link whose token has this SHA-256 digest was submitted (a link queues one job)."""
        return f"{self.prefix}:web:region-used:{token_digest}"

    # -- server rules, allowances, the review queue ------------------------------------------------------------------

    @property
    def rules(self) -> str:
        """Hash scope (``default``, ``role:<id>``, ``channel:<id>``) -> the server rule of that scope (JSON)."""
        return f"{self.prefix}:rules"

    @property
    def rules_seeded(self) -> str:
        """Flag: the rules were filled from the ``[rules]`` section of the configuration once (it is the start)."""
        return f"{self.prefix}:rules:seeded"

    def allowance_jobs(self, period: str) -> str:
        """Hash member -> jobs counted against their allowance in the period that starts at ``period``."""
        return f"{self.prefix}:allowance:{period}:jobs"

    def allowance_gpu(self, period: str) -> str:
        """Hash member -> GPU-seconds counted against their allowance in the period that starts at ``period``."""
        return f"{self.prefix}:allowance:{period}:gpu"

    def allowance_charged(self, job_id: str) -> str:
        """Which allowance period job ``job_id`` was counted in (so a refund or a GPU charge finds it)."""
        return f"{self.prefix}:allowance:job:{job_id}"

    def review(self, job_id: str) -> str:
        """Hash of one result held for review (state, record, staff message, decision)."""
        return f"{self.prefix}:review:{job_id}"

    @property
    def reviews_pending(self) -> str:
        """Sorted set job id -> when it was held, of results waiting for a moderator."""
        return f"{self.prefix}:reviews:pending"

    # -- at scale: bot shards, Discord rate budgets, worker models -----------------------------------------------------

    @property
    def identify_turn(self) -> str:
        """Lock: present while one bot process's gateway IDENTIFY is recent (Discord's session start limit)."""
        return f"{self.prefix}:discord:identify"

    @property
    def discord_global(self) -> str:
        """Sorted set of the bot token's recent REST requests (id -> time), for its global budget."""
        return f"{self.prefix}:discord:global"

    def discord_bucket(self, route: str, major: str) -> str:
        """Sorted set of the recent requests (id -> time) of one Discord rate-limit bucket: ``route`` (post, edit,
        delete) of the top-level resource ``major`` (a channel id)."""
        return f"{self.prefix}:discord:bucket:{route}:{major}"

    def discord_edit_wants(self, channel_id: str) -> str:
        """Sorted set of a channel's messages waiting for an edit (message id -> rank: priority, then last edit)."""
        return f"{self.prefix}:discord:wants:{channel_id}"

    def discord_edit_asked(self, channel_id: str) -> str:
        """Sorted set of a channel's waiting messages -> when they last asked (one that stops asking leaves)."""
        return f"{self.prefix}:discord:asked:{channel_id}"

    def discord_edit_granted(self, channel_id: str) -> str:
        """Sorted set of a channel's messages -> when they were last edited (the least recently shown goes first)."""
        return f"{self.prefix}:discord:granted:{channel_id}"

    @property
    def worker_models(self) -> str:
        """Hash worker name -> the models and families it serves and holds, with the time of the announcement (JSON)."""
        return f"{self.prefix}:workers:models"


@lru_cache(maxsize=16)
def keys_of_prefix(prefix: str) -> Keys:
    """The (cached) ``Keys`` of ``prefix``."""
    return Keys(prefix)


def keys_for(settings: object) -> Keys:
    """The keys of ``settings.queue_prefix`` (any object with that attribute: ``Settings``, a test's stand-in)."""
    prefix = getattr(settings, "queue_prefix", None)
    if not isinstance(prefix, str):
        raise ValueError(f"settings must have a str queue_prefix, got {prefix!r}")
    return keys_of_prefix(prefix)
