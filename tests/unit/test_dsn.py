from __future__ import annotations

import pytest

from engine.config import ConfigError
from engine.db import dsn


@pytest.mark.parametrize(
    "text",
    [
        "postgresql://postgres@127.0.0.1:5432/webhooks",
        "postgres://u:p%40ss@db.example/webhooks?sslmode=require",
        "postgresql://u@[::1]:6432/db",
        "postgresql://u@a:5432,b:5433/db",
        "postgresql:///webhooks?host=/var/run/postgresql",
    ],
)
def test_good_dsns_pass(text: str) -> None:
    dsn.check(text)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("nonsense", "must look like postgresql://"),
        ("mysql://u@h/db", "got scheme 'mysql'"),
        ("postgresql://u@h:abc/db", "invalid port 'abc'"),
        ("postgresql://u@h:99999/db", "invalid port '99999'"),
        ("postgresql://u@h:0/db", "invalid port '0'"),
    ],
)
def test_bad_dsns_say_what_is_wrong(text: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        dsn.check(text)


def test_describe_never_shows_the_password() -> None:
    assert dsn.describe("postgresql://u:s3cret@db.example:5432/webhooks") == (
        "db.example:5432/webhooks"
    )
    assert dsn.describe("postgresql:///webhooks?host=/run/pg") == "/run/pg/webhooks"
    assert "libpq" in dsn.describe(None)
