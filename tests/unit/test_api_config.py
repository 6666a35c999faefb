"""The [api] section: listen as host:port (or "" for off) and the body limit."""

from __future__ import annotations

import pytest

from engine.config import Config, ConfigError, listen_address


def test_api_defaults() -> None:
    config = Config.from_dict({})
    assert config.api.listen == "127.0.0.1:8080"
    assert config.api.max_body_bytes == 5_000_000


@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        ("127.0.0.1:8080", ("127.0.0.1", 8080)),
        ("[::1]:0", ("::1", 0)),
        ("localhost:1", ("localhost", 1)),
    ],
)
def test_listen_is_split(listen: str, expected: tuple[str, int]) -> None:
    assert listen_address(listen, "api.listen") == expected


@pytest.mark.parametrize("listen", ["8080", ":8080", "host:", "host:http", "host:70000"])
def test_bad_listen_is_refused_with_the_key(listen: str) -> None:
    with pytest.raises(ConfigError, match=r"api\.listen"):
        Config.from_dict({"api": {"listen": listen}})


def test_empty_listen_turns_the_api_off_and_the_limit_must_be_positive() -> None:
    assert Config.from_dict({"api": {"listen": ""}}).api.listen == ""
    with pytest.raises(ConfigError, match=r"api\.max_body_bytes"):
        Config.from_dict({"api": {"max_body_bytes": 0}})
    with pytest.raises(ConfigError, match="unknown key"):
        Config.from_dict({"api": {"port": 1}})
