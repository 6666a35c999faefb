"""Outbound hygiene of the sender: response head limits, TLS floor, no environment proxies."""

from __future__ import annotations

import ssl

import pytest
from aiohttp import web

from engine.delivery.sender import MAX_FIELD_BYTES, Sender
from engine.models import OutgoingRequest
from engine.wire.networks import NetworkPolicy
from tests.receiver import Receiver

LOOPBACK = NetworkPolicy.from_cidrs(["127.0.0.0/8"])


def sender() -> Sender:
    return Sender(
        concurrency=2,
        connect_timeout_s=2.0,
        total_timeout_s=5.0,
        response_limit_chars=1000,
        networks=LOOPBACK,
    )


def post(url: str) -> OutgoingRequest:
    return OutgoingRequest(method="POST", url=url, headers={}, body=b"{}")


async def test_a_huge_response_header_is_a_clean_failure(receiver: Receiver) -> None:
    async def huge(_request: web.Request, _body: bytes) -> web.StreamResponse:
        return web.Response(text="ok", headers={"X-Huge": "a" * (4 * MAX_FIELD_BYTES)})

    async def many(_request: web.Request, _body: bytes) -> web.StreamResponse:
        return web.Response(text="ok", headers={f"X-H{i}": "v" for i in range(500)})

    receiver.on("/huge", huge)
    receiver.on("/many", many)
    async with sender() as s:
        for path in ("/huge", "/many"):
            response = await s.send(post(receiver.url(path)))
            assert not response.success
            assert response.status_code is None
            assert response.error is not None and "response head too large" in response.error
            assert "Traceback" not in response.error
        # The session is still good for the next request.
        assert (await s.send(post(receiver.url("/ok")))).success


def test_tls_below_1_2_is_refused() -> None:
    context = sender().tls_context()
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


async def test_environment_proxies_are_ignored(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A proxy that does not exist: were it used, the request would fail to connect.
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)

    async with sender() as s:
        response = await s.send(post(receiver.url("/hook")))

    assert response.success, response.error
    assert len(receiver.requests) == 1
