"""engine.redact: what reaches webhook_logs."""

from __future__ import annotations

import json

import pytest

from engine.wire.redact import MASK, headers_json, mask_value, truncate_body


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("Authorization", "Basic dXNlcjpwYXNz", "Basic ********"),
        ("authorization", "Bearer eyJhbGciOi.payload.sig", "Bearer ********"),
        ("AUTHORIZATION", "dXNlcjpwYXNz", "********"),
        ("Proxy-Authorization", "Basic Zm9vOmJhcg==", "Basic ********"),
        ("X-Api-Key", "sk_live_0123456789", "********"),
        ("x-api-key", "abc123", "********"),
        ("Cookie", "session=abc123; theme=dark", "********"),
        ("Set-Cookie", "session=abc123; HttpOnly; Secure", "********"),
        ("Auth", "s3cr3t-value", "********"),
        ("X-Auth-Token", "tok_123", "********"),
        ("X-Webhook-Secret", "shh", "********"),
    ],
)
def test_credentials_are_masked(name: str, value: str, expected: str) -> None:
    assert mask_value(name, value) == expected


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("Content-Type", "application/json"),
        ("User-Agent", "webhook-engine/0.1"),
        ("X-Request-Id", "abc def"),
        ("Accept", "*/*"),
        ("webhook-id", "msg_1_2_2"),
    ],
)
def test_other_headers_are_unchanged(name: str, value: str) -> None:
    assert mask_value(name, value) == value


def test_headers_json_masks_and_keeps_the_rest() -> None:
    headers = {
        "Authorization": "Basic dXNlcjpwYXNz",
        "X-Api-Key": "sk_live_0123456789",
        "Content-Type": "application/json",
        "X-Tenant": "café",
    }

    text = headers_json(headers)

    assert json.loads(text) == {
        "Authorization": "Basic " + MASK,
        "X-Api-Key": MASK,
        "Content-Type": "application/json",
        "X-Tenant": "café",
    }
    assert "dXNlcjpwYXNz" not in text
    assert "sk_live" not in text


def test_headers_json_has_no_nul() -> None:
    text = headers_json({"X-Od\x00d": "a\x00b", "Cookie": "x\x00y"})

    assert "\x00" not in text
    assert "\\u0000" not in text
    parsed = json.loads(text)
    assert parsed == {"X-Od\ufffdd": "a\ufffdb", "Cookie": MASK}


def test_headers_json_keeps_a_literal_backslash_u0000() -> None:
    # Six characters, not a NUL: JSON escapes the backslash, and the text must stay as it was.
    text = headers_json({"X-Path": "C:\\u0000", "X-Nul": "a\x00"})

    assert json.loads(text) == {"X-Path": "C:\\u0000", "X-Nul": "a\ufffd"}


def test_headers_json_of_no_headers() -> None:
    assert json.loads(headers_json({})) == {}


def test_truncate_counts_characters_not_bytes() -> None:
    assert truncate_body(("é" * 10).encode(), 3)[0] == "ééé"
    assert truncate_body(("😀" * 5).encode(), 2)[0] == "😀😀"
    assert truncate_body("a€😀bc".encode(), 3)[0] == "a€😀"


def test_truncate_keeps_short_text_whole() -> None:
    assert truncate_body(b"hello", 100)[0] == "hello"
    assert truncate_body(b"", 5)[0] == ""
    assert truncate_body(b"hello", 0)[0] == ""


def test_truncate_replaces_invalid_utf8() -> None:
    assert truncate_body(b"ab\xffcd", 10)[0] == "ab\ufffdcd"
    # A multi-byte character cut off in the data itself.
    assert truncate_body("xé".encode()[:-1], 10)[0] == "x\ufffd"


def test_truncate_strips_nul() -> None:
    text = truncate_body(b"a\x00b\x00", 10)[0]

    assert "\x00" not in text
    assert text == "a\ufffdb\ufffd"


def test_truncate_of_long_multibyte_text_is_exact() -> None:
    data = ("ü" * 50_000 + "😀" * 50_000).encode()

    text = truncate_body(data, 60_000)[0]

    assert text == "ü" * 50_000 + "😀" * 10_000
    assert "\ufffd" not in text


def test_only_authorization_headers_keep_their_scheme() -> None:
    # A first word of an API key or token must not survive masking.
    assert mask_value("X-Api-Key", "letmein now") == MASK
    assert mask_value("Auth", "hunter two") == MASK
    assert mask_value("Proxy-Authorization", "Bearer abc") == f"Bearer {MASK}"


def test_truncate_body_says_whether_it_cut() -> None:
    assert truncate_body(b"abc", 3) == ("abc", False)
    assert truncate_body(b"abcd", 3) == ("abc", True)
    # 3 characters of 2 bytes each fit; a fourth does not.
    assert truncate_body("ééé".encode(), 3) == ("ééé", False)
    assert truncate_body("éééé".encode(), 3) == ("ééé", True)
    # Past 4 bytes per character there is always more than the limit.
    assert truncate_body(b"\xff" * 13, 3) == ("\ufffd" * 3, True)
    assert truncate_body(b"", 3) == ("", False)
