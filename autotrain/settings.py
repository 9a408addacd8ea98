"""Settings, read from the environment and a `.env` file (every one is listed in the README, "Settings")."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, PrivateAttr, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from autotrain.i18n import Language

DEFAULT_ALLOWED_MODULES = ("fashion_rules.json", "prompt_v2.txt", "stylist_guidelines.md")
DEFAULT_CANARY_PERCENT = 10
MIN_JWT_SECRET_BYTES = 32  # HS256's key should be as long as its hash (RFC 7518, 3.2)
# The default rules folder is one of the working folder's own (ignored by the project's .gitignore), copied
# from the seed rule files the repository ships in config/ on first start: deploys never edit tracked files.
DEFAULT_RULES_DIR = Path("rules")
SEED_RULES_DIR = Path(__file__).resolve().parent.parent / "config"
# Before that the default was config/ itself; a working folder that Auto-Train has deployed into (it keeps
# config/.autotrain/) and that has no rules/ yet keeps using it, so an upgrade never moves its rules.
LEGACY_RULES_DIR = Path("config")

# Optional settings: the README documents each as "unset" (or "empty: off"), and an empty value (VAR=) means
# exactly that, as when the variable is absent: the feature is off, or its fallback is used.
OPTIONAL_SETTINGS = (
    "slack_bot_token",
    "slack_signing_secret",
    "slack_app_token",
    "slack_api_url",
    "anthropic_api_key",
    "anthropic_base_url",
    "reload_url",
    "admin_usergroup",
    "review_channel",
    "alert_channel",
    "digest_channel",
    "jwt_secret",
    "jwt_public_key",
    "jwt_private_key",
    "webhook_secret",
    "auto_approve_confidence",
    "cluster_threshold",
    "git_remote",
    "git_branch",
    "reload_secret",
    "chatbot_replay_url",
    "chatbot_prompt_file",
)


POSTGRES_PREFIXES = ("postgresql://", "postgres://")


def redacted_url(url: str) -> str:
    """A database URL fit for a log line: its password replaced (postgresql://user:***@host/db)."""
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not at or ":" not in credentials:
        return url
    return f"{scheme}{sep}{credentials.split(':', 1)[0]}:***@{host}"


def _env(name: str) -> AliasChoices:
    return AliasChoices(name, name.lower())


class Settings(BaseSettings):
    # errors never echo a value: a setting may be a secret (a too-short AUTOTRAIN_JWT_SECRET is still one)
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True, hide_input_in_errors=True)

    # Slack (off unless both HTTP-mode settings are given)
    slack_bot_token: SecretStr | None = Field(None, validation_alias=_env("SLACK_BOT_TOKEN"))
    slack_signing_secret: SecretStr | None = Field(None, validation_alias=_env("SLACK_SIGNING_SECRET"))
    slack_app_token: SecretStr | None = Field(None, validation_alias=_env("SLACK_APP_TOKEN"))
    slack_api_url: str | None = Field(None, validation_alias=_env("SLACK_API_URL"))

    # Claude (off unless a key is given: the offline heuristic generator is used)
    anthropic_api_key: SecretStr | None = Field(None, validation_alias=_env("ANTHROPIC_API_KEY"))
    anthropic_base_url: str | None = Field(None, validation_alias=_env("ANTHROPIC_BASE_URL"))
    model: str = Field("claude-sonnet-5-5", validation_alias=_env("AUTOTRAIN_MODEL"))
    claude_max_tokens: int = Field(1024, ge=64, le=16384, validation_alias=_env("AUTOTRAIN_CLAUDE_MAX_TOKENS"))
    claude_timeout_seconds: float = Field(60.0, gt=0, validation_alias=_env("AUTOTRAIN_CLAUDE_TIMEOUT_SECONDS"))
    claude_max_retries: int = Field(2, ge=0, le=10, validation_alias=_env("AUTOTRAIN_CLAUDE_MAX_RETRIES"))
    claude_output_retries: int = Field(1, ge=0, le=5, validation_alias=_env("AUTOTRAIN_CLAUDE_OUTPUT_RETRIES"))

    # what Slack, the CLI and the offline generator write in (vi | en); a Slack user's own locale wins
    language: Language = Field(Language.EN, validation_alias=_env("AUTOTRAIN_LANGUAGE"))

    database_url: str = Field("sqlite:///autotrain.db", validation_alias=_env("AUTOTRAIN_DATABASE_URL"))
    rules_dir: Path = Field(DEFAULT_RULES_DIR, validation_alias=_env("AUTOTRAIN_RULES_DIR"))
    allowed_modules: Annotated[tuple[str, ...], NoDecode] = Field(
        DEFAULT_ALLOWED_MODULES, validation_alias=_env("AUTOTRAIN_ALLOWED_MODULES")
    )
    reload_url: str | None = Field(None, validation_alias=_env("AUTOTRAIN_RELOAD_URL"))
    reload_timeout_seconds: float = Field(5.0, gt=0, validation_alias=_env("AUTOTRAIN_RELOAD_TIMEOUT_SECONDS"))
    # signs the reload call like the webhooks (X-Autotrain-Signature); unset: AUTOTRAIN_WEBHOOK_SECRET's
    reload_secret: SecretStr | None = Field(None, validation_alias=_env("AUTOTRAIN_RELOAD_SECRET"))
    backup_keep: int = Field(50, ge=1, validation_alias=_env("AUTOTRAIN_BACKUP_KEEP"))

    admins: Annotated[tuple[str, ...], NoDecode] = Field((), validation_alias=_env("AUTOTRAIN_ADMINS"))
    admin_usergroup: str | None = Field(None, validation_alias=_env("AUTOTRAIN_ADMIN_USERGROUP"))
    review_channel: str | None = Field(None, validation_alias=_env("AUTOTRAIN_REVIEW_CHANNEL"))
    card_retry_seconds: float = Field(60.0, gt=0, validation_alias=_env("AUTOTRAIN_CARD_RETRY_SECONDS"))
    alert_channel: str | None = Field(None, validation_alias=_env("AUTOTRAIN_ALERT_CHANNEL"))
    digest_channel: str | None = Field(None, validation_alias=_env("AUTOTRAIN_DIGEST_CHANNEL"))

    jwt_secret: SecretStr | None = Field(None, validation_alias=_env("AUTOTRAIN_JWT_SECRET"))
    jwt_algorithm: Literal["HS256", "RS256"] = Field("HS256", validation_alias=_env("AUTOTRAIN_JWT_ALGORITHM"))
    # RS256: the public key (PEM text or a file path) verifies; the private key is only for `autotrain token`
    jwt_public_key: str | None = Field(None, validation_alias=_env("AUTOTRAIN_JWT_PUBLIC_KEY"))
    jwt_private_key: SecretStr | None = Field(None, validation_alias=_env("AUTOTRAIN_JWT_PRIVATE_KEY"))
    auto_generate: bool = Field(True, validation_alias=_env("AUTOTRAIN_AUTO_GENERATE"))
    run_all_concurrency: int = Field(4, ge=1, le=64, validation_alias=_env("AUTOTRAIN_RUN_ALL_CONCURRENCY"))
    generation_wait_seconds: float = Field(60.0, gt=0, validation_alias=_env("AUTOTRAIN_GENERATION_WAIT_SECONDS"))
    metrics_public: bool = Field(False, validation_alias=_env("AUTOTRAIN_METRICS_PUBLIC"))

    alert_interval_seconds: int = Field(300, ge=1, validation_alias=_env("AUTOTRAIN_ALERT_INTERVAL_SECONDS"))
    alert_pending_max: int = Field(100, ge=0, validation_alias=_env("AUTOTRAIN_ALERT_PENDING_MAX"))
    alert_error_rate_max: float = Field(0.05, ge=0, validation_alias=_env("AUTOTRAIN_ALERT_ERROR_RATE_MAX"))
    alert_deploys_per_day_max: int = Field(50, ge=0, validation_alias=_env("AUTOTRAIN_ALERT_DEPLOYS_PER_DAY_MAX"))
    alert_approval_hours_max: float = Field(24, ge=0, validation_alias=_env("AUTOTRAIN_ALERT_APPROVAL_HOURS_MAX"))
    alert_cooldown_seconds: int = Field(3600, ge=0, validation_alias=_env("AUTOTRAIN_ALERT_COOLDOWN_SECONDS"))
    # rule_not_working: a deployed rule whose complaint came back at least this often and whose verdict says so
    alert_recurrences_min: int = Field(3, ge=1, validation_alias=_env("AUTOTRAIN_ALERT_RECURRENCES_MIN"))
    alert_error_rate_window_minutes: int = Field(
        60, ge=1, validation_alias=_env("AUTOTRAIN_ALERT_ERROR_RATE_WINDOW_MINUTES")
    )
    alert_error_rate_min_attempts: int = Field(
        5, ge=1, validation_alias=_env("AUTOTRAIN_ALERT_ERROR_RATE_MIN_ATTEMPTS")
    )
    approval_window_days: int = Field(7, ge=1, validation_alias=_env("AUTOTRAIN_APPROVAL_WINDOW_DAYS"))
    scheduler_enabled: bool = Field(True, validation_alias=_env("AUTOTRAIN_SCHEDULER"))
    webhook_urls: Annotated[tuple[str, ...], NoDecode] = Field((), validation_alias=_env("AUTOTRAIN_WEBHOOK_URLS"))
    webhook_secret: SecretStr | None = Field(None, validation_alias=_env("AUTOTRAIN_WEBHOOK_SECRET"))
    webhook_max_attempts: int = Field(5, ge=1, le=20, validation_alias=_env("AUTOTRAIN_WEBHOOK_MAX_ATTEMPTS"))
    digest_cron: str = Field("0 9 * * *", validation_alias=_env("AUTOTRAIN_DIGEST_CRON"))
    timezone: str = Field("UTC", validation_alias=_env("AUTOTRAIN_TIMEZONE"))
    feedback_rate_limit: str = Field("10/hour", validation_alias=_env("AUTOTRAIN_FEEDBACK_RATE_LIMIT"))
    # feedback per token (its subject), whatever user_id each feedback names: one client cannot flood by
    # inventing end users
    token_rate_limit: str = Field("600/hour", validation_alias=_env("AUTOTRAIN_TOKEN_RATE_LIMIT"))
    rate_limit_storage: str = Field("memory://", validation_alias=_env("AUTOTRAIN_RATE_LIMIT_STORAGE"))
    claude_rate_limit: str = Field("50/minute", validation_alias=_env("AUTOTRAIN_CLAUDE_RATE_LIMIT"))
    slack_post_rate_limit: str = Field("1/second", validation_alias=_env("AUTOTRAIN_SLACK_POST_RATE_LIMIT"))
    auto_approve_confidence: float | None = Field(
        None, ge=0, le=1, validation_alias=_env("AUTOTRAIN_AUTO_APPROVE_CONFIDENCE")
    )
    auto_deploy: bool = Field(False, validation_alias=_env("AUTOTRAIN_AUTO_DEPLOY"))
    # run-all groups near-duplicate feedback above this similarity (0–1); unset (empty) turns grouping off
    cluster_threshold: float | None = Field(0.40, gt=0, le=1, validation_alias=_env("AUTOTRAIN_CLUSTER_THRESHOLD"))
    require_canary: bool = Field(False, validation_alias=_env("AUTOTRAIN_REQUIRE_CANARY"))
    # the share of users a canary from a card (`PipelineService.canary`) reaches; 100 would be no canary
    canary_percent: int = Field(DEFAULT_CANARY_PERCENT, ge=1, le=99, validation_alias=_env("AUTOTRAIN_CANARY_PERCENT"))
    git_history: bool = Field(True, validation_alias=_env("AUTOTRAIN_GIT"))
    # push every rule-file commit here (a URL or a path git understands), to this branch (default: the current)
    git_remote: str | None = Field(None, validation_alias=_env("AUTOTRAIN_GIT_REMOTE"))
    git_branch: str | None = Field(None, validation_alias=_env("AUTOTRAIN_GIT_BRANCH"))
    # did a rule work (autotrain/effect.py): the window before a deploy it is compared with, the feedback a
    # period (or a canary group) needs before a verdict, and the significance level of Fisher's exact test
    effect_window_days: int = Field(7, ge=1, le=365, validation_alias=_env("AUTOTRAIN_EFFECT_WINDOW_DAYS"))
    effect_min_sample: int = Field(30, ge=1, validation_alias=_env("AUTOTRAIN_EFFECT_MIN_SAMPLE"))
    effect_alpha: float = Field(0.05, gt=0, lt=0.5, validation_alias=_env("AUTOTRAIN_EFFECT_ALPHA"))
    # replay before deploy (autotrain/evaluation.py): after generation and after an edit when a judge is set
    evaluate: Literal["auto", "off"] = Field("auto", validation_alias=_env("AUTOTRAIN_EVALUATE"))
    require_evaluation: bool = Field(False, validation_alias=_env("AUTOTRAIN_REQUIRE_EVALUATION"))
    chatbot_replay_url: str | None = Field(None, validation_alias=_env("AUTOTRAIN_CHATBOT_REPLAY_URL"))
    chatbot_prompt_file: Path | None = Field(None, validation_alias=_env("AUTOTRAIN_CHATBOT_PROMPT_FILE"))
    eval_complaints: int = Field(3, ge=0, le=50, validation_alias=_env("AUTOTRAIN_EVAL_COMPLAINTS"))
    eval_regressions: int = Field(8, ge=0, le=200, validation_alias=_env("AUTOTRAIN_EVAL_REGRESSIONS"))
    eval_praise: int = Field(3, ge=0, le=50, validation_alias=_env("AUTOTRAIN_EVAL_PRAISE"))
    eval_token_budget: int = Field(60_000, ge=1, validation_alias=_env("AUTOTRAIN_EVAL_TOKEN_BUDGET"))
    eval_revisions: int = Field(1, ge=0, le=3, validation_alias=_env("AUTOTRAIN_EVAL_REVISIONS"))
    eval_concurrency: int = Field(4, ge=1, le=32, validation_alias=_env("AUTOTRAIN_EVAL_CONCURRENCY"))
    # promote or roll back a canary on that evidence, at every alert check (off: admins decide)
    canary_auto_decide: bool = Field(False, validation_alias=_env("AUTOTRAIN_CANARY_AUTO_DECIDE"))
    # how long a generation holds its feedback before another process may take it over (renewed every third)
    generation_lease_seconds: float = Field(
        60.0, gt=0, le=3600, validation_alias=_env("AUTOTRAIN_GENERATION_LEASE_SECONDS")
    )
    # how long an event delivery (a card update, with Slack's own retries) holds its claim before another
    # process, or this one after a restart, may deliver it again
    event_lease_seconds: float = Field(60.0, gt=0, le=3600, validation_alias=_env("AUTOTRAIN_EVENT_LEASE_SECONDS"))
    # `autotrain serve`: open connections at most (the oldest still sending its request is closed for a new one),
    # and how long a request's headers, and then its whole body, may take to arrive (408 after)
    max_connections: int = Field(500, ge=1, le=1_000_000, validation_alias=_env("AUTOTRAIN_MAX_CONNECTIONS"))
    read_timeout_seconds: float = Field(10.0, gt=0, le=3600, validation_alias=_env("AUTOTRAIN_READ_TIMEOUT_SECONDS"))

    # True when AUTOTRAIN_RULES_DIR is unset and the folder of the old default (config/) is used
    _legacy_rules_dir: bool = PrivateAttr(False)

    @model_validator(mode="after")
    def _default_rules_dir(self) -> Settings:
        if "rules_dir" not in self.model_fields_set and self.rules_dir == DEFAULT_RULES_DIR:
            if not DEFAULT_RULES_DIR.exists() and (LEGACY_RULES_DIR / ".autotrain").is_dir():
                self.rules_dir = LEGACY_RULES_DIR
                self._legacy_rules_dir = True
        return self

    @property
    def rules_dir_is_default(self) -> bool:
        """AUTOTRAIN_RULES_DIR unset: the working folder's rules/ (copied from the seed on first start)."""
        return "rules_dir" not in self.model_fields_set

    @property
    def rules_dir_is_legacy(self) -> bool:
        """AUTOTRAIN_RULES_DIR unset, and config/ used since Auto-Train has deployed there before."""
        return self._legacy_rules_dir

    @field_validator(*OPTIONAL_SETTINGS, mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("jwt_secret")
    @classmethod
    def _long_enough_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value().encode()) < MIN_JWT_SECRET_BYTES:
            raise ValueError(
                f"AUTOTRAIN_JWT_SECRET must be at least {MIN_JWT_SECRET_BYTES} bytes (e.g. the output of "
                "`python -c 'import secrets; print(secrets.token_urlsafe(48))'`), or unset to use a generated one"
            )
        return value

    @field_validator("allowed_modules", "admins", "webhook_urls", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("allowed_modules")
    @classmethod
    def _plain_file_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if name != Path(name).name or name.startswith("."):
                raise ValueError(f"allowed module {name!r} must be a plain file name inside the rules folder")
        return value

    @field_validator("feedback_rate_limit", "token_rate_limit", "claude_rate_limit", "slack_post_rate_limit")
    @classmethod
    def _rate(cls, value: str) -> str:
        from limits import parse

        try:
            item = parse(value)
        except ValueError as exc:
            raise ValueError(f"{value!r} is not a rate like 10/hour or 1/second") from exc
        if item.amount < 1:
            raise ValueError(f"{value!r} would refuse everything; the amount must be at least 1")
        return value

    @field_validator("digest_cron")
    @classmethod
    def _five_fields(cls, value: str) -> str:
        if len(value.split()) != 5:
            raise ValueError("AUTOTRAIN_DIGEST_CRON must have five fields: minute hour day month weekday")
        return value

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown timezone {value!r} (use an IANA name like Asia/Ho_Chi_Minh)") from exc
        return value

    @property
    def uses_postgres(self) -> bool:
        """AUTOTRAIN_DATABASE_URL=postgresql://…: the production store, which several instances share."""
        return self.database_url.startswith(POSTGRES_PREFIXES)

    @property
    def database_path(self) -> Path:
        """The SQLite file (only for sqlite:/// URLs)."""
        prefix = "sqlite:///"
        if not self.database_url.startswith(prefix):
            raise ValueError(f"AUTOTRAIN_DATABASE_URL is not a SQLite file: {redacted_url(self.database_url)}")
        return Path(self.database_url[len(prefix) :])

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        if not value.startswith(("sqlite:///", *POSTGRES_PREFIXES)):
            raise ValueError("must look like sqlite:///path or postgresql://user@host:port/database")
        return value

    @property
    def slack_enabled(self) -> bool:
        return self.slack_bot_token is not None and (
            self.slack_signing_secret is not None or self.slack_app_token is not None
        )

    @property
    def socket_mode(self) -> bool:
        return self.slack_enabled and self.slack_app_token is not None

    @property
    def claude_enabled(self) -> bool:
        return self.anthropic_api_key is not None
