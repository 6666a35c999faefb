"""The settings every test daemon runs with, in-process or as a subprocess."""

from __future__ import annotations

from typing import Any


def test_settings(dsn: str, **sections: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Quick polls, flushes and retries, no automatic disabling unless a test asks for it;
    `sections` override per key (e.g. delivery={"per_endpoint_concurrency": 1})."""
    raw: dict[str, dict[str, Any]] = {
        "database": {"dsn": dsn},
        "delivery": {
            "poll_interval_s": 0.5,
            "connect_timeout_s": 2.0,
            "total_timeout_s": 5.0,
            # The receivers are on loopback, which the daemon refuses unless opened.
            "allow_networks": ["127.0.0.0/8", "::1/128"],
        },
        "retry": {
            "schedule_s": [0.2, 0.3, 0.5, 0.5, 0.5, 0.5],
            "jitter": 0.0,
            "max_consecutive_failures": 0,
        },
        "recorder": {"flush_interval_ms": 2.0},
        "shutdown": {"grace_s": 5.0},
        # Off: tests run many daemons at once; the metrics tests turn it on at a free port.
        "metrics": {"listen": ""},
        # Off: many test daemons run at once; API tests start their own server on port 0.
        "api": {"listen": ""},
    }
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    return raw
