"""Typed settings: environment variables over ``config/imagine.toml`` over the defaults in ``shared.defaults``."""

from __future__ import annotations

import contextlib
import logging
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from shared import defaults
from shared.adapter_config import IpAdapterEntry, LoraEntry

log = logging.getLogger(__name__)


def config_file() -> Path:
    """The TOML file in force: ``IMAGINE_CONFIG`` if set, else ``config/imagine.toml`` in the checkout."""
    return Path(os.environ.get("IMAGINE_CONFIG", str(defaults.CONFIG_FILE)))


class Settings(BaseSettings):
    """All settings of bot and workers. Secrets are ``SecretStr`` so they never show in logs or ``repr``."""

    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False, env_prefix="")

    redis_url: SecretStr = Field(default=SecretStr(""), description="Redis URL; empty starts the embedded Redis.")
    model: str = Field(default=defaults.DEFAULT_MODEL, description="diffusers model folder or id.")
    model_aliases: dict[str, str] = Field(default_factory=dict, description="--v/--niji names -> model folder or id.")
    device: str = Field(default="auto", description="torch device: auto, cpu, cuda, cuda:N, mps.")
    dtype: str = Field(default="auto", description="torch dtype: auto, float32, float16, bfloat16.")
    data_dir: Path = Field(default=Path(defaults.DATA_DIR), description="Embedded Redis and image store folder.")
    output_dir: Path = Field(default=Path(defaults.OUTPUT_DIR), description="Local publisher output folder.")
    queue_prefix: str = Field(default=defaults.QUEUE_PREFIX, description="Prefix of Redis keys and queue names.")
    lanes: tuple[str, ...] = Field(default=defaults.LANES, description="Lanes in service priority order.")
    default_lane: str = Field(default=defaults.DEFAULT_LANE, description="Lane when none is asked for.")
    job_timeout_s: int = Field(default=defaults.JOB_TIMEOUT_S, description="Seconds a job may run.")
    result_ttl_s: int = Field(default=defaults.RESULT_TTL_S, description="Seconds finished jobs are kept.")
    failure_ttl_s: int = Field(default=defaults.FAILURE_TTL_S, description="Seconds failed jobs are kept.")
    image_ttl_s: int = Field(default=defaults.IMAGE_TTL_S, description="Seconds stored images are kept.")
    steps: int = Field(default=defaults.DEFAULT_STEPS, description="Denoising steps at --quality 1.")
    guidance: float = Field(default=defaults.DEFAULT_GUIDANCE, description="Guidance scale at --stylize 100.")
    layout_strength: float = Field(
        default=defaults.LAYOUT_STRENGTH, ge=0, description="Bias that puts objects where prompts say; 0 = off."
    )
    alignment_clip: str = Field(default="", description="Local CLIP folder for alignment scores of any model.")
    upscaler: str = Field(default="", description="Upscaler model name; empty means the default (see worker.upscaler).")
    discord_token: SecretStr = Field(default=SecretStr(""), description="Bot token.")
    discord_guild_ids: str = Field(default="", description="Comma-separated guild ids for instant command sync.")
    discord_api_base: str = Field(default="https://discord.com/api/v10", description="Discord REST base URL.")
    discord_gateway_url: str = Field(default="", description="Optional Discord gateway URL override.")
    discord_guild_ready_timeout_s: float = Field(
        default=defaults.DISCORD_GUILD_READY_TIMEOUT_S, description="Seconds the bot waits for guilds after READY."
    )
    # --- queue control (shared/limits.py, shared/fair_share.py, shared/admin.py, shared/metrics.py) ---
    max_running_per_member: int = Field(
        default=defaults.MAX_RUNNING_PER_MEMBER, ge=0, description="Jobs one member may have running at once."
    )
    max_queued_per_member: int = Field(
        default=defaults.MAX_QUEUED_PER_MEMBER, ge=0, description="Jobs one member may have waiting at once."
    )
    role_limits: dict[str, dict[str, int]] = Field(
        default_factory=dict, description='Role id -> {"running": N, "queued": M}; a member gets their best role.'
    )
    admin_role_ids: str = Field(default="", description="Comma-separated role ids allowed to use admin commands.")
    admin_user_ids: str = Field(default="", description="Comma-separated user ids allowed to use admin commands.")
    audit_channel_id: str = Field(default="", description="Channel id where admin actions are also posted.")
    metrics_port: int = Field(default=0, ge=0, description="Prometheus metrics HTTP port; 0 serves none.")

    # Reliability and input safety (shared/safe_fetch.py, shared/moderation.py, shared/outbox.py, worker/runner.py).
    image_fetch_allowed_hosts: tuple[str, ...] = Field(
        default=defaults.IMAGE_FETCH_ALLOWED_HOSTS, description="Hosts image prompts may be fetched from."
    )
    image_fetch_max_bytes: int = Field(default=defaults.IMAGE_FETCH_MAX_BYTES, description="Largest image download.")
    image_fetch_timeout_s: float = Field(default=defaults.IMAGE_FETCH_TIMEOUT_S, description="Seconds per download.")
    image_fetch_max_pixels: int = Field(default=defaults.IMAGE_FETCH_MAX_PIXELS, description="Largest image, pixels.")
    unsafe_test_only_allow_http_loopback: bool = Field(
        default=False,
        description="TESTS ONLY, NEVER IN PRODUCTION: image prompts may be fetched over plain http from 127.0.0.1.",
    )
    moderation_banned: tuple[str, ...] = Field(
        default=defaults.MODERATION_BANNED, description="Banned words, or re:<regex> patterns (case-insensitive)."
    )
    max_prompt_word_repeats: int = Field(default=defaults.MAX_PROMPT_WORD_REPEATS, description="Most word repeats.")
    image_moderation: str = Field(default=defaults.IMAGE_MODERATION, description="off, or module:function hook.")
    image_moderation_action: str = Field(
        default=defaults.IMAGE_MODERATION_ACTION, description="Flagged results: spoiler or withhold."
    )
    image_moderation_threshold: float = Field(
        default=defaults.IMAGE_MODERATION_THRESHOLD, description="Hook score that flags a result."
    )
    job_heartbeat_s: float = Field(default=defaults.JOB_HEARTBEAT_S, description="Seconds between job heartbeats.")
    worker_abandon_after_s: int = Field(
        default=defaults.WORKER_ABANDON_AFTER_S, description="Seconds without heartbeat before a job is abandoned."
    )
    worker_maintenance_s: int = Field(default=defaults.WORKER_MAINTENANCE_S, description="Seconds between maintenance.")
    abandoned_job_retries: int = Field(
        default=defaults.ABANDONED_JOB_RETRIES, description="Re-queues of a job whose worker died."
    )
    outbox_attempts: int = Field(default=defaults.OUTBOX_ATTEMPTS, description="Delivery tries of a kept result.")
    outbox_retry_base_s: float = Field(default=defaults.OUTBOX_RETRY_BASE_S, description="First outbox retry wait.")
    fault_injection: str = Field(
        default="",
        description="TESTS ONLY: 'oom', 'error' or 'value' makes jobs whose prompt has '[fault]' raise that fault.",
    )

    # Result stores (shared/stores/) and Redis connections (shared/stores/connection.py).
    result_store: str = Field(default=defaults.RESULT_STORE, description="Where results go: redis, filesystem or s3.")
    result_dir: Path = Field(
        default=Path(""), validate_default=True, description="Filesystem result store folder; empty: DATA_DIR/results."
    )
    redis_result_max_bytes: int = Field(
        default=defaults.REDIS_RESULT_MAX_BYTES, ge=0, description="PNG bytes the redis store keeps; 0 = no cap."
    )
    s3_endpoint_url: str = Field(default="", description="S3 endpoint URL; empty: AWS's for S3_REGION.")
    s3_bucket: str = Field(
        default="", validate_default=True, description="S3 bucket of results (RESULT_STORE=s3 needs it)."
    )
    s3_prefix: str = Field(default=defaults.S3_PREFIX, description="Key prefix of result objects in the bucket.")
    s3_region: str = Field(default=defaults.S3_REGION, description="S3 region name.")
    s3_access_key_id: str = Field(default="", description="S3 access key id; empty: boto3's own credential chain.")
    s3_secret_access_key: SecretStr = Field(default=SecretStr(""), description="S3 secret access key.")
    s3_addressing_style: str = Field(default="auto", description="S3 addressing: auto, path or virtual.")
    redis_tls_ca_file: str = Field(default="", description="CA bundle that signs the Redis server's certificate.")
    redis_tls_cert_reqs: str = Field(
        default="required", description="rediss:// certificate check: required, optional, none."
    )
    redis_tls_cert_file: str = Field(default="", description="Client certificate for Redis TLS (mutual TLS only).")
    redis_tls_key_file: str = Field(default="", description="Client key for Redis TLS (mutual TLS only).")
    redis_sentinels: str = Field(default="", description="Comma-separated host:port of Redis sentinels; empty: none.")
    redis_sentinel_master: str = Field(
        default="", validate_default=True, description="Service name the sentinels monitor."
    )
    redis_sentinel_password: SecretStr = Field(default=SecretStr(""), description="Password of the sentinels.")
    redis_failover_wait_s: float = Field(
        default=defaults.REDIS_FAILOVER_WAIT_S, gt=0, description="Seconds commands retry during a Sentinel failover."
    )
    redis_replica_wait_ms: int = Field(
        default=defaults.REDIS_REPLICA_WAIT_MS, ge=0, description="With Sentinel: ms an enqueue waits for a replica."
    )

    # The web companion (web/) and the links the bot gives to it (Vary (Region)).
    web_base_url: str = Field(
        default="", description="Public URL of the web companion (e.g. https://imagine.example.org); empty: none."
    )
    web_host: str = Field(default="127.0.0.1", description="Address the web companion listens on.")
    web_port: int = Field(default=defaults.WEB_PORT, ge=0, le=65535, description="Port the web companion listens on.")
    web_secret: SecretStr = Field(
        default=SecretStr(""), description="Signs web sessions and Vary (Region) links; the bot and web share it."
    )
    web_link_ttl_s: int = Field(default=defaults.WEB_LINK_TTL_S, gt=0, description="Seconds a region link is valid.")
    web_session_ttl_s: int = Field(default=defaults.WEB_SESSION_TTL_S, gt=0, description="Seconds a login lasts.")
    web_guild_id: str = Field(
        default="", description="Guild whose roles decide web admins; empty: the first of DISCORD_GUILD_IDS."
    )
    discord_client_id: str = Field(default="", description="OAuth2 client id of the Discord application.")
    discord_client_secret: SecretStr = Field(default=SecretStr(""), description="OAuth2 client secret.")
    discord_oauth_authorize_url: str = Field(
        default=defaults.DISCORD_OAUTH_AUTHORIZE_URL,
        description="Discord's authorize page as members' browsers reach it (apart from DISCORD_API_BASE).",
    )
    discord_web_url: str = Field(default=defaults.DISCORD_WEB_URL, description="Discord's web client, for links.")

    # Running it for a community: rules, allowances, the review queue, provenance (docs/admin-guide.md).
    rules: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="[rules]: the server rules Redis starts from; scope (default, role:<id>, channel:<id>) -> rule.",
    )
    allowances: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description='[allowances]: scope (default, role:<id>) -> {"jobs": N, "gpu_seconds": S} per day; none: no cap.',
    )
    allowance_reset_time: str = Field(
        default=defaults.ALLOWANCE_RESET_TIME, description="HH:MM when daily allowances start again."
    )
    allowance_timezone: str = Field(default=defaults.ALLOWANCE_TIMEZONE, description="Time zone of the reset time.")
    allowance_exempt_lanes: tuple[str, ...] = Field(
        default=defaults.ALLOWANCE_EXEMPT_LANES, description="Lanes whose jobs do not count against allowances."
    )
    review_channel_id: str = Field(default="", description="Staff channel where results held for review are posted.")
    moderator_role_ids: str = Field(default="", description="Comma-separated role ids that may approve or reject.")
    review_new_members_days: float = Field(
        default=0, ge=0, description="Results of members who joined less than this many days ago are reviewed; 0: off."
    )
    c2pa_signing_key: SecretStr = Field(default=SecretStr(""), description="C2PA signing key: a PEM file or PEM text.")
    c2pa_cert: str = Field(default="", description="C2PA certificate chain: a PEM file or PEM text (signer first).")
    c2pa_alg: str = Field(default="es256", description="C2PA signing algorithm (must fit the key).")
    c2pa_tsa_url: str = Field(default="", description="RFC 3161 time-stamp authority for C2PA; empty: none.")

    # Community styles and references (shared/adapters.py, worker/adapters/).
    loras: dict[str, LoraEntry] = Field(
        default_factory=dict, description="LoRAs members may name: name -> {file, families, weight, triggers}."
    )
    lora_max_per_job: int = Field(
        default=defaults.LORA_MAX_PER_JOB, ge=1, description="Most LoRAs one prompt may name (hot-swap slots)."
    )
    ip_adapters: dict[str, IpAdapterEntry] = Field(
        default_factory=dict, description="Model (as MODEL or an alias names it) -> its IP-Adapter and image encoder."
    )
    draft_lora: str = Field(default="", description="A configured LoRA (LCM, Hyper) applied to --draft jobs.")
    draft_lora_steps: int = Field(default=0, ge=0, description="Steps of a --draft job with the draft LoRA; 0: keep.")
    draft_lora_guidance: float = Field(
        default=0.0, ge=0, description="Guidance of a --draft job with the draft LoRA; 0: keep."
    )

    @field_validator("loras")
    @classmethod
    def _check_lora_names(cls, value: dict[str, LoraEntry]) -> dict[str, LoraEntry]:
        for name in value:
            if not re.fullmatch(r"[a-z0-9][a-z0-9_.-]{0,63}", name):
                raise ValueError(f"LoRA names must be 1-64 lowercase letters, digits, '_', '.' or '-', got {name!r}")
        return value

    @field_validator("draft_lora")
    @classmethod
    def _check_draft_lora(cls, value: str, info: ValidationInfo) -> str:
        loras = info.data.get("loras") or {}
        if value and value not in loras:
            known = ", ".join(sorted(loras)) or "none"
            raise ValueError(f"DRAFT_LORA must name a configured LoRA ({known}), got {value!r}")
        return value

    # At scale: bot shards (bot/client.py, bot/sharding.py), Discord rate budgets (shared/discord_wire/rate_budget.py),
    # the models a worker serves (worker/runtime.py, shared/queue/worker_models.py).
    shard_count: int | None = Field(
        default=None, ge=1, description="Discord shards in all; empty: the count Discord recommends (GET /gateway/bot)."
    )
    shard_ids: str = Field(default="", description="Comma-separated shard ids this bot process runs; empty: all.")
    discord_identify_wait_s: float = Field(
        default=defaults.DISCORD_IDENTIFY_WAIT_S, ge=0, description="Seconds between two IDENTIFYs (all processes)."
    )
    discord_global_per_s: int = Field(
        default=defaults.DISCORD_GLOBAL_PER_S, ge=1, description="REST requests per second the bot token may make."
    )
    discord_channel_edits: int = Field(
        default=defaults.DISCORD_CHANNEL_EDITS, ge=1, description="Message edits per channel per edit window."
    )
    discord_channel_edit_window_s: float = Field(
        default=defaults.DISCORD_CHANNEL_EDIT_WINDOW_S, gt=0, description="Seconds of a channel's edit window."
    )
    worker_models: str = Field(
        default="", description="Comma-separated models (refs or --v names) this worker serves; empty: all configured."
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = TomlConfigSettingsSource(settings_cls, toml_file=config_file())
        return (init_settings, env_settings, toml, file_secret_settings)

    @field_validator("data_dir", "output_dir")
    @classmethod
    def _resolve_path(cls, value: Path) -> Path:
        return value if value.is_absolute() else defaults.PROJECT_ROOT / value

    @field_validator("lanes", "image_fetch_allowed_hosts", "moderation_banned", "allowance_exempt_lanes", mode="before")
    @classmethod
    def _split_lanes(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("allowance_reset_time")
    @classmethod
    def _check_reset_time(cls, value: str) -> str:
        hours, sep, minutes = value.partition(":")
        if not (sep and hours.isdigit() and minutes.isdigit() and int(hours) < 24 and int(minutes) < 60):
            raise ValueError(f"ALLOWANCE_RESET_TIME must be HH:MM (00:00 to 23:59), got {value!r}")
        return f"{int(hours):02d}:{int(minutes):02d}"

    @field_validator("allowance_timezone")
    @classmethod
    def _check_timezone(cls, value: str) -> str:
        import zoneinfo

        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(
                f"ALLOWANCE_TIMEZONE must be an IANA time zone such as UTC or Europe/Paris, got {value!r}"
            ) from exc
        return value

    @field_validator("c2pa_alg")
    @classmethod
    def _check_c2pa_alg(cls, value: str) -> str:
        if value.lower() not in defaults.C2PA_ALGORITHMS:
            raise ValueError(f"C2PA_ALG must be one of {', '.join(defaults.C2PA_ALGORITHMS)}, got {value!r}")
        return value.lower()

    @field_validator("shard_count", mode="before")
    @classmethod
    def _empty_shard_count(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("shard_ids")
    @classmethod
    def _check_shard_ids(cls, value: str, info: ValidationInfo) -> str:
        items = [item.strip() for item in value.split(",") if item.strip()]
        count = info.data.get("shard_count")
        if items and count is None:
            raise ValueError(f"SHARD_IDS needs SHARD_COUNT (the shards in all), got SHARD_IDS={value!r}")
        for item in items:
            if not item.isdigit() or (count is not None and int(item) >= count):
                raise ValueError(
                    f"SHARD_IDS must be comma-separated shard numbers from 0 to SHARD_COUNT - 1 ({count}), "
                    f"got {item!r} in {value!r}"
                )
        if len(set(items)) != len(items):
            raise ValueError(f"SHARD_IDS must name each shard once, got {value!r}")
        return value

    @field_validator("result_dir")
    @classmethod
    def _resolve_result_dir(cls, value: Path, info: ValidationInfo) -> Path:
        # Cross-field checks are field validators reading earlier fields (info.data), not a model validator, whose
        # error would quote the whole raw input, secrets included.
        if value == Path(""):
            data_dir = info.data.get("data_dir")
            return (data_dir if isinstance(data_dir, Path) else Path(defaults.DATA_DIR)) / defaults.RESULT_DIR_NAME
        return value if value.is_absolute() else defaults.PROJECT_ROOT / value

    @field_validator("result_store")
    @classmethod
    def _check_result_store(cls, value: str) -> str:
        if value not in defaults.RESULT_STORES:
            raise ValueError(f"RESULT_STORE must be one of {', '.join(defaults.RESULT_STORES)}, got {value!r}")
        return value

    @field_validator("s3_addressing_style")
    @classmethod
    def _check_addressing_style(cls, value: str) -> str:
        if value not in defaults.S3_ADDRESSING_STYLES:
            allowed = ", ".join(defaults.S3_ADDRESSING_STYLES)
            raise ValueError(f"S3_ADDRESSING_STYLE must be one of {allowed}, got {value!r}")
        return value

    @field_validator("redis_tls_cert_reqs")
    @classmethod
    def _check_cert_reqs(cls, value: str) -> str:
        if value not in defaults.REDIS_TLS_CERT_REQS:
            allowed = ", ".join(defaults.REDIS_TLS_CERT_REQS)
            raise ValueError(f"REDIS_TLS_CERT_REQS must be one of {allowed}, got {value!r}")
        return value

    @field_validator("redis_sentinels")
    @classmethod
    def _check_sentinels(cls, value: str) -> str:
        for item in value.split(","):
            raw = item.strip()
            if not raw:
                continue
            host, _, port = raw.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"REDIS_SENTINELS must be comma-separated host:port entries, got {raw!r} in {value!r}")
        return value

    @field_validator("s3_bucket")
    @classmethod
    def _check_s3_bucket(cls, value: str, info: ValidationInfo) -> str:
        if info.data.get("result_store") == "s3" and not value:
            raise ValueError("RESULT_STORE=s3 needs S3_BUCKET (the bucket that holds results), got ''")
        return value

    @field_validator("redis_sentinel_master")
    @classmethod
    def _check_sentinel_master(cls, value: str, info: ValidationInfo) -> str:
        sentinels = str(info.data.get("redis_sentinels", ""))
        if bool(sentinels.strip()) != bool(value):
            raise ValueError(
                "REDIS_SENTINELS and REDIS_SENTINEL_MASTER go together, got "
                f"REDIS_SENTINELS={sentinels!r}, REDIS_SENTINEL_MASTER={value!r}"
            )
        return value

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        """``REDIS_SENTINELS`` parsed into (host, port) pairs (validated when settings are read)."""
        pairs = []
        for item in self.redis_sentinels.split(","):
            raw = item.strip()
            if raw:
                host, _, port = raw.rpartition(":")
                pairs.append((host.strip("[]"), int(port)))
        return pairs

    def resolve_model(self, name: str | None = None) -> str:
        """The model folder (absolute, when it exists under the checkout) or id for ``name`` (an alias or a ref)."""
        ref = self.model if not name else self.model_aliases.get(name, name)
        candidate = Path(ref)
        if not candidate.is_absolute() and (defaults.PROJECT_ROOT / candidate).exists():
            return str(defaults.PROJECT_ROOT / candidate)
        return ref

    def served_models(self) -> frozenset[str]:
        """The resolved references of every model this configuration serves: ``MODEL`` and the aliases' targets."""
        return frozenset({self.resolve_model(), *(self.resolve_model(ref) for ref in self.model_aliases.values())})

    def serves(self, model: str) -> bool:
        """Whether a job recorded for ``model`` ("" = the default, from records older than the model field) may run
        on a worker with this configuration."""
        return not model or self.resolve_model(model) in self.served_models()

    @property
    def web_guild(self) -> str:
        """The guild whose member roles the web companion reads: ``WEB_GUILD_ID``, else the first guild id."""
        if self.web_guild_id.strip():
            return self.web_guild_id.strip()
        ids = self.guild_ids
        return str(ids[0]) if ids else ""

    @property
    def moderator_roles(self) -> frozenset[str]:
        """``moderator_role_ids`` as a set of role ids."""
        return frozenset(item.strip() for item in self.moderator_role_ids.split(",") if item.strip())

    @property
    def shard_id_list(self) -> list[int] | None:
        """``SHARD_IDS`` parsed (validated when settings are read); None: every shard of ``SHARD_COUNT``."""
        items = [int(item) for item in self.shard_ids.split(",") if item.strip()]
        return items or None

    def model_key(self, model: str = "") -> str:
        """The name jobs are routed by (``shared.queue.worker_models``): ``model`` ("" = ``MODEL``) through the
        aliases, a path under the checkout written relative to it, so every process of one configuration agrees."""
        ref = (self.model if not model else self.model_aliases.get(model, model)).strip().rstrip("/")
        path = Path(ref)
        if path.is_absolute():
            with contextlib.suppress(ValueError):
                return path.relative_to(defaults.PROJECT_ROOT).as_posix()
        return ref

    def worker_model_keys(self) -> frozenset[str]:
        """The model keys a worker with this configuration serves: ``WORKER_MODELS`` when set, else ``MODEL`` and
        every alias target."""
        listed = [item.strip() for item in self.worker_models.split(",") if item.strip()]
        if listed:
            return frozenset(self.model_key(item) for item in listed)
        return frozenset({self.model_key(), *(self.model_key(ref) for ref in self.model_aliases.values())})

    @property
    def guild_ids(self) -> list[int]:
        """``discord_guild_ids`` parsed; a malformed id raises ``ValueError`` naming it."""
        ids = []
        for item in self.discord_guild_ids.split(","):
            raw = item.strip()
            if not raw:
                continue
            if not raw.isdigit():
                raise ValueError(f"DISCORD_GUILD_IDS must be comma-separated numeric ids, got {raw!r}")
            ids.append(int(raw))
        return ids


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
