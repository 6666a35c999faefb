"""Pure parts of the API: how validation and database errors become problem fields, cursors,
and the OpenAPI helpers."""

from __future__ import annotations

import asyncpg
import msgspec
import pytest

from engine.api.io import decode_cursor, encode_cursor
from engine.api.openapi import _without_null
from engine.api.problems import Problem, from_database, from_validation
from engine.api.schemas import EventIn, ReplayIn, WebhookCreate


def field_of(problem: Problem) -> str | None:
    return problem.errors[0].field


def validation(raw: bytes, type_: type) -> Problem:
    with pytest.raises(msgspec.ValidationError) as caught:
        msgspec.json.decode(raw, type=type_)
    return from_validation(caught.value)


def test_validation_paths_become_fields() -> None:
    assert field_of(validation(b'{"url": "x", "colour": 1}', WebhookCreate)) == "colour"
    assert field_of(validation(b'{"url": 1}', WebhookCreate)) == "url"
    assert field_of(validation(b'{"url": "x", "topics": ["a", 2]}', WebhookCreate)) == "topics[1]"
    assert field_of(validation(b'{"topic": "a.*"}', EventIn)) == "topic"
    assert field_of(validation(b"[]", WebhookCreate)) is None
    problem = validation(b"{}", ReplayIn)
    assert problem.status == 422 and "failed" in problem.detail


def test_check_violations_name_the_column() -> None:
    plain = from_database(asyncpg.CheckViolationError("webhooks.url must be absolute, not x"))
    assert plain is not None and plain.status == 422 and field_of(plain) == "url"
    told = asyncpg.CheckViolationError("webhooks: unknown placeholder {{x}}")
    told.column_name = "body_template"  # what a RAISE ... USING COLUMN sets
    named = from_database(told)
    assert named is not None and field_of(named) == "body_template"
    anonymous = from_database(asyncpg.CheckViolationError("readycloud webhooks need https"))
    assert anonymous is not None and field_of(anonymous) is None


def test_database_messages_lose_url_credentials() -> None:
    problem = from_database(
        asyncpg.CheckViolationError("webhooks.url must be http, not ftp://bob:hunter2@host/")
    )
    assert (
        problem is not None
        and "hunter2" not in problem.detail
        and "ftp://***@host/" in problem.detail
    )


def test_other_database_errors() -> None:
    conflict = from_database(asyncpg.UniqueViolationError("dup"))
    assert conflict is not None and conflict.status == 409
    busy = from_database(asyncpg.DeadlockDetectedError("deadlock"))
    assert busy is not None and busy.status == 503
    assert from_database(asyncpg.UndefinedTableError("no table")) is None  # a bug: 500


def test_cursor_round_trip_and_garbage() -> None:
    class Cursor(msgspec.Struct):
        after: int

    assert decode_cursor(encode_cursor(Cursor(after=41)), Cursor) == Cursor(after=41)
    for garbage in ("", "!!", "eyJ4IjoxfQ", "a" * 7):
        with pytest.raises(Problem) as caught:
            decode_cursor(garbage, Cursor)
        assert caught.value.status == 422 and field_of(caught.value) == "cursor"


def test_query_parameters_drop_null() -> None:
    schema = {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None}
    assert _without_null(schema) == {"type": "string"}
    assert _without_null({"type": "integer", "default": 5}) == {"type": "integer", "default": 5}
