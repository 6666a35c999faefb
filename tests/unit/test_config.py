"""engine.config: loading and validating the TOML file."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config import Config, ConfigError, listen_address


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "engine.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_a_file() -> None:
    config = Config.load(None, env={})

    assert config == Config()
    assert config.database.dsn is None
    assert config.delivery.lease_s > config.delivery.total_timeout_s


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    assert Config.load(write(tmp_path, ""), env={}) == Config()


def test_file_values_are_read(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[database]
dsn = "postgresql://file/db"
pool_size = 9
synchronous_commit = "off"

[delivery]
concurrency = 16
total_timeout_s = 12.5
lease_s = 60.0
user_agent = "custom/1"

[retry]
jitter = 0.0
schedule_s = [1, 2.5]

[recorder]
log_body_limit_chars = 500

[shutdown]
grace_s = 3.0
""",
    )

    config = Config.load(path, env={})

    assert config.database.dsn == "postgresql://file/db"
    assert config.database.pool_size == 9
    assert config.database.synchronous_commit == "off"
    assert config.delivery.concurrency == 16
    assert config.delivery.total_timeout_s == 12.5
    assert config.delivery.lease_s == 60.0
    assert config.delivery.user_agent == "custom/1"
    assert config.delivery.poll_interval_s == Config().delivery.poll_interval_s
    assert config.retry.jitter == 0.0
    assert config.retry.schedule_s == (1.0, 2.5)
    assert config.recorder.log_body_limit_chars == 500
    assert config.shutdown.grace_s == 3.0


def test_ints_are_accepted_for_float_fields(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "[delivery]\ntotal_timeout_s = 10\nlease_s = 20\n[retry]\nretry_after_max_s = 60\n",
    )

    config = Config.load(path, env={})

    assert config.delivery.total_timeout_s == 10.0
    assert isinstance(config.delivery.total_timeout_s, float)
    assert isinstance(config.delivery.lease_s, float)
    assert isinstance(config.retry.retry_after_max_s, float)


def test_env_dsn_overrides_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[database]\ndsn = "postgresql://file/db"\npool_size = 2\n')

    config = Config.load(path, env={"WEBHOOK_ENGINE_DSN": "postgresql://env/db"})

    assert config.database.dsn == "postgresql://env/db"
    assert config.database.pool_size == 2


def test_env_dsn_without_a_file() -> None:
    config = Config.load(None, env={"WEBHOOK_ENGINE_DSN": "postgresql://env/db"})

    assert config.database.dsn == "postgresql://env/db"


def test_empty_env_dsn_keeps_the_file_value(tmp_path: Path) -> None:
    path = write(tmp_path, '[database]\ndsn = "postgresql://file/db"\n')

    assert Config.load(path, env={"WEBHOOK_ENGINE_DSN": ""}).database.dsn == "postgresql://file/db"


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("[bogus]\nx = 1\n", ["bogus"]),
        ("[delivery]\nconcurency = 4\n", ["concurency"]),
        ("[retry]\ninitial = 1.0\n", ["initial"]),
        ('[delivery]\nconcurrency = "8"\n', ["concurrency"]),
        ("[delivery]\nconcurrency = 1.5\n", ["concurrency"]),
        ("[delivery]\nconcurrency = true\n", ["concurrency"]),
        ("[delivery]\nlease_s = true\n", ["lease_s"]),
        ('[delivery]\ntotal_timeout_s = "30"\n', ["total_timeout_s"]),
        ("[database]\ndsn = 5\n", ["dsn"]),
        ("[delivery]\nuser_agent = 1\n", ["user_agent"]),
        ('[delivery]\nallow_networks = "10.0.0.0/8"\n', ["allow_networks"]),
        ("[delivery]\nallow_networks = [10]\n", ["allow_networks"]),
        (
            '[delivery]\nallow_networks = ["10.0.0.1/8"]\n',
            ["delivery.allow_networks", "10.0.0.1/8"],
        ),
        ('[delivery]\nallow_networks = ["intranet"]\n', ["delivery.allow_networks", "intranet"]),
        ("delivery = 5\n", ["delivery"]),
        ("[delivery]\nconcurrency = 0\n", ["delivery.concurrency"]),
        ("[database]\npool_size = -1\n", ["database.pool_size"]),
        ("[delivery]\npoll_interval_s = 0.0\n", ["delivery.poll_interval_s"]),
        ("[retry]\nretry_after_max_s = -5\n", ["retry.retry_after_max_s"]),
        ("[retry]\njitter = -0.1\n", ["retry.jitter"]),
        ("[retry]\njitter = 2\n", ["retry.jitter"]),
        ("[retry]\nschedule_s = []\n", ["retry.schedule_s"]),
        ("[retry]\nschedule_s = [5, 0]\n", ["retry.schedule_s"]),
        ("[retry]\nschedule_s = 5\n", ["schedule_s"]),
        ("[retry]\nmax_consecutive_failures = -1\n", ["retry.max_consecutive_failures"]),
        ("[recorder]\nflush_max_items = 0\n", ["recorder.flush_max_items"]),
        ("[shutdown]\ngrace_s = 0\n", ["shutdown.grace_s"]),
        ('[database]\nsynchronous_commit = "maybe"\n', ["database.synchronous_commit"]),
        (
            "[delivery]\nlease_s = 30\ntotal_timeout_s = 30\n",
            ["delivery.lease_s", "delivery.total_timeout_s"],
        ),
        (
            "[delivery]\nlease_s = 10\n",
            ["delivery.lease_s", "delivery.total_timeout_s"],
        ),
    ],
)
def test_invalid_settings_name_the_key(tmp_path: Path, text: str, names: list[str]) -> None:
    path = write(tmp_path, text)

    with pytest.raises(ConfigError) as caught:
        Config.load(path, env={})

    for name in names:
        assert name in str(caught.value)


