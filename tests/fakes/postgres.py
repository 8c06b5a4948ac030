"""A real, throwaway PostgreSQL server on 127.0.0.1 (Debian's ``postgresql`` package), for checkpointer tests.

``initdb`` a cluster in a temp dir with trust auth, start it with ``pg_ctl`` on a free port, stop and
delete it afterwards. As root (CI) the server runs as the ``postgres`` user, which PostgreSQL requires.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.fakes import free_port


def pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


class PostgresServer:
    """``password_auth``: TCP connections must sign in with their role's password (``scram-sha-256``), as a
    managed server's do; the Unix socket (``admin_url``) stays trusted for the test's own set-up."""

    def __init__(self, password_auth: bool = False) -> None:
        self.password_auth = password_auth
        bindir = pg_bin()
        if bindir is None:
            raise RuntimeError("PostgreSQL server binaries not found: apt-get install postgresql (.ci/run does)")
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="qa-pg-"))
        self.port = free_port()
        self._as_postgres = os.geteuid() == 0

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def admin_url(self) -> str:
        """The superuser over the server's Unix socket (trusted: no password)."""
        return f"postgresql://postgres@/postgres?host={self.root}&port={self.port}"

    def _run(self, *args: str) -> None:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self._as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, timeout=60)

    def start(self) -> PostgresServer:
        if self._as_postgres:
            shutil.chown(self.root, "postgres", "postgres")
        data = self.root / "data"
        self._run("initdb", "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync")
        if self.password_auth:
            (data / "pg_hba.conf").write_text("local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n")
        self._run("pg_ctl", "-D", str(data), "-l", str(self.root / "log"), "-w", "-t", "30", "start", "-o",
                  f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off")
        return self

    def pause(self) -> None:
        """Stop the server, keeping its data (a Postgres that went away)."""
        self._run("pg_ctl", "-D", str(self.root / "data"), "-m", "immediate", "-w", "stop")

    def resume(self) -> None:
        self._run("pg_ctl", "-D", str(self.root / "data"), "-l", str(self.root / "log"), "-w", "-t", "30", "start",
                  "-o", f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off")

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.root / "data"), "-m", "immediate", "-w", "stop")
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
