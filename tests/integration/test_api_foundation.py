"""The API's foundation against a real server and Postgres: auth, problem documents for every
kind of bad input, health, the OpenAPI document and the api-key command."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import asyncpg
import orjson
from openapi_spec_validator import validate

from engine.api.app import openapi_document
from engine.api.schemas import WebhookPut
from tests.integration.conftest import Answer, Api


def assert_problem(answer: Answer, status: int) -> dict[str, object]:
    assert answer.status == status, (answer.status, answer.text)
    assert answer.headers["Content-Type"].startswith("application/problem+json")
    body = answer.body
    assert isinstance(body, dict)
    assert body["type"] == "about:blank" and body["status"] == status
    assert body["title"] and body["detail"]
    assert "Traceback" not in answer.text
    return body


async def test_health_is_open(api: Api) -> None:
    assert await api.ok("GET", "/v1/health", key="") == {"status": "ok"}


async def test_health_answers_503_while_the_database_refuses(
    api: Api, dsn: str, admin_dsn: str
) -> None:
    name = dsn.rsplit("/", 1)[1]
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
        )
        answer = await api.call("GET", "/v1/health", key="")
        assert answer.status == 503 and answer.body == {"status": "unavailable"}
        # Any other route: a problem document, not a 500.
        assert_problem(await api.call("GET", "/v1/webhooks"), 503)
    finally:
        await admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
        await admin.close()
    assert (await api.call("GET", "/v1/health", key="")).status == 200


async def test_every_other_route_needs_a_key(api: Api) -> None:
    for path in ("/v1/webhooks", "/v1/openapi.json", "/v1/events/1", "/v1/nowhere"):
        answer = await api.call("GET", path, key="")
        assert_problem(answer, 401)
        assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    bad = await api.call("GET", "/v1/webhooks", key="whk_0000_not-a-key")
    assert_problem(bad, 401)
    basic = await api.call("GET", "/v1/webhooks", headers={"Authorization": "Basic eDp5"})
    assert_problem(basic, 401)


async def test_revoked_key_is_refused_at_once(api: Api) -> None:
    key_id, key = await api.store.create_key(tenant=None, read_only=False, name="gone")
    await api.ok("GET", "/v1/webhooks", key=key)
    assert await api.store.revoke_key(key_id)
    assert_problem(await api.call("GET", "/v1/webhooks", key=key), 401)
    assert not await api.store.revoke_key(key_id)


async def test_read_only_key_reads_but_every_write_is_403(api: Api) -> None:
    hook = await api.webhook()
    reader = await api.key(read_only=True)
    path = f"/v1/webhooks/{hook['id']}"
    await api.ok("GET", path, key=reader)
    await api.ok("GET", "/v1/webhooks", key=reader)
    writes = [
        ("POST", "/v1/webhooks", {"url": "http://127.0.0.1:9/"}),
        ("PATCH", path, {"name": "x"}),
        ("PUT", path, {"url": "http://127.0.0.1:9/"}),
        ("DELETE", path, None),
        ("POST", path + "/secret/rotate", None),
        ("GET", path + "/secret", None),
        ("POST", path + "/test", None),
        ("POST", path + "/replay", {"failed": True}),
        ("POST", "/v1/events", {"topic": "a"}),
    ]
    for method, where, body in writes:
        assert_problem(await api.call(method, where, key=reader, json=body), 403)
    assert (await api.ok("GET", path))["name"] == ""  # nothing changed


async def test_bad_bodies_get_one_clear_problem(api: Api, small_api: Api) -> None:
    malformed = await api.call(
        "POST", "/v1/webhooks", data=b'{"url": ', headers={"Content-Type": "application/json"}
    )
    assert_problem(malformed, 400)
    deep = b'{"topic": "a", "payload": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    nested = await api.call(
        "POST", "/v1/events", data=deep, headers={"Content-Type": "application/json"}
    )
    assert "nested too deeply" in str(assert_problem(nested, 400)["detail"])
    not_json = await api.call("POST", "/v1/webhooks", data=b"url=x")
    assert_problem(not_json, 415)
    unknown = assert_problem(
        await api.call("POST", "/v1/webhooks", json={"url": "http://a/", "colour": "red"}), 422
    )
    assert unknown["errors"] == [
        {"field": "colour", "message": "Object contains unknown field `colour`"}
    ]
    wrong = assert_problem(
        await api.call("POST", "/v1/webhooks", json={"url": "http://a/", "maximum_events": "9"}),
        422,
    )
    assert wrong["errors"][0]["field"] == "maximum_events"  # type: ignore[index]
    item = assert_problem(
        await api.call("POST", "/v1/webhooks", json={"url": "http://a/", "topics": ["a", 1]}), 422
    )
    assert item["errors"][0]["field"] == "topics[1]"  # type: ignore[index]
    too_big = await small_api.call("POST", "/v1/events", json={"topic": "a", "payload": "x" * 5000})
    assert "2000" in str(assert_problem(too_big, 413)["detail"])
    assert_problem(await api.call("GET", "/v1/webhooks", params={"limit": "500"}), 422)
    assert_problem(await api.call("GET", "/v1/webhooks", params={"colour": "red"}), 422)
    assert_problem(await api.call("GET", "/v1/webhooks", params={"cursor": "!!"}), 422)
    assert_problem(await api.call("GET", "/v1/nowhere"), 404)
    assert_problem(await api.call("GET", "/v1/webhooks/abc"), 404)
    assert_problem(await api.call("GET", "/v1/webhooks/99999999999999999999"), 404)
    assert_problem(await api.call("DELETE", "/v1/webhooks"), 405)


async def test_database_validation_is_422_with_the_field(api: Api) -> None:
    cases = [
        ({"url": "ftp://user:hunter2@example.test/"}, "url"),
        ({"url": "http://a/", "headers": {"X-Note": "a\r\nInjected: 1"}}, "headers"),
        ({"url": "http://a/", "headers": {"Authorization": "x"}}, "headers"),
        ({"url": "http://a/", "secret": "whsec_short"}, "secret"),
        ({"url": "http://a/", "topics": ["a*b"]}, "topics"),
        ({"url": "http://a/{{nope}}", "profile": "norce"}, "url"),
        ({"url": "http://a/", "body_template": "x"}, "body_template"),
    ]
    for body, field in cases:
        problem = assert_problem(await api.call("POST", "/v1/webhooks", json=body), 422)
        errors = problem["errors"]
        assert isinstance(errors, list) and errors[0]["field"] == field, (body, problem)
        assert "hunter2" not in orjson.dumps(problem).decode()
        assert "whsec_short" not in orjson.dumps(problem).decode()
    nul = await api.call("POST", "/v1/events", json={"topic": "a", "payload": {"x": "\u0000"}})
    assert_problem(nul, 422)


async def test_openapi_document_is_valid_and_served(api: Api) -> None:
    served = await api.ok("GET", "/v1/openapi.json")
    validate(served)
    assert served == orjson.loads(orjson.dumps(openapi_document()))
    assert served["openapi"].startswith("3.1")
    assert set(served["paths"]) >= {
        "/v1/health",
        "/v1/webhooks",
        "/v1/webhooks/count",
        "/v1/webhooks/{id}",
        "/v1/webhooks/{id}/secret",
        "/v1/webhooks/{id}/secret/rotate",
        "/v1/webhooks/{id}/test",
        "/v1/webhooks/{id}/logs",
        "/v1/webhooks/{id}/logs/{request_id}",
        "/v1/webhooks/{id}/stats",
        "/v1/webhooks/{id}/replay",
        "/v1/events",
        "/v1/events/{id}",
    }
    assert served["paths"]["/v1/health"]["get"]["security"] == []


async def test_put_defaults_are_the_schema_defaults(db: asyncpg.Connection) -> None:
    """PUT resets what it leaves out to WebhookPut's defaults: they must be the columns'."""
    row = await db.fetchrow("INSERT INTO webhooks (url) VALUES ('http://a/') RETURNING *")
    assert row is not None
    defaults = WebhookPut(url="http://a/")
    for name in WebhookPut.__struct_fields__:
        if name in ("url", "secret"):  # secret: generated by the trigger
            continue
        value = row[name]
        if isinstance(value, str) and name in ("headers", "profile_options"):
            value = orjson.loads(value)
        assert getattr(defaults, name) == value, name


async def test_api_key_command_prints_the_key_once(api: Api, dsn: str) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "engine.cli", *args, "--dsn", dsn],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    created = await asyncio.to_thread(
        cli, "api-key", "create", "--tenant", "acme", "--read-only", "--name", "ci", "--json"
    )
    assert created.returncode == 0, created.stderr
    shown = orjson.loads(created.stdout)
    assert shown["tenant"] == "acme" and shown["read_only"] is True and shown["name"] == "ci"
    await api.ok("GET", "/v1/webhooks", key=shown["key"])
    listed = await asyncio.to_thread(cli, "api-key", "list")
    assert shown["key"] not in listed.stdout
    assert shown["key"].split("_")[1] in listed.stdout  # the prefix identifies it
    revoked = await asyncio.to_thread(cli, "api-key", "revoke", str(shown["id"]))
    assert revoked.returncode == 0, revoked.stderr
    assert (await api.call("GET", "/v1/webhooks", key=shown["key"])).status == 401
    again = await asyncio.to_thread(cli, "api-key", "revoke", str(shown["id"]))
    assert again.returncode == 2
