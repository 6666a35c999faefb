from __future__ import annotations

from pathlib import Path

from engine.ops.embedded import Connection, default_data_dir


def test_systemd_state_directory_comes_first() -> None:
    env = {"STATE_DIRECTORY": "/var/lib/webhook-engine:/var/lib/other", "XDG_DATA_HOME": "/x"}
    assert default_data_dir(env, euid=1000) == Path("/var/lib/webhook-engine/postgres")


def test_root_uses_var_lib() -> None:
    assert default_data_dir({}, euid=0) == Path("/var/lib/webhook-engine/postgres")


def test_a_user_gets_the_xdg_data_directory() -> None:
    env = {"XDG_DATA_HOME": "/home/ann/.data"}
    assert default_data_dir(env, euid=1000) == Path("/home/ann/.data/webhook-engine/postgres")
    assert default_data_dir({}, euid=1000) == (Path.home() / ".local/share/webhook-engine/postgres")


def test_the_masked_dsn_hides_only_the_password() -> None:
    connection = Connection(port=54321, password="abc-123")
    assert connection.dsn == "postgresql://postgres:abc-123@127.0.0.1:54321/webhooks"
    assert connection.masked_dsn == "postgresql://postgres:********@127.0.0.1:54321/webhooks"
