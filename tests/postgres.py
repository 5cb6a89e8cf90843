"""A real PostgreSQL server for tests, started from Debian's `postgresql` package.

Tests that exercise the database (and what happens when it dies mid-load) need the real thing,
not a stand-in: its locking, its crash recovery and its connection errors are what the code
under test has to live with. PostgreSQL refuses to run as root, and both this machine and CI
run the tests as root, so as root the server runs as the `postgres` system user that the
package creates; otherwise it runs as the current user.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import secrets
import shlex
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import psycopg
from psycopg import sql

from tests.helpers import free_port

# Role and database the tests connect as; the role owns the database, so it can create tables.
NAME = "gateway"
# The superuser initdb creates; reachable only over the unix socket (trust), never over TCP.
SUPERUSER = "postgres"
# The user the server runs as when the tests run as root.
SYSTEM_USER = "postgres"
# Characters of the server log that a failed start puts into its error.
LOG_TAIL = 2000
# A unix socket's path must fit in sun_path (108 bytes with the NUL); PostgreSQL appends
# "/.s.PGSQL.<port>.lock" to the directory. Leave a margin.
SOCKET_DIR_MAX = 80

# Written on every start (so that a new PostgresServer on an old folder gets its own port and
# socket). fsync stays on: the kill tests check that no committed row is lost.
SETTINGS = """\
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = {socket_dir}
max_connections = 200
shared_buffers = 64MB
fsync = on
synchronous_commit = on
lc_messages = 'C'
"""


def _bin_dir() -> Path | None:
    """The newest installed major version's binaries: Debian installs each major version side
    by side under /usr/lib/postgresql/<version>, and CI gets whatever the release ships."""

    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", path.parent.name))

    found = [
        path
        for path in Path("/usr/lib/postgresql").glob("*/bin")
        if (path / "initdb").is_file() and (path / "pg_ctl").is_file()
    ]
    return max(found, key=version) if found else None


def _as_root() -> bool:
    return os.geteuid() == 0


def postgres_available() -> bool:
    """Whether a server can be started here: the binaries are installed, and as root the
    `postgres` user exists to run them (tests skip rather than fail without them)."""
    if _bin_dir() is None:
        return False
    if _as_root():
        try:
            pwd.getpwnam(SYSTEM_USER)
        except KeyError:
            return False
    return True


def _process_alive(pid: int) -> bool:
    """Whether pid is a live process: a zombie counts as dead (the postmaster is daemonised,
    and PID 1 in a container need not reap it)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return False
    return fields[0] not in ("Z", "X")


