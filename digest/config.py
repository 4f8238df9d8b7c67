"""Settings read from the environment and an optional `.env` file (docs/configuration.md)."""

from __future__ import annotations

import ipaddress
import secrets
from email.headerregistry import Address
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, get_args
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from digest.errors import ConfigError
from digest.http_urls import is_http_url
from digest.providers import PROVIDERS
from digest.text import DISPLAY_NAME_LIMIT, removed_characters

# Where a development key is kept when DIGEST_SECRET_KEY is unset, so that links written by
# `digest demo` still verify in a later `digest web` started from the same folder.
DEV_SECRET_FILE = Path(".digest-secret-key")


def _link_template(
    value: str | None, name: str, placeholders: tuple[str, ...], example: str
) -> str | None:
    """An http(s) link template holding every placeholder; empty means unset."""
    if value is None or not value.strip():
        return None
    filled = value
    for placeholder in placeholders:
        filled = filled.replace(placeholder, "x")
    missing = [p for p in placeholders if p not in value]
    if missing or not is_http_url(filled):
        raise ConfigError(
            f"{name}={value!r} is not an http(s) URL holding {' and '.join(placeholders)}. "
            f"Set it to a template such as {example}, or leave it unset."
        )
    return value


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def proxy_networks(value: str) -> tuple[IPNetwork, ...]:
    """DIGEST_TRUSTED_PROXIES: addresses or networks (CIDR), split by commas or spaces."""
    networks = []
    for entry in value.replace(",", " ").split():
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ConfigError(
                f"DIGEST_TRUSTED_PROXIES holds {entry!r}, which is not an IP address or network. "
                "List the addresses of your proxies, such as 10.0.0.5 or 10.0.0.0/24, "
                "separated by commas, or leave it unset."
            ) from None
    return tuple(networks)


# A cancel is asked only if it can be confirmed this long before the provider's deadline (the
# request and its read-back take time), so a lead time must leave more than that.
CANCEL_MARGIN_SECONDS = 30


