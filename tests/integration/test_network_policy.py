"""SSRF protection: the sender refuses internal networks at connect time unless allowed, with
real sockets on loopback. A receiver counts TCP connections, so "refused" means none was made."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
import structlog
from aiohttp.abc import AbstractResolver, ResolveResult

from engine.delivery.resolver import BlockedDestination, GuardedResolver
from engine.delivery.sender import Sender
from engine.models import OutgoingRequest
from engine.wire.networks import NetworkPolicy
from tests.conftest import wait_until
from tests.receiver import Receiver

LOOPBACK = NetworkPolicy.from_cidrs(["127.0.0.0/8", "::1/128"])
TEST_NAME = "hooks.example.test"


class CountingServer:
    """A minimal HTTP/1.1 server that counts accepted connections and answers 200 to each."""

    def __init__(self) -> None:
        self.connections = 0
        self.requests = 0
        self._servers: list[asyncio.Server] = []

    async def listen(self, host: str, port: int = 0) -> int:
        server = await asyncio.start_server(self._serve, host, port)
        self._servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                (
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ),
                0,
            )
            await reader.readexactly(length)
            self.requests += 1
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        for server in self._servers:
            server.close()
            await server.wait_closed()


class NameResolver(AbstractResolver):
    """DNS for the tests: fixed answers for made-up names (a stand-in for a name server)."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if host not in self.answers:
            raise OSError(f"unknown test name {host}")
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for address in self.answers[host]
        ]

    async def close(self) -> None:
        return None


@pytest.fixture
async def server() -> AsyncIterator[CountingServer]:
    s = CountingServer()
    yield s
    await s.close()


def sender(policy: NetworkPolicy, resolver: AbstractResolver | None = None) -> Sender:
    return Sender(
        concurrency=4,
        connect_timeout_s=2.0,
        total_timeout_s=5.0,
        response_limit_chars=1000,
        networks=policy,
        resolver=resolver,
    )


def post(url: str) -> OutgoingRequest:
    return OutgoingRequest(method="POST", url=url, headers={}, body=b"{}")


async def urls_for(server: CountingServer) -> dict[str, tuple[str, str]]:
    """name -> (url, address that a refusal names): one listener on 127.0.0.1, one on ::1."""
    v4 = await server.listen("127.0.0.1")
    v6 = await server.listen("::1")
    return {
        "ipv4": (f"http://127.0.0.1:{v4}/hook", "127.0.0.1"),
        "localhost": (f"http://localhost:{v4}/hook", "127.0.0.1 (localhost)"),
        "ipv6": (f"http://[::1]:{v6}/hook", "::1"),
        "mapped": (f"http://[::ffff:127.0.0.1]:{v4}/hook", "::ffff:127.0.0.1"),
        "decimal": (f"http://2130706433:{v4}/hook", "2130706433"),
        "name": (f"http://{TEST_NAME}:{v4}/hook", f"127.0.0.1 ({TEST_NAME})"),
    }


@pytest.mark.parametrize("form", ["ipv4", "localhost", "ipv6", "mapped", "name"])
async def test_loopback_is_refused_without_a_connection(server: CountingServer, form: str) -> None:
    url, named = (await urls_for(server))[form]
    resolver = NameResolver({TEST_NAME: ["127.0.0.1"]}) if form == "name" else None

    async with sender(NetworkPolicy(), resolver) as s:
        response = await s.send(post(url))

    assert not response.success
    assert response.status_code is None
    assert response.error is not None
    assert response.error.startswith(f"destination {named} is in a blocked network (loopback ")
    assert response.error.endswith("; see delivery.allow_networks")
    assert server.connections == 0


@pytest.mark.parametrize("form", ["ipv4", "localhost", "ipv6", "mapped", "name"])
async def test_loopback_is_reached_once_allowed(server: CountingServer, form: str) -> None:
    url, _ = (await urls_for(server))[form]
    resolver = NameResolver({TEST_NAME: ["127.0.0.1"]}) if form == "name" else None

    async with sender(LOOPBACK, resolver) as s:
        response = await s.send(post(url))

    assert response.success, response.error
    assert server.requests == 1


