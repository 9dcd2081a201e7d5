"""Every constant and default of the system, each with one line of doc.

Settings (``shared.settings``) take their defaults from here; code that needs a fixed number imports it from here.
"""

from __future__ import annotations

from pathlib import Path

PROJECT_ROOT: Path = Path(__file__).resolve().parents[1]
"""The checkout (or installed tree) root; relative paths in settings are resolved against it."""

CONFIG_FILE: Path = PROJECT_ROOT / "config" / "imagine.toml"
"""The TOML file that settings read under environment variables (override with IMAGINE_CONFIG)."""

DEFAULT_MODEL: str = "models/imagine-shapes"
"""The embedded default model: the small text-to-image model trained in this repo (diffusers layout)."""

DATA_DIR: str = ".imagine"
"""Folder for the embedded Redis (its append-only file and socket) and the shared image store."""

OUTPUT_DIR: str = "outputs"
"""Folder where the local publisher writes outputs/<job_id>/grid.png, the four images and job.json."""

QUEUE_PREFIX: str = "imagine"
"""Prefix of every Redis key and RQ queue name this system owns."""

LANES: tuple[str, ...] = ("turbo", "fast", "relax")
"""Speed lanes in the order workers serve them (first = highest priority)."""

DEFAULT_LANE: str = "fast"
"""Lane of a job whose prompt and member settings name none."""

JOB_TIMEOUT_S: int = 900
"""Seconds a single job may run on a worker before RQ stops it."""

RESULT_TTL_S: int = 3600
"""Seconds RQ keeps a finished job (its hash, result and registry entry): for the CLI and the bot's look-ups right
after it ends. Members' buttons, /show and the records read the result store (``IMAGE_TTL_S``), which keeps the full
record, so RQ's copy need not stay longer (docs/performance.md: Redis memory per finished job)."""

FAILURE_TTL_S: int = 7 * 24 * 3600
"""Seconds RQ keeps a failed job's record, so the member and admins can see why it failed."""

IMAGE_TTL_S: int = 30 * 24 * 3600
"""Seconds the image store keeps a job's images (sources for U/V buttons) before they expire."""

IMAGES_PER_GRID: int = 4
"""Images in one grid job (the 2x2 grid)."""

DEFAULT_STEPS: int = 20
"""Denoising steps at --quality 1."""

DEFAULT_GUIDANCE: float = 7.5
"""Classifier-free guidance scale at --stylize 100 for a model with no configured ``guidance`` (Stable Diffusion's
usual 7.5; config/imagine.toml sets 1.5 for the shipped model, which over-saturates at 7.5)."""

LAYOUT_STRENGTH: float = 2.0
"""Attention-logit bias that steers the words of "A to the left of B" (and other place phrases) to their boxes
(worker.layout_attention); 0 turns layouts off. 2 took the shipped model's relations from 42% to 88% right."""

PROGRESS_EVERY_S: float = 2.0
"""Least seconds between two progress edits of a Discord message (Discord's rate limits)."""

MAX_SEED: int = 4_294_967_295
"""Largest seed Midjourney accepts (2**32 - 1); derived per-image seeds wrap inside this range."""

EMBEDDED_REDIS_STARTUP_S: float = 10.0
"""Seconds to wait for the embedded redis-server to answer PING after it is started."""

WORKER_HEARTBEAT_S: int = 10
"""Seconds between a worker's heartbeats; a worker silent for 3 of these is presumed dead."""

TEXT_CACHE_SIZE: int = 256
"""Entries in a worker's LRU cache of prompt encodings keyed by (model, text)."""

# --- Discord front end and follow-up jobs (bot/, worker/discord_publisher.py, shared/followups.py) ---

DISCORD_CONTENT_MAX: int = 2000
"""Longest content of a bot's message, counted after markdown escaping (Discord refuses more with error 50035)."""

DISCORD_CUSTOM_ID_MAX: int = 100
"""Longest ``custom_id`` Discord accepts on a component."""

DISCORD_BUTTON_LABEL_MAX: int = 80
"""Longest label of a button."""

DISCORD_ROWS_MAX: int = 5
"""Most action rows under one message."""

DISCORD_ROW_ITEMS_MAX: int = 5
"""Most buttons in one action row."""

DISCORD_MODAL_TITLE_MAX: int = 45
"""Longest title of a modal (and label of one of its text inputs)."""

DISCORD_TEXT_INPUT_MAX: int = 4000
"""Longest value of a modal's text input (a longer prefilled value is refused)."""

