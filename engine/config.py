"""Settings: frozen dataclasses loaded from TOML, with environment overrides for the DSN."""

from __future__ import annotations

import math
import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from engine.wire.networks import parse_networks


class ConfigError(ValueError):
    """The configuration file or an override is not usable; the message says what and where."""


@dataclass(frozen=True, kw_only=True)
class DatabaseConfig:
    # None: take WEBHOOK_ENGINE_DSN, else let libpq's PG* variables decide.
    dsn: str | None = None
    pool_size: int = 4
    # "off" trades the daemon's own bookkeeping commits (leases, outcomes, logs) for speed: a
    # Postgres crash can then forget the last few ms of outcomes, and those events are sent again.
    # The events themselves are written by the applications, with their own settings.
    synchronous_commit: str = "on"


@dataclass(frozen=True, kw_only=True)
class DeliveryConfig:
    concurrency: int = 64
    per_endpoint_concurrency: int = 8
    connect_timeout_s: float = 5.0
    total_timeout_s: float = 30.0
    # A claimed batch is leased for this long; a crashed daemon's work is claimable after it.
    lease_s: float = 120.0
    poll_interval_s: float = 1.0
    user_agent: str = "webhook-engine/0.1"
    # PEM file of CAs to trust for https endpoints, instead of the system's (None: system).
    ca_bundle: str | None = None
    # After a webhook's secret changes, the old one keeps signing this long (rotation).
    previous_secret_ttl_s: float = 86400.0
    # CIDR ranges opened despite being internal (loopback, private, link-local, ...): those are
    # refused by default, so a webhook URL cannot reach the services beside the daemon.
    allow_networks: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class RetryConfig:
    # After the n-th consecutive failure an endpoint waits schedule_s[n-1] (then the last entry),
    # plus up to `jitter` (a fraction) of it. A delivery gets 1 + len(schedule_s) attempts, then
    # its events are marked failed (kept, replayable). Default: the Standard Webhooks schedule.
    schedule_s: tuple[float, ...] = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)
    jitter: float = 0.1
    # 429/503 with Retry-After: wait what the endpoint asks, at most this long.
    retry_after_max_s: float = 3600.0
    # Disable an endpoint when its consecutive failures exceed this (WooCommerce: 5); 0 = never.
    max_consecutive_failures: int = 5
    # Disable an endpoint with more than this many failures within failure_window_s
    # (ReadyCloud: more than 3 in 6 hours); 0 = off.
    failure_window_max: int = 0
    failure_window_s: float = 21600.0


@dataclass(frozen=True, kw_only=True)
class RecorderConfig:
    # Outcomes and log rows are written together, at most this often or when this many are waiting.
    flush_interval_ms: float = 5.0
    flush_max_items: int = 1000
    log_body_limit_chars: int = 100_000
    # Every this many seconds, one `delivery.summary` log line (0: never).
    summary_interval_s: float = 60.0


@dataclass(frozen=True, kw_only=True)
class RetentionConfig:
    # Log rows older than this are deleted in the background; 0 keeps them forever.
    logs_days: float = 30.0
    # Events older than this that no webhook still has to deliver are deleted; 0 keeps them.
    events_days: float = 30.0
    prune_interval_s: float = 60.0
    prune_batch: int = 1000


@dataclass(frozen=True, kw_only=True)
class MaintenanceConfig:
    # Delivered queue rows are deleted at once (and due/arrival rows rewritten every pass), which
    # leaves dead rows that slow every claim until vacuumed. Every this many seconds the daemon
    # checks the dead-row counts of webhook_queue, webhook_due and webhook_arrivals and vacuums
    # each that has at least queue_vacuum_min_dead dead rows, at least 5 % of its live ones,
    # whatever autovacuum is doing. 0 turns it off.
    queue_vacuum_check_s: float = 5.0
    queue_vacuum_min_dead: int = 5000


