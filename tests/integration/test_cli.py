"""The CLI as a user meets it: real subprocesses, bad input answered with one line on stderr
and the documented exit code (0 ok, 1 runtime/database, 2 usage/config), never a traceback."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import asyncpg
import pytest

from engine import cli
from tests.integration.test_delivery import add_webhook


async def webhook_engine(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "engine.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def one_error_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("webhook-engine: "), err
    return lines[0]


async def test_version() -> None:
    code, out, _ = await webhook_engine("--version")
    assert code == 0 and out.startswith("webhook-engine ") and out.split()[1][0].isdigit()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["run"], "info"),
        (["--log-level", "error", "run"], "error"),
        (["run", "--log-level", "debug"], "debug"),
        (["--log-level", "error", "run", "--log-level", "debug"], "debug"),
    ],
)
def test_global_options_before_or_after_the_subcommand(args: list[str], expected: str) -> None:
    parsed = cli._parser().parse_args(args)
    assert parsed.log_level == expected


def test_global_options_after_the_subcommand_keep_the_ones_before() -> None:
    parsed = cli._parser().parse_args(["--dsn", "postgresql://a/b", "failed", "--config", "c"])
    assert (parsed.dsn, parsed.config, parsed.command) == ("postgresql://a/b", "c", "failed")


async def test_run_accepts_global_options_after_the_subcommand(dsn: str) -> None:
    code, out, err = await webhook_engine("run", "--burst", "--log-level", "warning", "--dsn", dsn)
    assert code == 0, err
    assert '"daemon.started"' not in out  # an info line, hidden at warning


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["failed", "--dsn", "nonsense"], "postgresql://user:password@host:5432/database"),
        (["run", "--dsn", "postgresql://u:pw@127.0.0.1:abc/db"], "invalid port 'abc'"),
        (["init-db", "--dsn", "mysql://u@127.0.0.1/db"], "got scheme 'mysql'"),
        (["run", "--config", "/nonexistent/webhook-engine.toml"], "cannot read config file"),
        (["failed", "--limit", "0"], "must be from 1 to 100000"),
        (["failed", "--limit", "100001"], "must be from 1 to 100000"),
        (["failed", "--limit", "many"], "not a whole number"),
        (["run", "--log-level", "loud"], "invalid choice"),
        (["launch"], "invalid choice"),
    ],
)
async def test_usage_errors_are_one_line_and_exit_2(args: list[str], fragment: str) -> None:
    code, _, err = await webhook_engine(*args)
    assert code == 2, err
    assert fragment in one_error_line(err)


@pytest.mark.parametrize("command", ["failed", "replay", "init-db"])
async def test_unreachable_database_is_one_line_without_the_password(command: str) -> None:
    code, _, err = await webhook_engine(
        command, "--dsn", "postgresql://someone:sup3rsecret@127.0.0.1:1/webhooks"
    )
    assert code == 1, err
    line = one_error_line(err)
    assert "cannot reach the database at 127.0.0.1:1/webhooks" in line
    assert "sup3rsecret" not in line


async def test_wrong_password_is_a_database_error(admin_dsn: str) -> None:
    target = admin_dsn.replace("postgresql://postgres@", "postgresql://nobody_here:n0tTheRight1@")
    if target == admin_dsn:
        pytest.skip("the test server's DSN is not in the form this test rewrites")
    code, _, err = await webhook_engine("failed", "--dsn", target)
    assert code == 1, err
    line = one_error_line(err)
    assert "database error at 127.0.0.1:5432/postgres" in line
    assert "n0tTheRight1" not in line


@pytest.mark.parametrize("command", ["replay", "failed"])
async def test_an_unknown_webhook_is_refused(command: str, dsn: str) -> None:
    code, out, err = await webhook_engine(command, "--webhook", "999", "--dsn", dsn)
    assert code == 2, err
    assert "there is no webhook with id 999" in one_error_line(err)
    assert out == ""


async def test_failed_and_replay_for_a_known_webhook(dsn: str, db: asyncpg.Connection) -> None:
    webhook_id = await add_webhook(db, "http://127.0.0.1:9/", ["*"])
    for command in ("failed", "replay"):
        code, out, err = await webhook_engine(command, "--webhook", str(webhook_id), "--dsn", dsn)
        assert code == 0, err
        assert out == ""  # nothing failed; logs go to stderr, stdout is for results


async def test_dsn_prints_the_configured_dsn(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[database]\ndsn = "postgresql://app@db.example:5432/webhooks"\n')
    code, out, _ = await webhook_engine("dsn", "--config", str(config))
    assert code == 0 and out == "postgresql://app@db.example:5432/webhooks\n"