DISCORD_PROMPT_SHOWN_MAX: int = 1500
"""Longest prompt shown in a message line, counted after escaping (a line also fits ``DISCORD_CONTENT_MAX``)."""

DISCORD_REASON_SHOWN_MAX: int = 300
"""Longest failure reason shown to a member in a message, counted after escaping."""

REROLL_EMOJI: str = "\N{ANTICLOCKWISE DOWNWARDS AND UPWARDS OPEN CIRCLE ARROWS}"
"""Emoji of the re-roll button."""

UPSCALE_MODES: tuple[str, ...] = ("subtle", "creative")
"""Upscale modes: subtle keeps the image, creative re-details it with an image-to-image pass."""

DEFAULT_UPSCALE_MODE: str = "subtle"
"""Mode of the U<n> buttons under a grid."""

UPSCALE_CREATIVE_STRENGTH: float = 0.35
"""Image-to-image strength of the creative upscale's re-detailing pass."""

VARY_SUBTLE_STRENGTH: float = 0.35
"""Image-to-image strength of "Vary (Subtle)"."""

VARY_STRONG_STRENGTH: float = 0.7
"""Image-to-image strength of "Vary (Strong)" and of the V<n> buttons."""

ZOOM_OUT_FACTORS: tuple[float, ...] = (2.0, 1.5)
"""Zoom Out buttons under an upscaled image: the source shrinks by this factor in the same canvas, the rest is new."""

PAN_EXTENT: float = 1.5
"""A pan button makes the canvas this much longer in its direction (at the same pixel budget); the rest is new."""

OUTPAINT_STRENGTH: float = 0.9
"""Image-to-image strength of outpaints: they start from the source with its edges stretched outwards, this noised."""

OUTPAINT_MAX_ASPECT: float = 4.0
"""Widest canvas (long side / short side) that Make Square and the pans may make."""

DESCRIBE_IMAGE_MAX_SIDE: int = 512
"""A /describe image is kept (image store, result message) with its long side at most this many pixels."""

DISCORD_HTTP_TIMEOUT_S: float = 30.0
"""Seconds a worker waits for one Discord REST answer."""

DISCORD_HTTP_ATTEMPTS: int = 6
"""Tries of one Discord REST call that meets 429 or 5xx or a network error before the worker gives up."""

DISCORD_RETRY_BASE_S: float = 0.5
"""First back-off after a 5xx or network error; doubled at each further try."""

DISCORD_RETRY_MAX_S: float = 60.0
"""Longest single wait before retrying a Discord REST call (a longer 429 ``retry_after`` fails the call)."""

DISCORD_PREVIEW_MAX_SIDE: int = 256
"""Longest side in pixels of the low-resolution preview attached to progress edits."""

DISCORD_GUILD_READY_TIMEOUT_S: float = 2.0
"""Seconds the bot waits for guilds after READY before it calls itself ready (discord.py's default)."""

STYLIZE_PRESETS: dict[str, int] = {"low": 50, "med": 100, "high": 250, "very high": 750}
"""Member setting "stylize" presets and the ``--stylize`` value each adds to a prompt."""

ASPECT_RATIOS: tuple[str, ...] = ("1:1", "2:3", "3:2", "4:5", "5:4", "9:16", "16:9")
"""Aspect ratios a member can choose as their default in /settings."""

MEMBER_SUFFIX_MAX: int = 300
"""Longest prompt suffix a member can save in /settings (and longest value of one /prefer option)."""

MEMBER_OPTIONS_MAX: int = 20
"""Most named parameter bundles (/prefer option set) one member can keep."""

INFO_JOBS_SHOWN: int = 10
"""Most jobs listed by /info."""

MEMBER_JOBS_TTL_S: int = 7 * 24 * 3600
"""Seconds the bot remembers which jobs a member made (for /info and /cancel without a job id)."""

MAX_RESIDENT_MODELS: int = 2
"""Models a worker keeps loaded at once (--v aliases may name others); the least recently used is evicted."""

# --- Prompt language (shared/prompt.py, shared/resolve.py, shared/model_info.py; table in docs/parameters.md) ---

MAX_PERMUTATIONS: int = 40
"""Most prompts one ``{a, b}`` permutation prompt may expand to (Midjourney's Pro-plan limit)."""

MAX_PERMUTATION_DEPTH: int = 8
"""Deepest nesting of ``{...}`` groups a prompt may use."""

MAX_PROMPT_CHARS: int = 2000
"""Longest canonical prompt (``Prompt.to_text()``) accepted, after expansion; Discord's message length."""