@dataclass(frozen=True, kw_only=True)
class ShutdownConfig:
    grace_s: float = 20.0


@dataclass(frozen=True, kw_only=True)
class MetricsConfig:
    # host:port for /metrics, /healthz and /readyz; "" serves none of them.
    listen: str = "127.0.0.1:9464"
    # A `tenant` label on the per-request counters and the endpoint gauge (one series per tenant).
    per_tenant: bool = False


@dataclass(frozen=True, kw_only=True)
class ApiConfig:
    # host:port of the management API served by `run` (and `api`); "" turns it off in `run`.
    listen: str = "127.0.0.1:8080"
    # Request bodies above this many bytes answer 413 (a batch of 1,000 events must fit).
    max_body_bytes: int = 5_000_000


@dataclass(frozen=True, kw_only=True)
class Config:
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    retry: RetryConfig = field(default_factory=RetryConfig)
    recorder: RecorderConfig = field(default_factory=RecorderConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    maintenance: MaintenanceConfig = field(default_factory=MaintenanceConfig)
    shutdown: ShutdownConfig = field(default_factory=ShutdownConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    api: ApiConfig = field(default_factory=ApiConfig)

    @classmethod
    def load(cls, path: str | Path | None = None, env: dict[str, str] | None = None) -> Config:
        """Read `path` (optional), then apply WEBHOOK_ENGINE_DSN from `env` (default os.environ)."""
        raw: dict[str, Any] = {}
        if path is not None:
            try:
                raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
            except OSError as exc:
                raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
        config = cls.from_dict(raw, source=str(path or "defaults"))
        dsn = (os.environ if env is None else env).get("WEBHOOK_ENGINE_DSN")
        if dsn:
            config = replace(config, database=replace(config.database, dsn=dsn))
        return config

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "config") -> Config:
        sections: dict[str, Any] = {}
        for section in fields(cls):
            section_type = _SECTION_TYPES[section.name]
            values = raw.get(section.name, {})
            if not isinstance(values, dict):
                raise ConfigError(f"{source}: [{section.name}] must be a table")
            where = f"{source}: [{section.name}]"
            sections[section.name] = _build_section(section_type, values, where)
        unknown = set(raw) - set(sections)
        if unknown:
            raise ConfigError(f"{source}: unknown section(s) {', '.join(sorted(unknown))}")
        config = cls(**sections)
        config.validate()
        return config

    def validate(self) -> None:
        d = self.delivery
        positive = {
            "database.pool_size": self.database.pool_size,
            "delivery.concurrency": d.concurrency,
            "delivery.per_endpoint_concurrency": d.per_endpoint_concurrency,
            "delivery.connect_timeout_s": d.connect_timeout_s,
            "delivery.total_timeout_s": d.total_timeout_s,
            "delivery.lease_s": d.lease_s,
            "delivery.poll_interval_s": d.poll_interval_s,
            "delivery.previous_secret_ttl_s": d.previous_secret_ttl_s,
            "retry.retry_after_max_s": self.retry.retry_after_max_s,
            "retry.failure_window_s": self.retry.failure_window_s,
            "recorder.flush_interval_ms": self.recorder.flush_interval_ms,
            "recorder.flush_max_items": self.recorder.flush_max_items,
            "recorder.log_body_limit_chars": self.recorder.log_body_limit_chars,
            "shutdown.grace_s": self.shutdown.grace_s,
            "retention.prune_interval_s": self.retention.prune_interval_s,
            "retention.prune_batch": self.retention.prune_batch,
            "api.max_body_bytes": self.api.max_body_bytes,
        }
        for name, value in positive.items():
            if not math.isfinite(value) or value <= 0:
                raise ConfigError(f"{name} must be greater than 0, got {value}")
        summary = self.recorder.summary_interval_s
        if not math.isfinite(summary) or summary < 0:
            raise ConfigError("recorder.summary_interval_s must be 0 (never) or more")
        m = self.maintenance
        if not math.isfinite(m.queue_vacuum_check_s) or m.queue_vacuum_check_s < 0:
            raise ConfigError("maintenance.queue_vacuum_check_s must be 0 (off) or more")
        if m.queue_vacuum_min_dead < 0:
            raise ConfigError("maintenance.queue_vacuum_min_dead must not be negative")
        for name in ("logs_days", "events_days"):
            value = getattr(self.retention, name)
            if not math.isfinite(value) or value < 0:
                raise ConfigError(f"retention.{name} must be 0 (keep forever) or more")
        r = self.retry
        if not r.schedule_s or not all(math.isfinite(s) and s > 0 for s in r.schedule_s):
            raise ConfigError("retry.schedule_s must be a non-empty list of positive seconds")
        if not math.isfinite(r.jitter) or not 0 <= r.jitter <= 1:
            raise ConfigError(f"retry.jitter must be a fraction from 0 to 1, got {r.jitter}")
        for name in ("max_consecutive_failures", "failure_window_max"):
            if getattr(r, name) < 0:
                raise ConfigError(f"retry.{name} must not be negative (0 turns it off)")
        if d.ca_bundle is not None and not Path(d.ca_bundle).is_file():
            raise ConfigError(f"delivery.ca_bundle {d.ca_bundle!r} is not a readable file")
        try:
            parse_networks(d.allow_networks)
        except ValueError as exc:
            raise ConfigError(f"delivery.allow_networks: {exc}") from None
        if d.lease_s <= d.total_timeout_s:
            raise ConfigError(
                f"delivery.lease_s ({d.lease_s}) must exceed delivery.total_timeout_s "
                f"({d.total_timeout_s}), or a slow request's events could be sent twice"
            )
        if self.metrics.listen:
            listen_address(self.metrics.listen)  # raises ConfigError when malformed
        if self.api.listen:
            listen_address(self.api.listen, "api.listen")
        if self.database.synchronous_commit not in ("on", "off", "local", "remote_write"):
            raise ConfigError(
                "database.synchronous_commit must be one of on, off, local, remote_write"
            )


_SECTION_TYPES: dict[str, type] = {
    "database": DatabaseConfig,
    "delivery": DeliveryConfig,
    "retry": RetryConfig,
    "recorder": RecorderConfig,
    "retention": RetentionConfig,
    "maintenance": MaintenanceConfig,
    "shutdown": ShutdownConfig,
    "metrics": MetricsConfig,
    "api": ApiConfig,
}


def _build_section(section_type: type, values: dict[str, Any], where: str) -> Any:
    known = {f.name: f for f in fields(section_type)}
    unknown = set(values) - set(known)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    kwargs: dict[str, Any] = {}
    for name, value in values.items():
        expected = known[name].type
        kwargs[name] = _coerce(value, str(expected), f"{where} {name}")
    return section_type(**kwargs)


def listen_address(listen: str, setting: str = "metrics.listen") -> tuple[str, int]:
    """`host:port` (`[::1]:port` for IPv6) as (host, port); port 0 picks a free one. `setting`
    names the option in the error."""
    host, sep, port = listen.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f'{setting} must be host:port (or "" for off), got {listen!r}')
    return host, int(port)


def _coerce(value: Any, expected: str, where: str) -> Any:
    if expected == "bool" and isinstance(value, bool):
        return value
    if expected == "float" and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if expected == "int" and isinstance(value, int) and not isinstance(value, bool):
        return value
    if expected in ("str", "str | None") and isinstance(value, str):
        return value
    if expected == "tuple[float, ...]" and isinstance(value, list):
        return tuple(_coerce(item, "float", where) for item in value)
    if expected == "tuple[str, ...]" and isinstance(value, list):
        return tuple(_coerce(item, "str", where) for item in value)
    raise ConfigError(f"{where} must be {expected}, got {value!r}")
