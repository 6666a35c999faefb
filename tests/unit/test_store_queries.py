"""engine.db.store's SQL text: named queries and the schema (no database needed)."""

from __future__ import annotations

import re
from pathlib import Path

import engine.db.store
from engine.db.store import QUERIES, load_queries, schema_sql

SAMPLE = (
    "-- A header comment, not a query.\n\n-- name: first\nSELECT 1;\n\n-- name: second   \n"
    """\
-- What it does.
SELECT a, b
FROM t
WHERE a = $1;
-- name: third
UPDATE t SET a = 1
"""
)


def test_load_queries_splits_named_blocks() -> None:
    assert load_queries(SAMPLE) == {
        "first": "SELECT 1",
        "second": "-- What it does.\nSELECT a, b\nFROM t\nWHERE a = $1",
        "third": "UPDATE t SET a = 1",
    }


def test_load_queries_ignores_text_without_names() -> None:
    assert load_queries("SELECT 1;\n-- just a comment\n") == {}


def test_load_queries_needs_the_marker_at_line_start() -> None:
    assert load_queries("SELECT 1; -- name: inline\nSELECT 2;\n") == {}


def test_every_query_used_by_the_store_exists() -> None:
    source = Path(engine.db.store.__file__).read_text(encoding="utf-8")
    used = set(re.findall(r"QUERIES\[\"(\w+)\"\]", source))

    assert used, "expected engine/db/store.py to use named queries"
    assert used <= set(QUERIES), used - set(QUERIES)


def test_loaded_queries_are_not_empty_and_have_no_trailing_semicolon() -> None:
    assert QUERIES
    for name, sql in QUERIES.items():
        assert sql.strip(), name
        assert not sql.endswith(";"), name


def test_schema_sql_creates_the_tables() -> None:
    text = schema_sql()

    assert "CREATE TABLE IF NOT EXISTS webhooks" in text
    assert "CREATE TABLE IF NOT EXISTS webhook_queue" in text


def test_schema_version_matches_schema_sql() -> None:
    from engine.db.store import SCHEMA_VERSION

    assert f"$$ SELECT {SCHEMA_VERSION} $$" in schema_sql()


def test_schema_problems_say_what_to_do() -> None:
    from engine.daemon import schema_problem
    from engine.db.store import SCHEMA_VERSION

    assert schema_problem(SCHEMA_VERSION) is None
    assert "init-db" in (schema_problem(None) or "")
    assert "init-db" in (schema_problem(SCHEMA_VERSION - 1) or "")
    assert "upgrade" in (schema_problem(SCHEMA_VERSION + 1) or "")