MAX_PROMPT_INPUT_CHARS: int = 6000
"""Longest raw prompt input accepted before any parsing (Discord's limit on a slash-command string option)."""

MAX_JOBS_PER_PROMPT: int = 40
"""Most jobs one prompt may create: permutations times ``--repeat``."""

CHAOS_MAX: int = 100
"""Largest ``--chaos`` (range 0 to this)."""

QUALITY_VALUES: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0)
"""The ``--quality`` values accepted; steps = round(settings.steps x quality). Another number is rounded to the nearest
of these (a tie goes up), as Midjourney's docs describe, and the member is told."""

STOP_MIN: int = 10
"""Smallest ``--stop`` (range this to 100)."""

STYLIZE_MAX: int = 1000
"""Largest ``--stylize`` (range 0 to this; 100 is the default)."""

STYLES: tuple[str, ...] = ("raw", "cute", "expressive", "original", "scenic")
"""The ``--style`` values accepted: ``raw`` everywhere, the niji styles (``NIJI_STYLES``) with ``--niji`` only."""

WEIRD_MAX: int = 3000
"""Largest ``--weird`` (range 0 to this)."""

IMAGE_WEIGHT_MAX: float = 3.0
"""Largest ``--iw`` (range 0 to this; 1 is the default)."""

REPEAT_MAX: int = 40
"""Largest ``--repeat`` (range 1 to this)."""

MAX_MULTIPROMPT_WEIGHT: float = 1000.0
"""Largest absolute ``::`` weight of one multi-prompt part."""

MAX_ASPECT_RATIO: int = 8
"""Most elongated ``--ar`` accepted: the long side at most this many times the short side (8:1 or 1:8)."""

MAX_ASPECT_TERM: int = 10000
"""Largest number on either side of ``--ar W:H``."""

ASPECT_EXACT_AREA_TOLERANCE: float = 0.2
"""An exact-ratio size is used if its area is within this fraction of native_resolution**2 (else nearest multiples)."""

STYLIZE_0_GUIDANCE_FACTOR: float = 0.4
"""Guidance at ``--stylize 0`` is this times settings.guidance (3 for 7.5; linear from here to the base at 100)."""

STYLIZE_MAX_GUIDANCE_FACTOR: float = 2.0
"""Guidance at ``--stylize 1000`` is this times settings.guidance (15 for 7.5; linear from the base at 100 to here).
Factors rather than fixed scales, so a model whose best guidance is 2 (the shipped one) is not driven to 15."""

RAW_STYLE_GUIDANCE_FACTOR: float = 0.7
"""``--style raw`` multiplies the stylize guidance by this (less "opinionated" images)."""

MIN_GUIDANCE: float = 1.0
"""Smallest guidance scale a prompt can resolve to (below 1 classifier-free guidance inverts)."""

IMAGE_WEIGHT_STRENGTH_STEP: float = 0.25
"""Image-prompt strength = 1 - iw x this: --iw 0 -> 1.0 (image ignored), 1 -> 0.75, 3 -> 0.25 (closest to the image)."""

DEFAULT_NATIVE_RESOLUTION: int = 512
"""Native square side (px) assumed for a model id with no local config."""

DEFAULT_NATIVE_RESOLUTION_XL: int = 1024
"""Native square side (px) assumed for a model id with no local config whose name contains "xl"."""

DEFAULT_SIZE_MULTIPLE: int = 64
"""Width/height multiple assumed for a model id with no local config (VAE 8 x three UNet downsamplings)."""

MAX_PIXEL_BUDGET_FACTOR: float = 4.0
"""A job may ask for at most this many times its model's native pixel budget (native resolution squared): more is
refused at submission (a job sized for a larger model must never run for minutes on a small one)."""

# --- Text encoding and upscaling (worker/text/, worker/upscaler.py) ---

TEXT_MAX_CHUNKS: int = 32
"""Most encoder windows (77-token CLIP / 32-token BERT chunks) per prompt; longer prompts are cut and reported."""

BERT_TEXT_WINDOW: int = 32
"""Token window of the shipped model's BERT conditioning, [CLS] and [SEP] included (docs/ARCHITECTURE.md)."""

UPSCALER_MODEL: str = "realesr-animevideov3-x4"
"""Default upscaler: Real-ESRGAN animevideov3 x4 through ncnn on CPU (see worker/upscaler.py for the names)."""

UPSCALER_TILE: int = 256
"""Largest input tile side in pixels the ncnn upscaler processes at once (bigger images are tiled)."""

