"""One typed settings object, read once from the environment.

Variables: ``DATABASE_URL``, ``REDIS_URL`` and everything prefixed ``LIVEGIFTS_``
(for example ``LIVEGIFTS_JWT_SECRET``). Tests and the app factory build a
``Settings`` explicitly instead of reading globals.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEVELOPMENT_SECRET = "livegifts-development-secret-change-me"


class Environment(StrEnum):
    DEVELOPMENT = "development"
    PRODUCTION = "production"


class LogFormat(StrEnum):
    JSON = "json"  # one JSON object per line, for log collectors
    TEXT = "text"  # readable lines, for development


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LIVEGIFTS_", extra="ignore")

    environment: Environment = Environment.DEVELOPMENT
    database_url: str = Field(
        default="sqlite+aiosqlite:///./livegifts.db",
        validation_alias=AliasChoices("DATABASE_URL", "LIVEGIFTS_DATABASE_URL"),
    )
    redis_url: str | None = Field(
        default=None, validation_alias=AliasChoices("REDIS_URL", "LIVEGIFTS_REDIS_URL")
    )
    # Starts every Redis key and channel: deployments sharing one Redis need their own.
    redis_prefix: str = Field(default="livegifts", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    jwt_secret: str = DEVELOPMENT_SECRET
    jwt_audience: str = "livegifts"
    # When set, tokens must carry this "iss" (the identity provider's); unset, it is not read.
    jwt_issuer: str | None = None
    token_ttl_seconds: int = 7 * 24 * 3600
    sandbox_secret: str = DEVELOPMENT_SECRET
    seed_demo_data: bool = True
    graphiql: bool | None = None
    database_pool_size: int = 10
    # Sends of the same gift by the same viewer within this many seconds form a combo.
    combo_window_seconds: float = 5.0
    # Installed plugins (entry-point group "livegifts"): "all", "none", or a comma-separated
    # allow-list of entry-point names; a block-list always wins; strict makes failures fatal.
    plugins: str = "all"
    # Extra plugins by import path ("package.module" or "package.module:object"), loaded
    # without installing them: handy while writing one.
    plugin_modules: str = ""
    plugins_block: str = ""
    plugins_strict: bool = False
    # Each plugin's own settings, by plugin (entry-point) name, as a JSON object:
    # {"my-brand": {"daily_cap": 5}}; a plugin's hooks get theirs as ``config``.
    plugin_config: dict[str, dict[str, Any]] = {}
    # A brand seen for the first time goes live at once, or waits for an operator's
    # 'livegifts brands approve SLUG'. Default: at once in development, waits in production.
    brands_auto_approve: bool | None = None
    # Each plugin's bulkhead: a call answers within the time limit or its caller is freed;
    # its own threads, and calls allowed to wait for them (more are refused at once);
    # after this many failures in a row its calls are refused at once for the cool-down,
    # then one probe call decides.
    plugin_timeout_seconds: float = Field(default=1.0, gt=0)
    plugin_threads: int = Field(default=4, ge=1, le=256)
    plugin_max_waiting: int = Field(default=64, ge=0)
    plugin_breaker_failures: int = Field(default=5, ge=1)
    plugin_breaker_cooldown_seconds: float = Field(default=30.0, gt=0)
    # The event log (every live event, kept for resuming subscribers): events are kept this
    # many days ('livegifts events prune' deletes older ones); an event its own process did
    # not get onto the bus within the grace is published by the relay of any process.
    event_retention_days: float = Field(default=7.0, gt=0)
    event_relay_grace_seconds: float = Field(default=5.0, ge=0)
    # Webhooks: a failed delivery is tried again after this many seconds, doubled after each
    # further failure (at most an hour apart); a subscription failing this many hours in a
    # row is disabled, with the reason, until its owner enables it again.
    webhook_retry_base_seconds: float = Field(default=10.0, gt=0)
    webhook_give_up_hours: float = Field(default=72.0, ge=24)
    # A brand's budget falling below this many coins is an event (BrandBudgetLow) its
    # partner can receive.
    # The address clients reach this server at, for the absolute URLs of pictures it serves
    # (gift artwork). `livegifts serve` sets it from --host and --port when unset.
    public_base_url: str = Field(default="http://127.0.0.1:8000", pattern=r"^https?://[^/\s]+")
    brand_budget_low_coins: int = Field(default=10_000, ge=0)
    # What a brand's revenue coins are paid out at, in the cash currency's minor units a
    # hundred coins (the rate the platform and its partners agreed; by default a coin is
    # worth what a diamond is on the default rate card).
    brand_payout_cash_minor_per_100_coins: int = Field(default=50, ge=1, le=100_000)
    # Safeguards: the age to buy, send or receive gifts, and the platform's spending caps
    # (a viewer may set lower ones).
    minimum_age: int = 18
    default_daily_cap_coins: int = 1_000_000
    default_monthly_cap_coins: int = 10_000_000
    # Payouts, in diamonds; cash value from the rate card in force.
    payout_minimum_diamonds: int = 1_000
    payout_daily_maximum_diamonds: int = 2_000_000
    payout_provider: str = "sandbox"
    # Limits of the public API.
    max_query_depth: int = 12
    max_aliases: int = 30
    max_tokens: int = 3000
    max_query_cost: int = 10_000
    max_request_bytes: int = 1_000_000
    introspection: bool | None = None  # default: on in development, off in production
    cors_origins: str = ""  # comma-separated origins allowed to call from browsers; "*" for any
    websocket_origins: str = ""  # comma-separated origins allowed to open subscriptions
    # Per-message deflate on subscriptions: events are small, and compressing each one for
    # each subscriber cost a fifth of a server's time at 1,000 subscribers (BENCHMARKS.md).
    websocket_compression: bool = False
    # Public answers (the catalogue, coin packages, rate cards) kept per process, by document,
    # variables and data version; 0 switches the cache off. GET answers to anonymous callers
    # may be kept by browsers and CDNs this long (ETag revalidation after that).
    response_cache_entries: int = Field(default=1000, ge=0)
    public_max_age_seconds: int = Field(default=5, ge=0)
    # Only documents an operator added with ``livegifts documents add`` are executed.
    trusted_documents_only: bool = False
    # Addresses of the reverse proxies whose X-Forwarded-For / X-Forwarded-Proto are
    # believed (comma-separated IPs or networks, "*" for any); none by default.
    trusted_proxies: str = ""
    rate_limit_per_user: int = 600  # requests a minute
    rate_limit_per_ip: int = 1200
    # Observability (app/observability.py): logs, readiness and OpenTelemetry tracing.
    log_format: LogFormat = LogFormat.JSON
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    ready_timeout_seconds: float = 2.0  # each /ready check must answer within this
    otel_enabled: bool = False
    otel_exporter_otlp_endpoint: str | None = Field(
        default=None, validation_alias=AliasChoices("OTEL_EXPORTER_OTLP_ENDPOINT"))

    @model_validator(mode="after")
    def _production_needs_real_secrets(self) -> Settings:
        if self.environment is Environment.PRODUCTION:
            weak = [
                name
                for name in ("jwt_secret", "sandbox_secret")
                if getattr(self, name) == DEVELOPMENT_SECRET or len(getattr(self, name)) < 32
            ]
            if weak:
                names = ", ".join(f"LIVEGIFTS_{n.upper()}" for n in weak)
                raise ValueError(f"production mode needs {names} set to a secret of 32+ characters")
        return self

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def introspection_enabled(self) -> bool:
        if self.introspection is not None:
            return self.introspection
        return self.environment is Environment.DEVELOPMENT

    @property
    def tracing_enabled(self) -> bool:
        return self.otel_enabled or bool(self.otel_exporter_otlp_endpoint)

    @property
    def brands_auto_approved(self) -> bool:
        if self.brands_auto_approve is not None:
            return self.brands_auto_approve
        return self.environment is Environment.DEVELOPMENT

    @property
    def graphiql_enabled(self) -> bool:
        if self.graphiql is not None:
            return self.graphiql
        return self.environment is Environment.DEVELOPMENT