def _children(pid: int) -> list[int]:
    """The processes whose parent is pid (the postmaster forks every backend and helper
    itself, so that is all of them)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid:
            found.append(int(entry.name))
    return found


def _quote(value: str) -> str:
    """A postgresql.conf string literal."""
    return "'" + value.replace("'", "''") + "'"


class PostgresServer:
    """One PostgreSQL cluster on a free port on 127.0.0.1, its files under folder.

    `url` is fixed at construction (random password, port picked now), so a test can hand it
    to the code under test before the server runs, and it stays valid across stop/kill/start.
    """

    def __init__(self, folder: Path | None = None) -> None:
        bin_dir = _bin_dir()
        if bin_dir is None:
            raise RuntimeError("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin)")
        self._bin = bin_dir
        self._uid, self._gid = os.getuid(), os.getgid()
        if _as_root():
            try:
                user = pwd.getpwnam(SYSTEM_USER)
            except KeyError:
                raise RuntimeError(
                    f"running as root, but there is no {SYSTEM_USER!r} user to run PostgreSQL as"
                ) from None
            self._uid, self._gid = user.pw_uid, user.pw_gid
        self._owns_folder = folder is None
        self.folder = Path(tempfile.mkdtemp(prefix="pg")) if folder is None else folder
        self.folder.mkdir(parents=True, exist_ok=True)
        # Everything the server writes lives in one directory of the user it runs as.
        self._base = self.folder / "postgres"
        self.data_dir = self._base / "data"
        self.log_file = self._base / "server.log"
        socket_dir = self._base / "sock"
        self._own_socket_dir: Path | None = None
        if len(str(socket_dir)) > SOCKET_DIR_MAX:  # e.g. pytest's tmp_path: too long
            socket_dir = self._own_socket_dir = Path(tempfile.mkdtemp(prefix="pg", dir="/tmp"))
        self.socket_dir = socket_dir
        self.port = free_port()
        self._password = secrets.token_urlsafe(24)  # URL-safe: no quoting in `url`
        self.url = f"postgresql://{NAME}:{self._password}@127.0.0.1:{self.port}/{NAME}"
        self._prepare_dirs()

    def _prepare_dirs(self) -> None:
        """The server's user must own its directories (initdb and the postmaster insist on a
        0700 data dir of their own), and as root it must be able to reach them: mkdtemp and
        pytest's tmp dirs are 0700 root, so the folder and its parents get o+x (search only;
        nobody can list them)."""
        for path in (self._base, self.socket_dir):
            path.mkdir(parents=True, exist_ok=True)
            os.chown(path, self._uid, self._gid)
            path.chmod(0o700)
        if _as_root():
            for path in (self.folder.resolve(), *self.folder.resolve().parents):
                mode = path.stat().st_mode
                if not mode & stat.S_IXOTH:
                    path.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)

    def _command(self, *args: str) -> list[str]:
        """A PostgreSQL binary's command line, as the server's user when we are root."""
        cmd = [str(self._bin / args[0]), *args[1:]]
        if not _as_root():
            return cmd
        if shutil.which("runuser"):
            return ["runuser", "-u", SYSTEM_USER, "--", *cmd]
        return ["su", "-s", "/bin/sh", SYSTEM_USER, "-c", shlex.join(cmd)]

    def _run(self, *args: str, timeout_s: float) -> subprocess.CompletedProcess[str]:
        # PG* variables (PGDATA, PGPORT, ...) from the caller's shell must not steer the tools.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(LC_ALL="C", LANG="C")
        return subprocess.run(
            self._command(*args), cwd=self._base, env=env, capture_output=True, text=True,
            timeout=max(timeout_s, 1), check=False,
        )  # fmt: skip

    def _redact(self, text: str) -> str:
        return text.replace(self._password, "<password>")

    def _fail(self, what: str, output: str = "") -> RuntimeError:
        """An error with the tool's output and the end of the server log, which is where
        PostgreSQL says why it would not start (a statement it logs could hold the password,
        hence the redaction)."""
        log = ""
        with contextlib.suppress(OSError):
            log = self.log_file.read_text(errors="replace")[-LOG_TAIL:]
        message = f"PostgreSQL {what} (data dir {self.data_dir})"
        if output.strip():
            message += f"\n--- output ---\n{output.strip()}"
        if log:
            message += f"\n--- {self.log_file} (end) ---\n{log}"
        return RuntimeError(self._redact(message))

    def _postmaster_pid(self) -> int | None:
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    @property
    def password(self) -> str:
        """The `gateway` role's password (tests look for it where no secret may be)."""
        return self._password

    def running(self) -> bool:
        """Whether the postmaster named in postmaster.pid is alive (a crash leaves the file)."""
        pid = self._postmaster_pid()
        return pid is not None and _process_alive(pid)

    def _initdb(self, timeout_s: float) -> None:
        """A fresh cluster: trust on the unix socket (only this folder's user and root can
        reach it) so the setup needs no superuser password, SCRAM over TCP so the tests really
        log in with `url`. --no-sync only skips flushing initdb's files to disk, which matters
        for a power cut, not a killed server."""
        done = self._run(
            "initdb", "-D", str(self.data_dir), f"--username={SUPERUSER}",
            "--auth-local=trust", "--auth-host=scram-sha-256", "--encoding=UTF8",
            "--no-locale", "--no-sync", timeout_s=timeout_s,
        )  # fmt: skip
        if done.returncode != 0:
            raise self._fail("initdb failed", done.stdout + done.stderr)
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write("\ninclude 'gateway-test.conf'\n")

    def _write_settings(self) -> None:
        path = self.data_dir / "gateway-test.conf"
        path.write_text(SETTINGS.format(port=self.port, socket_dir=_quote(str(self.socket_dir))))
        os.chown(path, self._uid, self._gid)

    def _setup_roles(self, timeout_s: float) -> None:
        """The `gateway` role with this instance's password, and its database. Idempotent, so
        that a start that failed half-way, or a new instance on an old folder, ends up the same.
        """
        with psycopg.connect(
            host=str(self.socket_dir), port=self.port, user=SUPERUSER, dbname="postgres",
            autocommit=True, connect_timeout=max(int(timeout_s), 2),
        ) as conn:  # fmt: skip
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [NAME]).fetchone()
            verb = sql.SQL("ALTER" if exists else "CREATE")
            conn.execute(
                sql.SQL("{} ROLE {} LOGIN PASSWORD {}").format(
                    verb, sql.Identifier(NAME), sql.Literal(self._password)
                )
            )
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [NAME]).fetchone():
                conn.execute(
                    sql.SQL("CREATE DATABASE {} OWNER {}").format(
                        sql.Identifier(NAME), sql.Identifier(NAME)
                    )
                )

    def start(self, timeout_s: float = 60) -> None:
        """Start the server (initdb on the first call; the same data dir and port after a stop
        or a kill, when PostgreSQL replays its WAL) and return once `url` accepts a login."""
        deadline = time.monotonic() + timeout_s
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb(timeout_s)
        if not self.running():
            self._write_settings()
            done = self._run(
                "pg_ctl", "start", "-D", str(self.data_dir), "-l", str(self.log_file), "-w",
                "-t", str(max(int(deadline - time.monotonic()), 1)),
                timeout_s=deadline - time.monotonic() + 5,
            )  # fmt: skip
            if done.returncode != 0:
                raise self._fail("did not start", done.stdout + done.stderr)
        try:
            self._setup_roles(deadline - time.monotonic())
        except psycopg.Error as error:
            raise self._fail("setup over the unix socket failed", str(error)) from None
        last = ""
        while True:
            try:
                with psycopg.connect(self.url, connect_timeout=2):
                    return
            except psycopg.OperationalError as error:
                last = str(error)
            if time.monotonic() > deadline or not self.running():
                raise self._fail(f"did not accept logins within {timeout_s:.0f}s", last)
            time.sleep(0.1)

    def stop(self) -> None:
        """Fast shutdown: roll back open transactions, checkpoint, exit. Idempotent. If the
        server does not stop in time it is killed, so teardown never leaves one behind."""
        if not self.running():
            return
        done = self._run("pg_ctl", "stop", "-D", str(self.data_dir), "-m", "fast", "-w",
                         "-t", "60", timeout_s=70)  # fmt: skip
        if done.returncode != 0 and self.running():
            self.kill()

    def kill(self) -> None:
        """SIGKILL the postmaster and every process it forked, as a crash of the database
        host would: no checkpoint, no goodbye to clients. The backends die too, because a
        new postmaster refuses to start while old ones still hold the shared memory. The next
        start() runs crash recovery."""
        pid = self._postmaster_pid()
        if pid is None or not _process_alive(pid):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)  # no new backends while we collect them
        doomed = [pid, *_children(pid)]
        for each in doomed:
            with contextlib.suppress(ProcessLookupError):
                os.kill(each, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while any(_process_alive(each) for each in doomed):
            if time.monotonic() > deadline:
                raise self._fail(f"processes {doomed} survived SIGKILL")
            time.sleep(0.02)
        # The lock files name the dead postmaster. PostgreSQL clears stale ones itself, but
        # it tests them with kill(pid, 0), which succeeds on a zombie: the postmaster is
        # daemonised, and a container's PID 1 need not reap it. Crash recovery does not
        # depend on them (pg_control says the cluster was not shut down).
        (self.data_dir / "postmaster.pid").unlink(missing_ok=True)
        for lock in self.socket_dir.glob(".s.PGSQL.*"):
            lock.unlink(missing_ok=True)

    def close(self) -> None:
        """Stop the server and remove its files: the whole folder if this instance made it,
        else only what it put there."""
        self.stop()
        if self._own_socket_dir is not None:
            shutil.rmtree(self._own_socket_dir, ignore_errors=True)
        shutil.rmtree(self.folder if self._owns_folder else self._base, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