UPSCALER_TILE_PAD: int = 24
"""Input pixels of context added around each tile and cropped after upscaling, so tiles join without seams."""

# --- Reliability and input safety (shared/safe_fetch.py, shared/moderation.py, shared/outbox.py, worker/runner.py) ---

IMAGE_FETCH_ALLOWED_HOSTS: tuple[str, ...] = ("cdn.discordapp.com", "media.discordapp.net")
"""Hosts image prompts may be fetched from (exact names; an entry starting with '.' also admits its subdomains)."""

IMAGE_FETCH_MAX_BYTES: int = 8 * 1024 * 1024
"""Largest image prompt download in bytes (Discord's attachment limit for members without Nitro)."""

IMAGE_FETCH_TIMEOUT_S: float = 10.0
"""Seconds one image prompt download may take in all (connect, headers and body)."""

IMAGE_FETCH_MAX_PIXELS: int = 4096 * 4096
"""Largest image prompt in pixels (width x height), checked from the header before decoding."""

IMAGE_FETCH_MAX_REDIRECTS: int = 3
"""Redirects followed per image prompt download; each target is checked like the original URL."""

IMAGE_FETCH_CONTENT_TYPES: tuple[str, ...] = ("image/png", "image/jpeg", "image/webp", "image/gif")
"""Content types accepted for image prompts (the decoded format must agree)."""

MODERATION_BANNED: tuple[str, ...] = ()
"""Banned words (matched as whole words after de-obfuscation) or ``re:<regex>`` patterns; empty by default."""

MAX_PROMPT_WORD_REPEATS: int = 20
"""Most times one word may appear in a prompt (catches "cat cat cat ..." padding)."""

IMAGE_MODERATION: str = "off"
"""Image moderation hook: ``off``, or a dotted path ``module:function`` returning a flag score 0-1."""

IMAGE_MODERATION_ACTION: str = "spoiler"
"""What happens to a flagged result: ``spoiler`` (posted behind a spoiler) or ``withhold`` (not posted)."""

IMAGE_MODERATION_THRESHOLD: float = 0.5
"""Score at or above which the image moderation hook's verdict flags a result."""

JOB_HEARTBEAT_S: float = 5.0
"""Seconds between a worker's heartbeats while a job runs (keeps its started-registry entry alive)."""

WORKER_ABANDON_AFTER_S: int = 20
"""Seconds without a heartbeat after which a started job counts as abandoned (its worker died)."""

WORKER_MAINTENANCE_S: int = 10
"""Seconds between a worker's maintenance passes (abandoned jobs re-queued, outbox drained)."""

ABANDONED_JOB_RETRIES: int = 1
"""Times an abandoned job (its worker died mid-job) is re-queued before it fails and the member is told."""

OUTBOX_ATTEMPTS: int = 8
"""Re-delivery tries of a result kept in the outbox before it is given up (kept) and reported in the audit log."""

OUTBOX_RETRY_BASE_S: float = 5.0
"""First wait before an outbox delivery is retried; doubled at each further try."""

AUDIT_LOG_MAX: int = 10000
"""Most entries kept in the Redis audit log (oldest dropped first)."""

# --- Throughput: cross-job batching and previews (worker/batching.py, worker/engine.py, bench/) ---

BATCH_MAX_IMAGES: int = 16
"""Most images one cross-job batch denoises together (4 grid jobs); 4 (one job) turns batching off."""

BATCH_WAIT_S: float = 0.0
"""Seconds a worker waits for compatible jobs to arrive before it starts a batch with what is queued."""

BATCH_POLL_S: float = 0.05
"""Seconds between looks at the queues while a batch waits for compatible jobs."""

BATCH_SCAN_DEPTH: int = 64
"""Queued jobs per queue looked at for batch followers (the head of each queue)."""

# --- Queue control (shared/limits.py, shared/fair_share.py, shared/admin.py, shared/eta.py, shared/metrics.py) ---

MAX_RUNNING_PER_MEMBER: int = 3
"""Jobs one member may have running at once (Midjourney's concurrent job limit); roles may raise it."""

MAX_QUEUED_PER_MEMBER: int = 10
"""Jobs one member may have waiting at once (Midjourney's queued job limit); roles may raise it."""

FAIR_POLL_S: float = 0.2
"""Most seconds an idle worker waits between two fair-share dequeue attempts; an enqueue wakes it at once."""

FAIR_WAKE_TOKENS: int = 64
"""Cap on the wake-up tokens waiting in Redis (one per enqueue, taken by idle workers)."""

