"""Schemathesis against the live API, from the API's own OpenAPI document: for every operation,
generated requests (valid and invalid) never get a 5xx, and every answer (status code, content
type, body) is one the document declares. Bounded so it runs in CI in about a minute."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from engine.api.app import openapi_document
from engine.config import ApiConfig
from tests.integration.conftest import api_server

MAX_EXAMPLES = 20
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


class LiveApi:
    """The API served from its own thread and loop, since the generated test cases are
    synchronous; no daemon runs, so no webhook created here is ever called."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._stop = asyncio.Event()
        self.url = ""
        self.key = ""
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._run(),))

    async def _run(self) -> None:
        try:
            async with api_server(self._dsn, ApiConfig(listen="", max_body_bytes=200_000)) as api:
                self.url, self.key = api.url, api.admin
                self._ready.set()
                await self._stop.wait()
        finally:
            self._ready.set()

    def __enter__(self) -> LiveApi:
        self._thread.start()
        self._ready.wait(30)
        assert self.url, "the API did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
        self._loop.close()


@pytest.fixture
def live_api(dsn: str) -> Iterator[LiveApi]:
    with LiveApi(dsn) as live:
        yield live


def _document() -> dict[str, Any]:
    """The document the server serves (test_api_foundation checks they are equal)."""
    document: dict[str, Any] = orjson.loads(orjson.dumps(openapi_document()))
    # No daemon delivers here: cap ?wait of the test route so no example waits 5 s for nothing.
    for parameter in document["paths"]["/v1/webhooks/{id}/test"]["post"]["parameters"]:
        if parameter["name"] == "wait":
            parameter["schema"]["maximum"] = 0.1
    return document


DOCUMENT = _document()
# Valid requests for every operation; invalid ones where there is something to get wrong.
CASES = [
    (path, method, mode)
    for path, item in DOCUMENT["paths"].items()
    for method, operation in item.items()
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if mode is GenerationMode.POSITIVE or "parameters" in operation or "requestBody" in operation
]


@pytest.mark.parametrize(("path", "method", "mode"), CASES)
def test_every_answer_conforms(
    live_api: LiveApi, path: str, method: str, mode: GenerationMode
) -> None:
    operation = schemathesis.openapi.from_dict(DOCUMENT)[path][method]
    headers = {"Authorization": f"Bearer {live_api.key}"}

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def check(case: Any) -> None:
        case.call_and_validate(base_url=live_api.url, headers=headers, checks=CHECKS, timeout=10)

    check()
