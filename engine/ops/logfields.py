"""Fields that let a log line say which endpoint or database it is about, without secrets."""

from __future__ import annotations

import os
from collections.abc import Mapping
from urllib.parse import unquote, urlsplit

from engine.models import Webhook
from engine.wire.redact import safe_url


def endpoint_fields(webhook: Webhook) -> dict[str, object]:
    """webhook_id, its name and its url (credentials removed) for a log line."""
    return {"webhook_id": webhook.id, "webhook_name": webhook.name, "url": safe_url(webhook.url)}


def database_fields(dsn: str | None, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """host, port and database a DSN (URL or `key=value` form, else libpq's PG* variables)
    points at. Never the password: it is not read at all."""
    env = os.environ if env is None else env
    fields = {
        "host": env.get("PGHOST", ""),
        "port": env.get("PGPORT", ""),
        "database": env.get("PGDATABASE", ""),
    }
    if dsn and "://" in dsn:
        fields.update(_url_fields(dsn))
    elif dsn:
        fields.update(_keyword_fields(dsn))
    return {
        "host": fields["host"] or "localhost (or the local socket)",
        "port": fields["port"] or "5432",
        "database": fields["database"] or "(the user's name)",
    }


def _url_fields(dsn: str) -> dict[str, str]:
    parts = urlsplit(dsn)
    # netloc can hold several hosts ("a:5432,b:5433"): keep that text rather than parse ports.
    hosts = parts.netloc.rpartition("@")[2]
    found: dict[str, str] = {}
    if hosts:
        host, colon, port = hosts.rpartition(":")
        if colon and port.isdigit() and "," not in hosts:
            found["host"], found["port"] = host.strip("[]"), port
        else:
            found["host"] = hosts
    database = unquote(parts.path.lstrip("/"))
    if database:
        found["database"] = database
    for key, value in (p.partition("=")[::2] for p in parts.query.split("&") if p):
        if key in ("host", "port"):
            found[key] = unquote(value)
        elif key == "dbname":
            found["database"] = unquote(value)
    return found


def _keyword_fields(dsn: str) -> dict[str, str]:
    names = {"host": "host", "hostaddr": "host", "port": "port", "dbname": "database"}
    found: dict[str, str] = {}
    for token in dsn.split():
        key, equals, value = token.partition("=")
        if equals and key in names:
            found[names[key]] = value.strip("'")
    return found
