"""A PgBouncer of the tests' own, in transaction pooling mode, in front of the embedded PostgreSQL:
few server connections for many clients, so that consecutive transactions of one client run on
different server connections, as in production behind such a pooler."""

import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from tsapi.embedded import SYSTEM_USER, binary

SERVER_CONNECTIONS = 4


def executable() -> str:
    found = shutil.which("pgbouncer") or (
        "/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").exists() else None
    )
    if found is None:
        raise RuntimeError("the tests need PgBouncer: install it (apt-get install pgbouncer)")
    return found


class PgBouncer:
    def __init__(self, directory: Path, server_url: str, port: int) -> None:
        self.directory = directory
        self.port = port
        # The embedded server listens on a Unix socket in a directory only its user may enter:
        # as root, PgBouncer runs as that user (it refuses to run as root anyway).
        self.user = SYSTEM_USER if os.geteuid() == 0 else None
        socket_dir = parse_qs(urlsplit(server_url).query)["host"][0]
        self.config = directory / "pgbouncer.ini"
        (directory / "users.txt").write_text('"postgres" ""\n')
        self.config.write_text(
            "[databases]\n"
            f"* = host={socket_dir}\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
            f"auth_type = trust\nauth_file = {directory / 'users.txt'}\n"
            f"pool_mode = transaction\ndefault_pool_size = {SERVER_CONNECTIONS}\n"
            "max_client_conn = 1000\nadmin_users = postgres\n"
            f"logfile = {directory / 'pgbouncer.log'}\npidfile = {directory / 'pgbouncer.pid'}\n"
        )
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            for path in (directory, *directory.iterdir()):
                os.chown(path, entry.pw_uid, entry.pw_gid)
            for parent in directory.parents:  # let that user reach its files
                parent.chmod(parent.stat().st_mode | stat.S_IXOTH)
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, database_url: str) -> str:
        """The URL of a database of the embedded server, through this PgBouncer."""
        name = urlsplit(database_url).path.lstrip("/")
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def server_pids(self, database_url: str) -> list[int]:
        """The backend pids of PgBouncer's server connections to a database, from its console."""
        name = urlsplit(database_url).path.lstrip("/")
        console = [binary("psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres"]
        lines = subprocess.run(
            [*console, "-A", "-F,", "-P", "footer=off", "-c", "SHOW SERVERS", "pgbouncer"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
        rows = [dict(zip(lines[0].split(","), line.split(","), strict=True)) for line in lines[1:]]
        return [int(row["remote_pid"]) for row in rows if row["database"] == name]

    def start(self) -> None:
        command = [executable(), *(["-u", self.user] if self.user else []), str(self.config)]
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    log = (self.directory / "pgbouncer.log").read_text(errors="replace")
                    raise RuntimeError(f"PgBouncer did not start:\n{log}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
