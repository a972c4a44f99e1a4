"""Gateway settings (``SAGE_GATEWAY_*``): the one place the gateway reads environment variables."""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from sage_ft.settings import GraderSettings, JobSettings, PathSettings, StorageSettings


class GatewaySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SAGE_GATEWAY_", extra="ignore")

    host: str = Field(default="127.0.0.1", description="Bind address.")
    port: int = Field(default=8080, ge=1, le=65535, description="Bind port.")
    auth_enabled: bool = Field(default=False, description="Require API keys; off = one local tenant, any key.")
    api_keys: SecretStr = Field(
        default=SecretStr(""),
        description="Comma-separated '<tenant>:<sha256 hex of key>' entries (hashes only, never raw keys).",
    )
    max_upload_mb: float = Field(default=512.0, gt=0, description="Largest accepted upload, in MiB.")
    maintenance_seconds: float = Field(default=5.0, gt=0, description="Period of the reaper/reconciler pass.")
    shutdown_grace_seconds: float = Field(
        default=10.0,
        gt=0,
        description="On SIGTERM, how long open requests get before they are cut (streams end at "
        "once with a frame to resume from).",
    )
    sse_poll_seconds: float = Field(
        default=5.0, gt=0, description="Event streams are woken by news at once; without news, a keep-alive this often."
    )
    serving_url: str = Field(
        default="http://127.0.0.1:8090", description="Internal URL of the serving service (chat and deployments)."
    )
    probe_timeout_seconds: float = Field(
        default=2.0, gt=0, le=30, description="/readyz waits this long for each dependency's answer, at most."
    )
    probe_cache_seconds: float = Field(default=2.0, ge=0, description="/readyz reuses a dependency's answer this long.")
    alias_cache_seconds: float = Field(
        default=2.0,
        ge=0,
        description="How long an alias stays resolved to its newest servable model (0: every request).",
    )
    read_rate_limit: str = Field(
        default="", description="GET requests allowed per API key, e.g. '30/second' or '600/minute' (empty: no limit)."
    )
    log_level: str = Field(default="info", description="Uvicorn log level.")
    estimate_tokens_per_second: float = Field(
        default=500.0,
        gt=0,
        description="Dry-run estimates: the training speed assumed for a base model and preset "
        "with no succeeded job on record yet (afterwards, measured jobs decide).",
    )
    estimate_liger: bool = Field(
        default=True,
        description="Dry-run estimates: the GPU workers train SFT with Liger's kernels (the GPU image installs "
        "liger-kernel), which keep less activation memory. False for workers without it.",
    )

    @field_validator("read_rate_limit")
    @classmethod
    def _rate(cls, value: str) -> str:
        if value.strip():
            from limits import parse

            try:
                parse(value)
            except ValueError as err:
                raise ValueError(f"expected a rate such as '30/second': {err}") from None
        return value.strip()

    def key_table(self) -> list[tuple[str, str]]:
        """(tenant, sha256 hex) pairs."""
        out = []
        for entry in self.api_keys.get_secret_value().split(","):
            if entry.strip():
                tenant, _, digest = entry.strip().partition(":")
                out.append((tenant.strip(), digest.strip().lower()))
        return out


class WebhookSettings(BaseSettings):
    """Webhook deliveries (``SAGE_WEBHOOK_*``): what a receiver may be, and how failures are retried."""

    model_config = SettingsConfigDict(env_prefix="SAGE_WEBHOOK_", extra="ignore")

    allow_http: bool = Field(
        default=False, description="Allow plain-http endpoint URLs (tests, a local stack); https only when false."
    )
    allow_private_addresses: bool = Field(
        default=False,
        description="Allow receivers at loopback, private, link-local (cloud metadata) and other non-global "
        "addresses; checked on the address the name resolves to when each attempt is sent.",
    )
    timeout_seconds: float = Field(default=10.0, gt=0, le=60, description="Longest wait for a receiver's answer.")
    retry_hours: float = Field(
        default=72.0, gt=0, description="How long a failing delivery is retried before it is given up (OpenAI's)."
    )
    backoff_seconds: float = Field(
        default=30.0, gt=0, description="Wait before the first retry; it doubles each time, with jitter."
    )
    backoff_max_seconds: float = Field(default=3600.0, gt=0, description="Longest wait between two attempts.")
    disable_after_failures: int = Field(
        default=200,
        ge=1,
        description="Consecutive failed attempts (across deliveries) after which an endpoint is disabled; a person "
        "re-enables it (about three days of retries for one event).",
    )
    rotation_overlap_seconds: float = Field(
        default=86400.0,
        gt=0,
        description="How long the previous secret still signs after rotate_secret(keep_old_secret_active_for_24_hours)"
        " (24 hours, as OpenAI's).",
    )
    per_endpoint_concurrency: int = Field(
        default=2, ge=1, le=64, description="Attempts in flight to one endpoint: a dead one cannot hold up others."
    )
    concurrency: int = Field(default=32, ge=1, le=1024, description="Attempts in flight per gateway, in all.")
    poll_seconds: float = Field(default=0.5, gt=0, le=60, description="How often due deliveries are looked for.")


class Settings:
    """Every settings group the gateway uses, read once when the app is built."""

    def __init__(
        self,
        gateway: GatewaySettings | None = None,
        jobs: JobSettings | None = None,
        storage: StorageSettings | None = None,
        paths: PathSettings | None = None,
        graders: GraderSettings | None = None,
        webhooks: WebhookSettings | None = None,
    ) -> None:
        self.gateway = gateway or GatewaySettings()
        self.jobs = jobs or JobSettings()
        self.storage = storage or StorageSettings()
        self.paths = paths or PathSettings()
        self.graders = graders or GraderSettings()
        self.webhooks = webhooks or WebhookSettings()