FAIR_SCAN_MAX: int = 1000
"""Most waiting jobs per lane the fair-share dequeue inspects for an owner under their running cap."""

LIMITS_GRACE_S: float = 60.0
"""Seconds a counted job may be in neither a lane nor a started registry before reconcile drops its count."""

LIMITS_RECONCILE_S: int = 60
"""Least seconds between two reconciliations of the limit counts (one worker does it, elected by a Redis lock)."""

ETA_SMOOTHING: float = 0.2
"""Weight of the newest job duration in the moving average per model and lane that ETAs come from."""

THROUGHPUT_WINDOW_S: int = 300
"""Window in seconds over which /queue status reports jobs per minute."""


AUDIT_SHOWN: int = 10
"""Latest audit entries shown by /queue status."""

ADMIN_PERMISSION: str = "manage_guild"
"""Discord permission that makes a member an admin of this bot (shown as "Manage Server")."""

WAIT_BUCKETS_S: tuple[float, ...] = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600)
"""Histogram buckets (seconds) of the time jobs wait in the queue."""

GENERATION_BUCKETS_S: tuple[float, ...] = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 900)
"""Histogram buckets (seconds) of the time a worker spends on one job."""

QUEUE_EDIT_EVERY_S: float = 5.0
"""Seconds between the bot's rounds of queue-position edits of waiting messages (each message at most once a round)."""

QUEUE_EDIT_FIRST_N: int = 10
"""Only the first this many queued jobs per lane get their waiting message's position and ETA kept up to date."""

QUEUE_EDITS_PER_CHANNEL: int = 4
"""Most queue-position edits per channel in one round (Discord allows about 5 message edits per 5 s per channel)."""

CANCEL_REACTIONS: frozenset[str] = frozenset({"\N{CROSS MARK}"})
"""Reactions by which a member cancels their queued or running job, or deletes their finished result message."""

ENVELOPE_REACTIONS: frozenset[str] = frozenset({"\N{ENVELOPE}", "\N{ENVELOPE}\N{VARIATION SELECTOR-16}"})
"""Reactions that send the reacting member a direct message with the job's picture, job id, seeds and parameters."""

# --- Result stores and Redis connections (shared/stores/) ---

RESULT_STORES: tuple[str, ...] = ("redis", "filesystem", "s3")
"""Backends that can hold finished jobs' images and records (setting ``RESULT_STORE``)."""

RESULT_STORE: str = "redis"
"""Result backend of a fresh install: Redis, as before result stores existed (one machine, nothing to set up)."""

RESULT_DIR_NAME: str = "results"
"""Folder under ``DATA_DIR`` that the filesystem result store uses when ``RESULT_DIR`` is empty."""

REDIS_RESULT_MAX_BYTES: int = 1024 * 1024 * 1024
"""Most PNG bytes the redis result store keeps (about 170 grids of four 1024 px images); the oldest jobs' results
are evicted to make room. 0 turns the cap off."""

RESULT_URL_EXPIRES_S: int = 3600
"""Lifetime of a presigned result URL (S3 store) when the caller does not choose one."""

RESULT_SWEEP_S: int = 3600
"""Least seconds between two retention sweeps of the result store (one worker does it, elected by a Redis lock)."""

S3_PREFIX: str = "results/"
"""Key prefix of result objects inside the S3 bucket (the lifecycle rule is scoped to it)."""

S3_REGION: str = "us-east-1"
"""S3 region (SigV4 signs with it; S3-compatible servers usually accept us-east-1)."""

S3_ADDRESSING_STYLES: tuple[str, ...] = ("auto", "path", "virtual")
"""botocore addressing styles: path style (http://host/bucket/key) suits S3-compatible servers on one host name."""

S3_LIFECYCLE_RULE_ID: str = "imagine-result-expiry"
"""ID of the bucket lifecycle rule the S3 store installs, followed by ``:<prefix>`` (replaced on each
``ensure_bucket``; other rules, other prefixes' included, are kept)."""

REDIS_TLS_CERT_REQS: tuple[str, ...] = ("required", "optional", "none")
"""Accepted ``REDIS_TLS_CERT_REQS``: how a ``rediss://`` connection checks the server certificate."""

REDIS_FAILOVER_WAIT_S: float = 30.0
"""Seconds a Redis command keeps retrying (re-asking the sentinels for the master) while Sentinel fails over."""

