"""A throwaway PostgreSQL server for the tests: real binaries, really started.

``Cluster.start()`` runs ``initdb`` into a temporary folder and ``pg_ctl
start`` with a Unix socket in that folder (``listen_addresses=''`` unless a
TCP port is asked for, then loopback only).  When the tests run as root, as
they do in CI, the server runs as the ``postgres`` user, because PostgreSQL
refuses to run as root.  ``Cluster.database()`` hands each test a fresh,
empty database and its connection string.

The binaries are found in ``$USAGEBOX_PG_BIN``, else the newest
``/usr/lib/postgresql/*/bin``, else on ``PATH``; ``.ci/run`` installs
Debian's ``postgresql`` package where they are missing, so CI never skips
these tests.
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

SUPERUSER = "usagebox_admin"


def import_psycopg():
    """psycopg, or a skip on a machine without the extra; under CI (USAGEBOX_REQUIRE_POSTGRES) never a skip."""
    import pytest

    if os.environ.get("USAGEBOX_REQUIRE_POSTGRES"):
        import psycopg

        return psycopg
    return pytest.importorskip("psycopg", reason="pip install -e '.[test,postgres]' to run the PostgreSQL tests")


def find_bindir() -> Path | None:
    explicit = os.environ.get("USAGEBOX_PG_BIN")
    if explicit:
        return Path(explicit)
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Cluster:
    """``listen``: the TCP addresses to listen on (loopback by default; other hosts need ``trust``);
    ``durable``: keep PostgreSQL's fsync defaults (the benchmarks), instead of the tests' fsync=off."""

    def __init__(self, tcp: bool = True, listen: str = "127.0.0.1", durable: bool = False):
        bindir = find_bindir()
        if bindir is None:
            raise RuntimeError("PostgreSQL server binaries not found: install Debian's postgresql package or set USAGEBOX_PG_BIN")
        self.bindir = bindir
        # One server per test process: each pytest-xdist worker starts its own, in its own folder.
        self.root = Path(tempfile.mkdtemp(prefix=f"ubpg-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}-"))
        self.data = self.root / "data"
        self.port = free_port() if tcp else 5432
        self.tcp = tcp
        self.listen = listen if tcp else ""
        self.durable = durable
        self._as_postgres = os.geteuid() == 0
        self._names = itertools.count(1)

    def _run(self, *args: str) -> subprocess.CompletedProcess:
        kwargs = {}
        if self._as_postgres:
            kwargs = {"user": "postgres", "group": "postgres", "extra_groups": []}
        result = subprocess.run([str(self.bindir / args[0]), *args[1:]], capture_output=True, text=True,
                                cwd=self.root, timeout=120, **kwargs)
        if result.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({result.returncode}): {result.stderr or result.stdout}")
        return result

    def start(self) -> "Cluster":
        if self._as_postgres:
            shutil.chown(self.root, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8",
                  "--locale=C", "--no-sync")
        for attempt in range(3):
            options = f"-k {self.root} -p {self.port} -c listen_addresses='{self.listen}' -c max_connections=200"
            if not self.durable:
                options += " -c fsync=off -c full_page_writes=off"
            try:
                self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-o", options, "-w", "start")
                return self
            except RuntimeError:
                # Another worker's server took the free port between free_port() and the start: try another.
                if not self.tcp or attempt == 2:
                    raise
                self.port = free_port()
        return self

    def trust(self, cidr: str) -> None:
        """Let clients from ``cidr`` log in over TCP without a password (initdb trusts loopback only)."""
        with open(self.data / "pg_hba.conf", "a", encoding="utf-8") as hba:
            hba.write(f"host all all {cidr} trust\n")
        self._run("pg_ctl", "-D", str(self.data), "reload")

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            # A test run leaves hundreds of databases (7 MB each) behind: removing them took 8 s at the
            # end of every worker, so a process of its own removes them while the run reports.
            subprocess.Popen(["rm", "-rf", "--", str(self.root)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)

    def conninfo(self, dbname: str = "postgres", tcp: bool = False, host: str = "127.0.0.1") -> str:
        """libpq's key=value form over the Unix socket, or a URI over TCP (loopback unless ``host``)."""
        if tcp:
            return f"postgresql://{SUPERUSER}@{host}:{self.port}/{dbname}"
        return f"host={self.root} port={self.port} user={SUPERUSER} dbname={dbname}"

    def database(self, template: str | None = None) -> str:
        """A fresh, empty database, or a copy of ``template``; returns its name.

        A copy is made with ``STRATEGY FILE_COPY``: for a small database on a
        server without fsync it is about twice as fast as the WAL_LOG default.
        """
        import psycopg

        name = f"t{os.getpid()}_{next(self._names)}"
        copy = "" if template is None else f' TEMPLATE "{template}" STRATEGY FILE_COPY'
        with psycopg.connect(self.conninfo(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"{copy}')
        return name


def _fixtures():
    """The shared fixtures, made here so every PostgreSQL test module uses one server for the whole run."""
    import pytest

    @pytest.fixture(scope="session")
    def pg_server():
        """One throwaway PostgreSQL server for the test session (started on first use)."""
        import_psycopg()
        server = Cluster().start()
        yield server
        server.stop()

    @pytest.fixture
    def pg_ledger(pg_server):
        """A fresh database migrated to the usagebox schema; returns its libpq connection string."""
        from usagebox_cli.engines.postgres import connection

        dsn = pg_server.conninfo(pg_server.database())
        connection.open_ledger(dsn).close()
        return dsn

    return pg_server, pg_ledger


pg_server, pg_ledger = _fixtures()