def test_zero_jitter_is_allowed(tmp_path: Path) -> None:
    assert Config.load(write(tmp_path, "[retry]\njitter = 0\n"), env={}).retry.jitter == 0


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "absent.toml"

    with pytest.raises(ConfigError, match=r"absent\.toml"):
        Config.load(missing, env={})


def test_invalid_toml_is_a_config_error(tmp_path: Path) -> None:
    path = write(tmp_path, "[delivery\nconcurrency = 4\n")

    with pytest.raises(ConfigError, match="not valid TOML"):
        Config.load(path, env={})


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


@pytest.mark.parametrize("key", ["total_timeout_s", "poll_interval_s", "lease_s"])
def test_nan_durations_are_rejected(tmp_path: Path, key: str) -> None:
    path = write(tmp_path, f"[delivery]\n{key} = nan\n")

    with pytest.raises(ConfigError, match=key):
        Config.load(path, env={})


def test_allow_networks_default_empty_and_read_as_a_tuple(tmp_path: Path) -> None:
    assert Config().delivery.allow_networks == ()
    text = '[delivery]\nallow_networks = ["127.0.0.0/8", "::1/128"]\n'
    config = Config.load(write(tmp_path, text), env={})
    assert config.delivery.allow_networks == ("127.0.0.0/8", "::1/128")


def test_example_config_is_valid() -> None:
    example = Path(__file__).resolve().parents[2] / "config.example.toml"
    config = Config.load(example, env={})
    assert "127.0.0.0/8" in config.delivery.allow_networks


def test_the_example_config_loads_and_names_no_database() -> None:
    # The README's first command runs with it on a machine without Postgres: no DSN means the
    # embedded server.
    example = Path(__file__).resolve().parents[2] / "config.example.toml"
    config = Config.load(example, env={})
    assert config.database.dsn is None


def test_metrics_section(tmp_path: Path) -> None:
    assert Config().metrics.listen == "127.0.0.1:9464" and not Config().metrics.per_tenant
    path = write(tmp_path, '[metrics]\nlisten = "[::1]:0"\nper_tenant = true\n')
    config = Config.load(path, env={})
    assert config.metrics.listen == "[::1]:0" and config.metrics.per_tenant
    assert listen_address("[::1]:9000") == ("::1", 9000)
    assert Config.load(write(tmp_path, '[metrics]\nlisten = ""\n'), env={}).metrics.listen == ""


@pytest.mark.parametrize(
    "text", ['listen = "9464"', 'listen = "host:"', 'listen = ":80"', 'listen = "h:99999"']
)
def test_bad_metrics_listen_is_refused(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError, match=r"metrics\.listen must be host:port"):
        Config.load(write(tmp_path, f"[metrics]\n{text}\n"), env={})


def test_per_tenant_must_be_a_boolean(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="per_tenant must be bool"):
        Config.load(write(tmp_path, '[metrics]\nper_tenant = "yes"\n'), env={})


def test_example_config_loads() -> None:
    example = Path(__file__).resolve().parents[2] / "config.example.toml"
    assert Config.load(example, env={}).metrics == Config().metrics