REDIS_SENTINEL_SOCKET_TIMEOUT_S: float = 1.0
"""Seconds one question to one sentinel may take, so a dead sentinel does not stall a failover."""

REDIS_CONNECT_TIMEOUT_S: float = 2.0
"""Seconds to open one TCP connection to a Sentinel-managed Redis (a dead master must not stall the retry loop)."""

REDIS_REPLICA_WAIT_MS: int = 500
"""With Sentinel, an enqueue waits up to this many ms for one replica to hold it (Redis WAIT); 0 does not wait."""

# --- Remix, Custom Zoom, Vary (Region) and the web companion (bot/modals.py, shared/jobs/, web/) ---

DISCORD_MODAL_TIMEOUT_S: float = 900.0
"""Seconds discord.py keeps an open modal in memory (submits are handled from their custom_id, so none is lost)."""

CUSTOM_ZOOM_RANGE: tuple[float, float] = (1.0, 2.0)
"""Accepted ``--zoom`` of Custom Zoom (Midjourney's 1-2): 1 re-renders the framing, 2 shows twice as much."""

CUSTOM_ZOOM_DEFAULT: float = 2.0
"""The ``--zoom`` prefilled in the Custom Zoom box."""

INPAINT_STRENGTH: float = 1.0
"""How much of the schedule an inpaint runs in the masked region (1 = from noise: the region is painted anew from
the prompt, the kept latents around it giving the context)."""

GALLERY_PAGE_SIZE: int = 24
"""Jobs per page of the web companion's "My images" and gallery pages."""

GALLERY_PROMPT_KEPT: int = 400
"""Characters of a prompt kept in a job's gallery entry (what pages show and search reads; the record has all)."""

GALLERY_SEARCH_MAX: int = 5000
"""Newest jobs of a member that a prompt search reads (one Redis hash read; older ones are left out)."""

GALLERY_MEMBER_MAX: int = 20000
"""Most jobs kept in one member's gallery index (the oldest are dropped beyond this)."""

WEB_PORT: int = 8080
"""Port the web companion listens on."""

WEB_LINK_TTL_S: int = 900
"""Seconds a Vary (Region) link stays valid."""

WEB_SESSION_TTL_S: int = 7 * 24 * 3600
"""Seconds a web companion login lasts."""

WEB_STATE_TTL_S: int = 600
"""Seconds between leaving for Discord's authorize page and coming back with the code."""

WEB_MASK_MAX_BYTES: int = 4 * 1024 * 1024
"""Largest mask PNG the region editor may send."""

WEB_MAX_BODY_BYTES: int = 8 * 1024 * 1024
"""Largest request body the web companion reads (the mask's data URL is the largest)."""

DISCORD_OAUTH_AUTHORIZE_URL: str = "https://discord.com/oauth2/authorize"
"""Discord's authorize page, where a member's browser is sent to log in (OAuth2 authorization code flow)."""

DISCORD_WEB_URL: str = "https://discord.com"
"""Discord's web client: "open in Discord" links are ``<this>/channels/<guild>/<channel>/<message>``."""

DISCORD_PERMISSION_ADMINISTRATOR: int = 1 << 3
"""Discord's ADMINISTRATOR permission bit."""

DISCORD_PERMISSION_MANAGE_GUILD: int = 1 << 5
"""Discord's MANAGE_GUILD ("Manage Server") permission bit."""

# --- Running it for a community: rules, allowances, review, provenance (shared/rules.py, shared/allowances.py, ...) ---

RULES_CACHE_S: float = 5.0
"""Seconds a process keeps the rules it read from Redis (a change by /rules is seen by every shard within this)."""

DEFAULT_MODEL_NAME: str = "default"
"""How rules name the configured ``MODEL`` (a prompt without ``--v``/``--niji``) beside the ``--v`` aliases."""

ADULT_ACTIONS: tuple[str, ...] = ("spoiler", "withhold", "review")
"""What happens to a flagged (adult-rated) result in a channel that may not receive one."""

ALLOWANCE_RESET_TIME: str = "00:00"
"""Time of day (HH:MM, in ``ALLOWANCE_TIMEZONE``) when daily allowances start again."""

ALLOWANCE_TIMEZONE: str = "UTC"
"""IANA time zone of the allowance reset time."""

ALLOWANCE_EXEMPT_LANES: tuple[str, ...] = ("relax",)
"""Lanes whose jobs do not count against allowances (Midjourney's relax mode)."""

ALLOWANCE_KEEP_S: int = 3 * 24 * 3600
"""Seconds a period's allowance counters are kept after it starts (past periods are only read by admins)."""

