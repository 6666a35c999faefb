"""Pure: check a Postgres DSN before connecting, and name its server without the password."""

from __future__ import annotations

from urllib.parse import parse_qs, unquote, urlsplit

from engine.config import ConfigError

# libpq variables that say which server to use: with any of them set, the user has configured a
# database, so webhook-engine must not start its embedded one.
LIBPQ_VARIABLES = (
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGDATABASE",
    "PGUSER",
    "PGPASSWORD",
    "PGSERVICE",
)


def check(dsn: str) -> None:
    """Raise ConfigError saying what is wrong with `dsn` (asyncpg would raise ValueError or an
    obscure socket error for the same mistakes, or print the DSN back)."""
    parts = urlsplit(dsn.strip())
    if parts.scheme not in ("postgresql", "postgres"):
        raise ConfigError(
            "the database DSN must look like postgresql://user:password@host:5432/database"
            + (f" (got scheme {parts.scheme!r})" if parts.scheme else "")
        )
    hosts = parts.netloc.rpartition("@")[2]
    for host in filter(None, hosts.split(",")):
        port = host.rpartition("]")[2].rpartition(":")[2] if ":" in host else ""
        if port and not (port.isdigit() and 1 <= int(port) <= 65535):
            raise ConfigError(f"the database DSN has an invalid port {port!r}")


def describe(dsn: str | None) -> str:
    """`host:port/database` of `dsn`, never its password, for messages and logs."""
    if not dsn:
        return "the server named by libpq's PG* variables"
    parts = urlsplit(dsn)
    netloc = parts.netloc.rpartition("@")[2] or ",".join(parse_qs(parts.query).get("host", []))
    database = unquote(parts.path.lstrip("/"))
    return f"{netloc or 'localhost'}/{database}" if database else netloc or "localhost"
