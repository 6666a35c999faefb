"""Pure: make request/response data safe and small enough to store in webhook_logs."""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache

import orjson

MASK = "********"

# Header names whose values are credentials. Matched case-insensitively; names that contain one of
# the fragments below are masked too (X-Api-Key, X-Auth-Token, ...).
_SECRET_NAMES = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie", "auth"})
_SCHEMED = frozenset({"authorization", "proxy-authorization"})
_SECRET_FRAGMENTS = ("token", "secret", "password", "api-key", "apikey", "x-auth")


@lru_cache(maxsize=1024)
def is_credential(name: str) -> bool:
    lowered = name.lower()
    return lowered in _SECRET_NAMES or any(f in lowered for f in _SECRET_FRAGMENTS)


def mask_value(name: str, value: str) -> str:
    if not is_credential(name):
        return value
    if name.lower() in _SCHEMED:
        # Keep the scheme ("Basic", "Bearer") so the log still says what kind was sent.
        scheme, _, rest = value.partition(" ")
        if rest and scheme.isalpha() and len(scheme) <= 16:
            return f"{scheme} {MASK}"
    return MASK


def headers_json(headers: Mapping[str, str]) -> str:
    """Masked headers as JSON text, safe for a jsonb column (no NUL characters)."""
    masked = {name: mask_value(name, value) for name, value in headers.items()}
    text = orjson.dumps(masked)
    if b"\\u0000" in text:  # a NUL somewhere (rare): clean every name and value
        text = orjson.dumps({clean_text(name): clean_text(value) for name, value in masked.items()})
    return text.decode()


def clean_text(text: str) -> str:
    # Postgres text and jsonb cannot hold NUL.
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


def truncate_body(data: bytes, limit_chars: int) -> tuple[str, bool]:
    """The first `limit_chars` characters of `data` decoded as UTF-8 (invalid bytes replaced),
    and whether that is less than all of `data`."""
    # A character is at most 4 bytes, and each invalid byte becomes one character: past
    # limit_chars * 4 bytes there are always more than limit_chars characters.
    text = data[: limit_chars * 4].decode("utf-8", errors="replace")
    cut = len(data) > limit_chars * 4 or len(text) > limit_chars
    return clean_text(text[:limit_chars]), cut


# Query parameter names whose values are masked in URLs written to logs (signed URLs, API keys).
_SECRET_PARAM_FRAGMENTS = ("token", "secret", "password", "passwd", "pwd", "key", "sig", "auth")


def safe_url(url: str) -> str:
    """`url` for a log line: user and password removed, secret-looking query values masked."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    authority, slash, tail = _split_authority(rest)
    authority = authority.rpartition("@")[2]
    path, question, query = tail.partition("?")
    query, hash_sign, fragment = query.partition("#")
    if question:
        query = "&".join(_mask_param(param) for param in query.split("&"))
    return f"{scheme}://{authority}{slash}{path}{question}{query}{hash_sign}{fragment}"


def _split_authority(rest: str) -> tuple[str, str, str]:
    """(authority, the separator that ended it, what follows) of what comes after `scheme://`."""
    ends = [i for i in (rest.find(c) for c in "/?#") if i >= 0]
    if not ends:
        return rest, "", ""
    end = min(ends)
    if rest[end] == "/":
        return rest[:end], "/", rest[end + 1 :]
    return rest[:end], "", rest[end:]


def _mask_param(param: str) -> str:
    name, equals, _value = param.partition("=")
    lowered = name.lower()
    if equals and any(fragment in lowered for fragment in _SECRET_PARAM_FRAGMENTS):
        return f"{name}={MASK}"
    return param