async def test_legacy_numeric_ipv4_forms_never_connect(server: CountingServer) -> None:
    url, _ = (await urls_for(server))["decimal"]

    async with sender(NetworkPolicy()) as s:
        response = await s.send(post(url))

    assert not response.success
    assert server.connections == 0


async def test_only_the_allowed_answers_of_a_name_are_connected_to(
    server: CountingServer,
) -> None:
    # The name answers a blocked and an allowed address: only the allowed one is ever dialled.
    blocked_port = await server.listen("127.0.0.1")
    allowed = CountingServer()
    try:
        await allowed.listen("127.0.0.2", blocked_port)
    except OSError:
        pytest.skip("port taken on 127.0.0.2")
    resolver = NameResolver({TEST_NAME: ["127.0.0.1", "127.0.0.2"]})
    policy = NetworkPolicy.from_cidrs(["127.0.0.2/32"])
    try:
        async with sender(policy, resolver) as s:
            response = await s.send(post(f"http://{TEST_NAME}:{blocked_port}/hook"))
    finally:
        await allowed.close()

    assert response.success, response.error
    assert allowed.requests == 1
    assert server.connections == 0


async def test_every_look_up_is_filtered_so_a_rebound_name_is_refused() -> None:
    # DNS rebinding: the name answers an allowed address, then an internal one. No earlier
    # answer is trusted: each resolution is checked on its own, at connect time.
    names = NameResolver({TEST_NAME: ["127.0.0.2"]})
    guarded = GuardedResolver(names, NetworkPolicy.from_cidrs(["127.0.0.2/32"]))

    assert [a["host"] for a in await guarded.resolve(TEST_NAME, 80)] == ["127.0.0.2"]
    names.answers[TEST_NAME] = ["127.0.0.1"]
    with pytest.raises(BlockedDestination, match=r"destination 127\.0\.0\.1 \(hooks"):
        await guarded.resolve(TEST_NAME, 80)


async def test_a_refused_delivery_is_a_logged_failure_then_arrives_once_allowed(
    db: asyncpg.Connection, engine: Any, receiver: Receiver
) -> None:
    webhook_id = await db.fetchval(
        "INSERT INTO webhooks (url, topics, retry) VALUES ($1, '{a}', false) RETURNING id",
        receiver.url("/hook"),
    )
    await db.execute("INSERT INTO webhook_events (topic) VALUES ('a')")

    with structlog.testing.capture_logs() as logs:
        running = engine(delivery={"allow_networks": []})

        async def failed() -> bool:
            return bool(await db.fetchval("SELECT count(*) FROM webhook_logs"))

        await wait_until(failed, what="a log row for the refused request")
        await db.execute("INSERT INTO webhook_events (topic) VALUES ('a')")

        async def both_failed() -> bool:
            return int(await db.fetchval("SELECT count(*) FROM webhook_logs")) == 2

        await wait_until(both_failed, what="a log row for the second refused request")
        assert await running.stop() == 0

    rows = await db.fetch("SELECT success, status_code, error FROM webhook_logs")
    for row in rows:
        assert not row["success"] and row["status_code"] is None
        assert row["error"].startswith("destination 127.0.0.1 is in a blocked network (loopback")
    failed_state = await db.fetchrow(
        "SELECT consecutive_failures, count(q.*) AS given_up FROM webhooks w "
        "JOIN webhook_queue q ON q.webhook_id = w.id AND q.failed_at IS NOT NULL "
        "WHERE w.id = $1 GROUP BY w.id",
        webhook_id,
    )
    assert failed_state is not None and failed_state["given_up"] == 2
    assert receiver.requests == []
    warnings = [e for e in logs if e["event"] == "webhook.destination_blocked"]
    assert len(warnings) == 1 and warnings[0]["webhook_id"] == webhook_id

    await db.execute("UPDATE webhook_queue SET failed_at = NULL, attempts = 0")
    await db.execute(
        "UPDATE webhooks SET consecutive_failures = 0, next_retry_after = NULL WHERE id = $1",
        webhook_id,
    )
    engine()  # the test settings open loopback
    await receiver.wait_for(lambda: len(receiver.requests) == 2, what="both events delivered")