REVIEW_DELIVERING_LEASE_S: float = 60.0
"""Seconds an Approve that is delivering holds the result; a bot that died mid-delivery is taken over after this."""

C2PA_ALGORITHMS: tuple[str, ...] = ("es256", "es384", "es512", "ps256", "ps384", "ps512", "ed25519")
"""Signing algorithms of the C2PA manifest (the key's type decides which one fits)."""

DIGITAL_SOURCE_TYPE: str = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
"""IPTC digital source type of every image the workers make: created by a trained generative model."""


# --- Community styles and references (shared/prompt/, shared/adapters.py, worker/adapters/, worker/shorten.py) ---

NIJI_STYLES: dict[str, str] = {
    "cute": "cute, kawaii, soft pastel colours",
    "expressive": "expressive, dynamic illustration, bold lines",
    "scenic": "scenic, detailed background, cinematic landscape",
    "original": "",
}
"""Midjourney's niji ``--style`` values and the words each adds to the conditioning as an extra ``::`` part ("": none,
the niji model as it is)."""

NIJI_STYLE_PART_WEIGHT: float = 0.5
"""The ``::`` weight of a niji style's words beside the prompt (weight 1)."""

DRAFT_STEPS_FACTOR: float = 0.4
"""``--draft`` runs this fraction of the job's steps (at least 1); measured about half the time of a full grid."""

EXP_MAX: int = 100
"""Largest ``--exp`` (range 0 to this)."""

EXP_GUIDANCE_GAIN: float = 0.5
"""``--exp 100`` multiplies the guidance by 1 + this (stronger contrast and saturation: "tonemapped")."""

EXP_STEP_GAIN: float = 0.5
"""``--exp 100`` adds this fraction of the job's steps (more detail), linear in ``--exp``."""

STYLE_WEIGHT_MAX: int = 1000
"""Largest ``--sw`` (range 0 to this; 100 is the default)."""

CHARACTER_WEIGHT_MAX: int = 100
"""Largest ``--cw`` (range 0 to this; 100 is the default)."""

OMNI_WEIGHT_MAX: int = 1000
"""Largest ``--ow`` (range 1 to this; 100 is the default)."""

STYLE_VERSIONS: tuple[int, ...] = (1, 2, 3, 4, 5, 6)
"""``--sv`` values accepted (Midjourney's); 1-3 steer every attention block, 4-6 (and none) the style blocks only."""

STYLE_CODE_MAX: int = 4_294_967_295
"""Largest numeric ``--sref`` style code (a seed of a reproducible random style vector)."""

MAX_REFERENCE_IMAGES: int = 5
"""Most images of one reference kind (``--sref``, ``--cref``; ``--oref`` takes one) and of one /blend."""

MAX_PROFILE_CODES: int = 5
"""Most profile codes one ``--p`` takes."""

REFERENCE_BASE_SCALES: dict[str, float] = {
    "style": 0.6,
    "character": 0.8,
    "omni": 0.8,
    "blend": 1.0,
    "profile": 0.6,
}
"""IP-Adapter scale of each reference kind at its default weight (``--sw 100``, ``--cw 100``, ``--ow 100``)."""

REFERENCE_SCALE_MAX: float = 2.0
"""Largest IP-Adapter scale any weight maps to (beyond it the reference replaces the prompt)."""

REFERENCE_CAPTIONS: int = 2
"""Captions of the shipped model's caption bank that stand for one reference vector (the nearest first)."""

LORA_NAME_MAX: int = 64
"""Longest LoRA name in ``--lora name:weight``."""

LORA_MAX_PER_JOB: int = 3
"""Most LoRAs one prompt may name (and hot-swap slots a worker keeps per model)."""

LORA_WEIGHT_MIN: float = -2.0
"""Smallest ``--lora name:weight`` (negative weights steer away, as slider LoRAs do)."""

LORA_WEIGHT_MAX: float = 2.0
"""Largest ``--lora name:weight``."""

LORA_CACHE_ENTRIES: int = 16
"""LoRA state dicts a worker keeps in CPU memory (least recently used dropped first)."""

PROFILE_CODE_LENGTH: int = 8
"""Characters of a member's shareable profile code (``--p <code>``)."""

PROFILE_MAX_IMAGES: int = 500
"""Most liked images a profile keeps (the oldest likes are dropped first)."""

STAR_REACTIONS: frozenset[str] = frozenset({"\N{WHITE MEDIUM STAR}", "\N{GLOWING STAR}"})
"""Reactions by which a member likes a result: its images join their personal style profile (``--p``)."""

