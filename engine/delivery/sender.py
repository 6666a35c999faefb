"""HTTP: one aiohttp session for the process, timeouts, no redirects, capped response reading,
no connections into blocked networks (engine/wire/networks.py), TLS 1.2 or newer, no proxy."""

from __future__ import annotations

import functools
import ssl
import time
from datetime import UTC, datetime
from types import TracebackType

import aiohttp
from aiohttp.abc import AbstractResolver

from engine.delivery.resolver import BlockedDestination, GuardedResolver
from engine.models import OutgoingRequest, Response
from engine.wire.networks import NetworkPolicy, literal_host
from engine.wire.redact import truncate_body

_REFUSAL_CACHE = 4096  # distinct URLs whose literal-IP check is remembered

# Response head limits: a receiver cannot make us buffer an unbounded status line or headers.
MAX_LINE_BYTES = 8190
MAX_FIELD_BYTES = 8190
MAX_HEADERS = 128


class Sender:
    def __init__(
        self,
        *,
        concurrency: int,
        connect_timeout_s: float,
        total_timeout_s: float,
        response_limit_chars: int,
        ca_bundle: str | None = None,
        networks: NetworkPolicy | None = None,
        resolver: AbstractResolver | None = None,
    ) -> None:
        self._ca_bundle = ca_bundle
        self.networks = networks if networks is not None else NetworkPolicy()
        # The same few URLs are sent to over and over: parse each once (measured: the parse and
        # policy check were 4 % of the daemon's CPU per request).
        self._refusals = functools.lru_cache(maxsize=_REFUSAL_CACHE)(self._refusal_for)
        # The DNS look-up to filter; None: aiohttp's default. Tests inject names of their own.
        self._resolver = resolver
        self._timeout = aiohttp.ClientTimeout(total=total_timeout_s, connect=connect_timeout_s)
        self._total_timeout_s = total_timeout_s
        self._read_limit_bytes = response_limit_chars * 4
        self._response_limit_chars = response_limit_chars
        self._concurrency = concurrency
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Sender:
        resolver = GuardedResolver(self._resolver or aiohttp.DefaultResolver(), self.networks)
        connector = aiohttp.TCPConnector(
            limit=self._concurrency, limit_per_host=0, ssl=self.tls_context(), resolver=resolver
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=self._timeout,
            auto_decompress=True,
            skip_auto_headers=("User-Agent",),
            # HTTP(S)_PROXY from the environment would route requests past the network policy.
            trust_env=False,
            max_line_size=MAX_LINE_BYTES,
            max_field_size=MAX_FIELD_BYTES,
            max_headers=MAX_HEADERS,
        )
        return self

    def tls_context(self) -> ssl.SSLContext:
        """Always verified; a CA bundle replaces the system's trust store when given."""
        context = ssl.create_default_context(cafile=self._ca_bundle)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()

    async def send(self, request: OutgoingRequest) -> Response:
        assert self._session is not None, "use Sender as an async context manager"
        started_at = datetime.now(UTC)
        started = time.perf_counter()
        status: int | None = None
        headers: dict[str, str] = {}
        body: str | None = None
        body_size: int | None = None
        body_size_known = True
        error: str | None = None
        try:
            self._check_literal_host(request.url)
            async with self._session.request(
                request.method,
                request.url,
                data=request.body,
                headers=request.headers,
                allow_redirects=False,
            ) as resp:
                status = resp.status
                headers = _flatten_headers(resp.headers)
                raw, complete = await self._read_capped(resp)
                body, cut = truncate_body(raw, self._response_limit_chars)
                if cut or not complete:
                    body_size, body_size_known = _body_size(resp, raw, complete)
                if not complete:
                    # Drop the connection instead of draining a body we will not keep.
                    resp.close()
            if 300 <= status < 400:
                location = headers.get("Location", "")
                error = f"HTTP {status} redirect to {location!r} not followed"
            elif not 200 <= status < 300:
                error = f"HTTP {status}"
        except TimeoutError:
            error = f"timeout: no complete response within {self._total_timeout_s:g}s"
        except BlockedDestination as exc:
            error = str(exc)
        except aiohttp.ClientConnectorCertificateError as exc:
            error = f"TLS certificate error: {exc.certificate_error}"
        except aiohttp.ClientSSLError as exc:
            error = f"TLS error: {exc}"
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, BlockedDestination):
                error = str(exc.os_error)
            else:
                error = f"connection failed: {exc.os_error.strerror or exc.os_error}"
        except aiohttp.ServerDisconnectedError:
            error = "connection closed by the server before a complete response"
        except aiohttp.ClientPayloadError as exc:
            error = f"response body broken off: {exc}"
        except aiohttp.ClientResponseError as exc:
            # Raised while reading the response head (we never raise for a status).
            error = _bad_head(exc.message)
        except aiohttp.InvalidURL as exc:
            error = f"invalid URL: {exc}"
        except (aiohttp.ClientError, ssl.SSLError, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        duration_ms = round((time.perf_counter() - started) * 1000)
        return Response(
            started_at=started_at,
            duration_ms=duration_ms,
            status_code=status,
            headers=headers,
            body=body,
            error=error,
            body_size=body_size,
            body_size_known=body_size_known,
        )

    def literal_refusal(self, url: str) -> str | None:
        """Why a URL whose host is a literal IP may not be connected to (None: it may, or its
        host is a name, which the resolver checks)."""
        return self._refusals(url)

    def _check_literal_host(self, url: str) -> None:
        """A literal IP never goes through the resolver, so the policy is applied here."""
        refusal = self.literal_refusal(url)
        if refusal is not None:
            raise BlockedDestination(refusal)

    def _refusal_for(self, url: str) -> str | None:
        address = literal_host(url)
        return self.networks.refusal(address) if address is not None else None

    async def _read_capped(self, resp: aiohttp.ClientResponse) -> tuple[bytes, bool]:
        """Read at most the log limit of the body; never the whole of a large one into memory."""
        chunks: list[bytes] = []
        size = 0
        while size < self._read_limit_bytes:
            chunk = await resp.content.read(self._read_limit_bytes - size)
            if not chunk:
                return b"".join(chunks), True
            chunks.append(chunk)
            size += len(chunk)
            if resp.content.at_eof():
                break  # read to the end: no second read just to be told so
        return b"".join(chunks), resp.content.at_eof()


def _bad_head(message: str) -> str:
    if "Got more than" in message or "Too many headers" in message:
        return (
            f"response head too large: a line over {MAX_FIELD_BYTES} bytes "
            f"or more than {MAX_HEADERS} headers"
        )
    return f"invalid HTTP response: {message[:200]}"


def _body_size(resp: aiohttp.ClientResponse, raw: bytes, complete: bool) -> tuple[int, bool]:
    """The size of a body we keep only the start of, and whether it is exact: read to its end,
    or declared by an uncompressed response's Content-Length; else the bytes read."""
    if complete:
        return len(raw), True
    encoding = resp.headers.get("Content-Encoding", "identity").lower()
    if resp.content_length is not None and encoding == "identity":
        return resp.content_length, True
    return len(raw), False


def _flatten_headers(headers: aiohttp.typedefs.LooseHeaders) -> dict[str, str]:
    flat: dict[str, str] = {}
    items = headers.items() if hasattr(headers, "items") else headers
    for name, value in items:
        name, value = str(name), str(value)
        flat[name] = f"{flat[name]}, {value}" if name in flat else value
    return flat
