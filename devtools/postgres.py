"""A throwaway PostgreSQL cluster (Debian's binaries) on a free loopback port, with the migrations applied."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

from devtools.livekit_server import free_port

ROOT = Path(__file__).resolve().parents[1]  # devtools/ sits at the repository root
MIGRATIONS = ROOT / "migrations"
SHIM = Path(__file__).with_name("supabase_shim.sql")


def _bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise RuntimeError("PostgreSQL server binaries not found; run scripts/provision (installs Debian's postgresql)")
    return Path(found[-1]).parent


def _as_postgres(cmd: list[str]) -> list[str]:
    # The server refuses to run as root; CI runs as root, so drop to Debian's `postgres` user.
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def migration_files(kind: str) -> list[Path]:
    return sorted((MIGRATIONS / kind).glob("*.sql"))


class PostgresCluster:
    """initdb + postgres in a temp dir; trust auth on 127.0.0.1 only; removed on stop."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="orch-pg-"))
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, *, timeout_s: float = 30.0) -> "PostgresCluster":
        bindir = _bindir()
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        data = self.dir / "data"
        subprocess.run(
            _as_postgres([str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"]),
            check=True, capture_output=True,
        )
        self._proc = subprocess.Popen(
            _as_postgres([
                str(bindir / "postgres"), "-D", str(data), "-p", str(self.port), "-k", str(self.dir),
                "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "full_page_writes=off",
            ]),
            stdout=subprocess.DEVNULL, stderr=open(self.dir / "server.log", "wb"),
        )
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                psycopg.connect(self.dsn("postgres"), connect_timeout=2).close()
                return self
            except psycopg.OperationalError:
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"postgres did not start: {(self.dir / 'server.log').read_text()[-2000:]}") from None
                time.sleep(0.1)

    def dsn(self, db: str) -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={db}"

    def create_database(self, name: str, *, kinds: list[str]) -> str:
        """A fresh database with the Supabase shim and the given migration sets applied, in order."""
        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            conn.execute(f'create database "{name}"')
        with psycopg.connect(self.dsn(name), autocommit=True) as conn:
            conn.execute(SHIM.read_text())
            for kind in kinds:
                for f in migration_files(kind):
                    conn.execute(f.read_text())
        return self.dsn(name)

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)