SHORTEN_OPTIONS: int = 5
"""Shorter prompts /shorten offers (each with a button that imagines it)."""

SHORTEN_KEEP_FRACTIONS: tuple[float, ...] = (0.8, 0.65, 0.5, 0.35, 0.2)
"""Fractions of the prompt's words (the most important ones) that /shorten's shorter prompts keep."""

SHORTEN_BOLD_FRACTION: float = 0.25
"""/shorten shows a word in bold when its weight is at least this fraction of the largest word weight."""

SHORTEN_STRIKE_FRACTION: float = 0.05
"""/shorten strikes a word out when its weight is below this fraction of the largest word weight."""

SHORTEN_MAX_WORDS: int = 60
"""Most words /shorten weighs (one encoding each); the rest are kept as they are."""

BLEND_DIMENSIONS: dict[str, tuple[int, int]] = {"portrait": (2, 3), "square": (1, 1), "landscape": (3, 2)}
"""/blend's ``dimensions`` choices and the aspect ratio each makes (Midjourney's)."""

# --- At scale: bot shards, Discord's rate limits shared through Redis, worker models (docs/performance.md) ---

DISCORD_IDENTIFY_WAIT_S: float = 5.0
"""Seconds between two gateway IDENTIFYs of the bot token (Discord's session start limit, max_concurrency 1);
every bot process takes its turn through Redis."""

DISCORD_GLOBAL_PER_S: int = 50
"""REST requests per second Discord allows one bot token (interaction responses and followups exempt)."""

DISCORD_CHANNEL_EDITS: int = 5
"""Message edits Discord allows per channel in one edit window (a bucket of its own, apart from posts)."""

DISCORD_CHANNEL_EDIT_WINDOW_S: float = 5.0
"""Seconds of a channel's edit window."""

DISCORD_CHANNEL_POSTS: int = 5
"""Messages Discord allows a bot to post per channel in one post window (a bucket apart from edits)."""

DISCORD_CHANNEL_POST_WINDOW_S: float = 5.0
"""Seconds of a channel's post window."""

DISCORD_CHANNEL_DELETES: int = 5
"""Message deletions Discord allows per channel in one delete window."""

DISCORD_CHANNEL_DELETE_WINDOW_S: float = 1.0
"""Seconds of a channel's delete window."""

DISCORD_BUDGET_MARGIN_S: float = 0.25
"""Seconds added to every window the shared budgets keep: a request granted as an old one leaves the window must
not reach Discord inside that old one's window (transit, a busy process, clock jitter between machines)."""

DISCORD_BUDGET_TTL_S: float = 120.0
"""Seconds a channel's budget keys live after their last use (idle channels leave nothing in Redis)."""

DISCORD_POSITION_RESERVE: int = 2
"""Edits of a channel's window that queue-position edits leave free, so a progress edit asked a moment later finds
room (progress outranks queue position)."""

DISCORD_FIRST_PROGRESS_WAIT_S: float = 1.0
"""Most seconds a job's first progress edit waits for its channel's edit budget (later ones are skipped, not waited
for: the next step asks again); a short job would otherwise show no progress at all in a busy channel."""

DISCORD_EDIT_WANT_TTL_S: float = 6.0
"""Seconds a message that asked for an edit keeps its place in the channel's line without asking again."""

DISCORD_FINAL_EDIT_WAIT_S: float = 30.0
"""Most seconds a final edit (a failure line) waits for the channel's edit budget before it is sent anyway."""

DISCORD_POSTED_TTL_S: int = 24 * 3600
"""Seconds a job's "posted as message N" mark lives (a repeated publish of the job, by a retry or the outbox, posts
nothing again); the outbox gives up long before."""

JOB_DESCRIPTION_CHARS: int = 60
"""Characters of the prompt kept as RQ's job description (for rq-dashboard; the spec has the whole prompt)."""

WORKER_MODELS_TTL_S: int = 60
"""Seconds a worker's announcement of the models it serves stays valid without being renewed."""

DISCORD_HTTP_CONNECTIONS: int = 32
"""Most HTTP connections a bot process keeps to Discord's REST API (its gateway sockets included): a burst of
interaction answers reuses them instead of opening one connection per answer."""

ENQUEUE_MAX_DEFER_S: float = 0.5
"""Most seconds the bot defers a job's enqueue while it answers other interactions (answers first: Discord's 3 s
window; a steady stream of answers must not starve the enqueues)."""
