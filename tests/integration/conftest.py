"""The API under test: a real server on 127.0.0.1 (any free port) over the test's own
database, and a client that calls it with the keys a test creates."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from engine.api.server import serving
from engine.config import ApiConfig
from engine.db.api_store import ApiStore


@dataclass
class Answer:
    status: int
    body: Any  # decoded JSON, or the text when it is not JSON, or None when empty
    headers: dict[str, str]
    text: str


class Api:
    def __init__(self, url: str, store: ApiStore, session: aiohttp.ClientSession) -> None:
        self.url = url
        self.store = store
        self.session = session
        self.admin = ""

    async def key(self, tenant: str | None = None, *, read_only: bool = False) -> str:
        _, key = await self.store.create_key(tenant=tenant, read_only=read_only, name="test")
        return key

    async def call(
        self,
        method: str,
        path: str,
        *,
        key: str | None = None,
        json: Any = None,
        data: bytes | str | None = None,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
    ) -> Answer:
        sent = dict(headers or {})
        if key is None:
            key = self.admin
        if key:
            sent.setdefault("Authorization", f"Bearer {key}")
        async with self.session.request(
            method, self.url + path, json=json, data=data, headers=sent, params=params
        ) as response:
            text = await response.text()
            body: Any = None
            if text:
                try:
                    body = await response.json(content_type=None)
                except ValueError:
                    body = text
            return Answer(response.status, body, dict(response.headers), text)

    async def ok(self, method: str, path: str, status: int = 200, **kwargs: Any) -> Any:
        answer = await self.call(method, path, **kwargs)
        assert answer.status == status, (answer.status, answer.text)
        return answer.body

    async def webhook(self, url: str = "http://127.0.0.1:9/hook", **columns: Any) -> Any:
        """Create a webhook with the admin key (or `key=`); returns the create answer."""
        key = columns.pop("key", None)
        return await self.ok("POST", "/v1/webhooks", 201, key=key, json={"url": url, **columns})


@pytest.fixture
async def api(dsn: str) -> AsyncIterator[Api]:
    async with api_server(dsn, ApiConfig(listen="")) as running:
        yield running


@pytest.fixture
async def small_api(dsn: str) -> AsyncIterator[Api]:
    """The API with a 2,000-byte body limit."""
    async with api_server(dsn, ApiConfig(listen="", max_body_bytes=2000)) as running:
        yield running


@asynccontextmanager
async def api_server(dsn: str, settings: ApiConfig) -> AsyncIterator[Api]:
    store = await ApiStore.open(dsn, pool_size=4)
    try:
        async with serving(store, settings, "127.0.0.1", 0) as url, aiohttp.ClientSession() as s:
            api = Api(url, store, s)
            api.admin = await api.key()
            yield api
    finally:
        await store.close()