class Settings(BaseSettings):
    """Every knob of verdict-digest; names match the environment variables."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    database_url: str = Field(default="sqlite:///digest.db", alias="DIGEST_DATABASE_URL")
    email_backend: str = Field(default="outbox", alias="DIGEST_EMAIL_BACKEND")
    outbox_dir: Path = Field(default=Path("outbox"), alias="DIGEST_OUTBOX_DIR")
    sendgrid_api_key: SecretStr | None = Field(default=None, alias="SENDGRID_API_KEY")
    sendgrid_host: str = Field(default="https://api.sendgrid.com", alias="DIGEST_SENDGRID_HOST")
    # A request's answer is awaited at most this long; nan or inf would wait for ever, 0 or
    # less would fail every request.
    sendgrid_timeout_seconds: float = Field(
        default=30.0, gt=0, le=600, allow_inf_nan=False, alias="DIGEST_SENDGRID_TIMEOUT_SECONDS"
    )
    from_email: str = Field(default="digest@verdicts.example.com", alias="DIGEST_FROM_EMAIL")
    from_name: str = Field(default="Verdict Digest", alias="DIGEST_FROM_NAME")
    site_url: str = Field(default="http://127.0.0.1:8000", alias="DIGEST_SITE_URL")
    postal_address: str = Field(
        default="Verdict Digest, 1 Example Street, Springfield, 00000, USA",
        alias="DIGEST_POSTAL_ADDRESS",
    )
    timezone: str = Field(default="UTC", alias="DIGEST_TIMEZONE")
    secret_key: SecretStr | None = Field(default=None, alias="DIGEST_SECRET_KEY")
    sendgrid_webhook_public_key: str | None = Field(
        default=None, alias="DIGEST_SENDGRID_WEBHOOK_PUBLIC_KEY"
    )
    # Bearer token of `digest web`'s GET /feeds/votes.json; unset or blank, the feed answers 404.
    votes_feed_token: SecretStr | None = Field(default=None, alias="DIGEST_VOTES_FEED_TOKEN")
    environment: Literal["development", "production"] = Field(
        default="development", alias="DIGEST_ENV"
    )
    batch_size: int = Field(default=1000, ge=1, le=1000, alias="DIGEST_BATCH_SIZE")
    # A run renews its lease every sixth of this; one silent for this long is taken over.
    lease_seconds: int = Field(default=30, ge=5, alias="DIGEST_LEASE_SECONDS")
    send_max_attempts: int = Field(default=5, ge=1, alias="DIGEST_SEND_MAX_ATTEMPTS")
    schedule_timezone: str = Field(default="UTC", alias="DIGEST_SCHEDULE_TIMEZONE")
    compare_url: str | None = Field(default=None, alias="DIGEST_COMPARE_URL")
    tool_url: str | None = Field(default=None, alias="DIGEST_TOOL_URL")
    confirm_token_days: int = Field(default=7, ge=1, le=365, alias="DIGEST_CONFIRM_TOKEN_DAYS")
    signup_limit_per_ip: int = Field(default=20, ge=1, alias="DIGEST_SIGNUP_LIMIT_PER_IP")
    signup_limit_per_address: int = Field(default=5, ge=1, alias="DIGEST_SIGNUP_LIMIT_PER_ADDRESS")
    signup_limit_total: int = Field(default=1000, ge=1, alias="DIGEST_SIGNUP_LIMIT_TOTAL")
    signup_limit_window_seconds: int = Field(
        default=3600, ge=1, alias="DIGEST_SIGNUP_LIMIT_WINDOW_SECONDS"
    )
    web_header_timeout_seconds: float = Field(
        default=10.0, gt=0, alias="DIGEST_WEB_HEADER_TIMEOUT_SECONDS"
    )
    web_keep_alive_seconds: int = Field(default=5, ge=1, alias="DIGEST_WEB_KEEP_ALIVE_SECONDS")
    web_max_header_bytes: int = Field(
        default=16 * 1024, ge=1024, alias="DIGEST_WEB_MAX_HEADER_BYTES"
    )
    web_limit_concurrency: int = Field(default=1000, ge=1, alias="DIGEST_WEB_LIMIT_CONCURRENCY")
    # Per client (its address; behind a trusted proxy, the address the proxy forwards for).
    web_connections_per_client: int = Field(
        default=50, ge=1, alias="DIGEST_WEB_CONNECTIONS_PER_CLIENT"
    )
    web_bodies_per_client: int = Field(default=10, ge=1, alias="DIGEST_WEB_BODIES_PER_CLIENT")
    # A request body arrives whole within this long, and never slower than the rate below.
    web_body_timeout_seconds: float = Field(
        default=30.0, gt=0, alias="DIGEST_WEB_BODY_TIMEOUT_SECONDS"
    )
    web_body_min_bytes_per_second: int = Field(
        default=1000, ge=0, alias="DIGEST_WEB_BODY_MIN_BYTES_PER_SECOND"
    )
    # Addresses (or networks) of the proxies whose X-Forwarded-For is believed; none by default.
    trusted_proxies: str = Field(default="", alias="DIGEST_TRUSTED_PROXIES")
    # Catalog feed: what every run syncs first when set (digest/catalog/feed.py, sync.py). The
    # URL is checked where it is used, so no error message can echo its credentials.
    catalog_url: str | None = Field(default=None, alias="DIGEST_CATALOG_URL")
    catalog_token: SecretStr | None = Field(default=None, alias="DIGEST_CATALOG_TOKEN")
    catalog_max_bytes: int = Field(default=50_000_000, ge=1, alias="DIGEST_CATALOG_MAX_BYTES")
    catalog_timeout_seconds: float = Field(
        default=30.0, gt=0, alias="DIGEST_CATALOG_TIMEOUT_SECONDS"
    )
    catalog_max_attempts: int = Field(default=4, ge=1, alias="DIGEST_CATALOG_MAX_ATTEMPTS")
    catalog_wait_minutes: float = Field(default=30.0, ge=0, alias="DIGEST_CATALOG_WAIT_MINUTES")
    catalog_wait_tries: int = Field(default=12, ge=0, alias="DIGEST_CATALOG_WAIT_TRIES")
    # Approval before sending (digest/run/approval.py, flows/approval.py).
    approval: Literal["off", "required"] = Field(default="off", alias="DIGEST_APPROVAL")
    approval_timeout_minutes: int = Field(
        default=1440, ge=1, alias="DIGEST_APPROVAL_TIMEOUT_MINUTES"
    )
    # Scheduled sends (exactly once): each request is held by the provider until `send_at`, so
    # an ambiguous answer or a crash can be cancelled and resent; 0 sends at once.
    send_lead_seconds: int = Field(
        default=900, ge=0, le=72 * 3600, alias="DIGEST_SEND_LEAD_SECONDS"
    )
    sendgrid_cancel_deadline_seconds: int = Field(
        default=600, ge=0, alias="DIGEST_SENDGRID_CANCEL_DEADLINE_SECONDS"
    )

    @field_validator("database_url")
    @classmethod
    def _psycopg_driver(cls, value: str) -> str:
        # The installed PostgreSQL driver is psycopg 3; a bare postgresql:// URL would ask
        # SQLAlchemy for psycopg2, which is not installed.
        for prefix in ("postgresql://", "postgres://"):
            if value.startswith(prefix):
                value = "postgresql+psycopg://" + value[len(prefix) :]
        return _supported_database(value)

    @field_validator("from_email")
    @classmethod
    def _sender_address(cls, value: str) -> str:
        return _sender(value)

    @field_validator("from_name")
    @classmethod
    def _sender_name(cls, value: str) -> str:
        bad = removed_characters(value) + (["U+0009"] if "\t" in value else [])
        if bad or len(value) > DISPLAY_NAME_LIMIT:
            why = f"holds {', '.join(bad)}" if bad else f"is {len(value)} characters long"
            raise ConfigError(
                f"DIGEST_FROM_NAME {why}: the sender's name goes into every email's From "
                f"header, where control characters, line breaks and tabs break it. Set it to "
                f"one line of at most {DISPLAY_NAME_LIMIT} characters, such as Verdict Digest."
            )
        return value.strip()

    @field_validator("sendgrid_api_key", "catalog_token")
    @classmethod
    def _header_safe_secret(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        """A secret sent in an Authorization header: printable ASCII without spaces. Refused
        here, never shown: an encoding error deep in a request printed the whole key."""
        if value is None:
            return None
        secret = value.get_secret_value()
        if secret and not all("!" <= c <= "~" for c in secret):
            alias = cls.model_fields[info.field_name or ""].alias
            raise ConfigError(
                f"{alias} holds a space, a line break or a character outside ASCII, which no "
                f"key or token has: it was likely pasted with something else. Set it again to "
                f"the key alone (the value is not shown here)."
            )
        return value

    @field_validator("postal_address")
    @classmethod
    def _postal_address_given(cls, value: str) -> str:
        if not value.strip():
            raise ConfigError(
                "DIGEST_POSTAL_ADDRESS is empty: every email must show the sender's postal "
                "address (CAN-SPAM). Set it to one line such as "
                "'Verdict Digest, 1 Example Street, Springfield, 00000, USA'."
            )
        return value.strip()

    @field_validator("outbox_dir", mode="before")
    @classmethod
    def _outbox_named(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            raise ConfigError(
                "DIGEST_OUTBOX_DIR is empty, which would put emails in the current folder. Set "
                "it to the folder the outbox backend writes to, or unset it for ./outbox."
            )
        return value

    @field_validator("email_backend")
    @classmethod
    def _known_provider(cls, value: str) -> str:
        name = value.strip().lower()
        if name not in PROVIDERS:
            raise ConfigError(
                f"DIGEST_EMAIL_BACKEND={value!r} is not a way of sending we know. Set it to one "
                f"of {', '.join(sorted(PROVIDERS))}."
            )
        return name

    @field_validator("catalog_url")
    @classmethod
    def _blank_is_unset(cls, value: str | None) -> str | None:
        return value.strip() if value and value.strip() else None

    @field_validator("trusted_proxies")
    @classmethod
    def _proxy_networks(cls, value: str) -> str:
        proxy_networks(value)  # refused here, at start-up, with the entry that is wrong
        return value

    @property
    def trusted_proxy_networks(self) -> tuple[IPNetwork, ...]:
        return proxy_networks(self.trusted_proxies)

    @field_validator("site_url", "sendgrid_host")
    @classmethod
    def _http_base(cls, value: str, info: ValidationInfo) -> str:
        name = "DIGEST_SITE_URL" if info.field_name == "site_url" else "DIGEST_SENDGRID_HOST"
        example = (
            "https://verdicts.example.com"
            if info.field_name == "site_url"
            else "https://api.sendgrid.com"
        )
        if "@" in urlsplit(value.strip()).netloc:
            # A user or password in it would be printed in messages, and for the site, written
            # into every email's links. The value is not shown: it may hold a password.
            raise ConfigError(
                f"{name} holds an @, as an address with a user name or password does. Set it "
                f"to the address alone, such as {example}."
            )
        if not is_http_url(value.strip()):
            raise ConfigError(
                f"{name}={value.strip()[:200]!r} is not an http(s) address. Set it to one such "
                f"as {example}."
            )
        return value.strip().rstrip("/")

    @field_validator("timezone", "schedule_timezone")
    @classmethod
    def _known_zone(cls, value: str, info: ValidationInfo) -> str:
        name = "DIGEST_TIMEZONE" if info.field_name == "timezone" else "DIGEST_SCHEDULE_TIMEZONE"
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, OSError):  # "America" is a folder of zones
            raise ConfigError(
                f"{name}={value[:100]!r} is not a known time zone. Set it to an IANA name such "
                "as UTC or Europe/Berlin."
            ) from None
        return value

    @field_validator("compare_url")
    @classmethod
    def _compare_template(cls, value: str | None) -> str | None:
        return _link_template(
            value, "DIGEST_COMPARE_URL", ("{a}", "{b}"), "https://verdicts.example.com/{a}-vs-{b}"
        )

    @field_validator("tool_url")
    @classmethod
    def _tool_template(cls, value: str | None) -> str | None:
        return _link_template(
            value, "DIGEST_TOOL_URL", ("{slug}",), "https://verdicts.example.com/tools/{slug}"
        )

    @property
    def zone(self) -> ZoneInfo:
        try:
            return ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ConfigError(
                f"DIGEST_TIMEZONE={self.timezone!r} is not a known time zone. "
                "Set it to an IANA name such as UTC or Europe/Berlin."
            ) from exc

    def signing_key(self) -> bytes:
        """The key that signs subscriber tokens; production refuses to run without one."""
        if self.secret_key is not None and self.secret_key.get_secret_value():
            return self.secret_key.get_secret_value().encode()
        if self.environment == "production":
            raise ConfigError(
                "DIGEST_SECRET_KEY is not set. Production needs a fixed secret so that "
                "unsubscribe links keep working: set DIGEST_SECRET_KEY to a long random string."
            )
        try:
            if not DEV_SECRET_FILE.exists():
                DEV_SECRET_FILE.write_text(secrets.token_urlsafe(32))
                DEV_SECRET_FILE.chmod(0o600)
            key = DEV_SECRET_FILE.read_text().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(
                f"The development secret {DEV_SECRET_FILE} cannot be read or made "
                f"({getattr(exc, 'strerror', None) or type(exc).__name__}). Remove it so that a "
                "new one is made, or set DIGEST_SECRET_KEY."
            ) from None
        if len(key) < 16:
            # An empty file signed every token with an empty key: anyone could make them.
            raise ConfigError(
                f"The development secret {DEV_SECRET_FILE} holds {len(key)} characters, too few "
                "to sign links. Remove the file so that a new one is made, or set "
                "DIGEST_SECRET_KEY."
            )
        return key.encode()


# The drivers installed with verdict-digest; any other URL would fail at its first use with an
# import error ("No module named 'MySQLdb'").
_DATABASE_DRIVERS = ("sqlite", "sqlite+pysqlite", "postgresql+psycopg")
_DATABASE_FIX = (
    "Set it to a SQLite file (sqlite:///digest.db) or a PostgreSQL database "
    "(postgresql+psycopg://user:password@host:5432/digest)."
)


def _supported_database(url: str) -> str:
    """`url` if verdict-digest can store its data there; the scheme alone is ever shown, since
    the rest may hold a password."""
    scheme, found, _ = url.partition("://")
    if not found or not scheme.strip():
        raise ConfigError(f"DIGEST_DATABASE_URL is not a database URL. {_DATABASE_FIX}")
    if scheme.lower() not in _DATABASE_DRIVERS:
        raise ConfigError(
            f"DIGEST_DATABASE_URL names a {scheme}:// database; verdict-digest stores its data "
            f"in SQLite or PostgreSQL (through psycopg) only. {_DATABASE_FIX}"
        )
    if scheme.lower().startswith("sqlite") and url.partition("://")[2] in ("", "/", "/:memory:"):
        # SQLite's in-memory database: every command would start from nothing and keep nothing.
        raise ConfigError(f"DIGEST_DATABASE_URL names no database file. {_DATABASE_FIX}")
    return url


def _sender(value: str) -> str:
    """DIGEST_FROM_EMAIL as one plain address every backend can put in a From header."""
    from email_validator import EmailNotValidError, validate_email

    fix = "Set it to the one plain address you send from, such as digest@verdicts.example.com."
    address = value.strip()
    bad = removed_characters(address) + [f"U+{ord(ch):04X}" for ch in address if ch in "\t\r\n"]
    if not address:
        raise ConfigError(f"DIGEST_FROM_EMAIL is empty. {fix}")
    if bad:
        raise ConfigError(
            f"DIGEST_FROM_EMAIL holds {', '.join(sorted(set(bad)))} (control characters, such "
            f"as a line break, would add headers to every email). {fix}"
        )
    try:
        checked = validate_email(address, check_deliverability=False).normalized
        Address(addr_spec=checked)
    except (EmailNotValidError, ValueError, IndexError) as invalid:
        raise ConfigError(
            f"DIGEST_FROM_EMAIL={address!r} is not an email address ({_first_line(invalid)}). {fix}"
        ) from None
    return checked


def _first_line(error: Exception) -> str:
    return str(error).splitlines()[0].rstrip(".") if str(error) else type(error).__name__


# Settings whose value is never shown, even when it is wrong: it may be a secret or hold one.
_HIDDEN = ("KEY", "TOKEN", "SECRET", "URL", "PASSWORD")
_WHY = {
    "int_parsing": "is not a whole number",
    "int_from_float": "is not a whole number",
    "float_parsing": "is not a number",
    "bool_parsing": "is not true or false",
    "greater_than_equal": "is too small",
    "greater_than": "is too small",
    "less_than_equal": "is too large",
    "less_than": "is too large",
    "literal_error": "is not one of the values it takes",
}


def _field(alias: str) -> Any:
    return next(field for field in Settings.model_fields.values() if field.alias == alias)


def _allowed(alias: str) -> str:
    """What a setting takes, from its declaration: its type and its bounds."""
    field = _field(alias)
    choices = get_args(field.annotation)
    if choices and all(isinstance(choice, str) for choice in choices):
        return "one of " + ", ".join(choices)
    kind = "a whole number" if field.annotation is int else "a number"
    bounds = {
        type(rule).__name__: getattr(rule, type(rule).__name__.lower())
        for rule in field.metadata
        if type(rule).__name__ in ("Ge", "Gt", "Le", "Lt")
    }
    low = bounds.get("Ge", bounds.get("Gt"))
    high = bounds.get("Le", bounds.get("Lt"))
    if "Gt" in bounds and high is not None:
        return f"{kind} above {low:g}, at most {high:g}"
    if low is not None and high is not None:
        return f"{kind} from {low:g} to {high:g}"
    if "Gt" in bounds:
        return f"{kind} above {low:g}"
    if low is not None:
        return f"{kind} of at least {low:g}"
    return kind


def _in_our_words(invalid: ValidationError) -> str:
    """One sentence per setting pydantic refused: its name, its value, what it takes."""
    sentences = []
    for error in invalid.errors():
        alias = str(error["loc"][0]) if error["loc"] else "A setting"
        value = error.get("input")
        shown = "" if any(word in alias for word in _HIDDEN) else f"={str(value)!r}"
        why = _WHY.get(error["type"], "is not a value it can take")
        try:
            takes = _allowed(alias)
        except StopIteration:
            takes = "a valid value"
        sentences.append(f"{alias}{shown} {why}: set it to {takes}.")
    return " ".join(sentences)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, checked as the process starts: a wrong one is a ConfigError
    naming the variable and what it takes, never pydantic's own text. Tests call
    `get_settings.cache_clear()` after changing the environment."""
    try:
        return Settings()
    except ValidationError as invalid:
        raise ConfigError(_in_our_words(invalid)) from None
