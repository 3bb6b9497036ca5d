"""Shared fixtures: a fresh database per test and helpers to drive the real CLI.

``cli_subprocess`` runs ``python -m usagebox_cli`` in a subprocess, exactly as a user or
a cron job would, and returns the CompletedProcess (stdout, stderr, returncode);
``cli`` is it, except in a module marked ``cli_inprocess``, where it is the in-process one.
``cli_inprocess`` calls ``usagebox_cli.cli.main`` in the test process with
captured output, for tests that run hundreds of commands (a subprocess
costs a Python start-up each, about 0.3 s); it returns the same kind of result.
``write_ndjson`` writes event dicts as NDJSON lines.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from ledgers import ENGINES, Ledgers
from pgcluster import pg_ledger, pg_server  # noqa: F401  (shared PostgreSQL fixtures)

ROOT = Path(__file__).resolve().parent.parent

# Every test runs at this "now" (the future-timestamp check, default windows,
# close-period's "has the month ended"), so the suite passes on any date:
# subprocesses get it as $USAGEBOX_NOW, in-process calls through
# ``timefmt.clock``.  It lies after every event date the tests use.
TEST_NOW = "2026-12-15T12:00:00Z"
TEST_NOW_DATETIME = datetime(2026, 12, 15, 12, tzinfo=timezone.utc)


@pytest.fixture(autouse=True, scope="session")
def _interruptible_children():
    """Let subprocesses receive Ctrl-C as a user's terminal sends it.

    A pytest-xdist worker starts with SIGINT ignored, and an ignored signal stays
    ignored across exec, so every ``usagebox`` it launched would shrug off the
    SIGINT that the interrupt tests send.  Python's own handler in this process
    becomes the default disposition in a child, which then installs its own.
    """
    import signal

    previous = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def run_cli(args, *, db: Path | None = None, input: str | bytes | None = None, env: dict | None = None, cwd: Path | None = None, timeout: float = 120):
    command = [sys.executable, "-m", "usagebox_cli"]
    if db is not None:
        command += ["--db", str(db)]
    command += [str(a) for a in args]
    environment = dict(os.environ)
    environment.pop("USAGEBOX_DB", None)
    environment["NO_COLOR"] = "1"
    environment["COLUMNS"] = "200"
    environment["USAGEBOX_NOW"] = TEST_NOW
    if env:
        environment.update(env)
    return subprocess.run(
        command,
        input=input.encode() if isinstance(input, str) else input,
        capture_output=True,
        env=environment,
        cwd=cwd,
        timeout=timeout,
    )


class Result:
    def __init__(self, completed: subprocess.CompletedProcess):
        self.returncode = completed.returncode
        self.stdout = completed.stdout.decode("utf-8", "replace")
        self.stderr = completed.stderr.decode("utf-8", "replace")

    def json(self):
        return json.loads(self.stdout)

    def __repr__(self) -> str:
        return f"Result(rc={self.returncode}, stdout={self.stdout[:500]!r}, stderr={self.stderr[:500]!r})"


def pytest_addoption(parser, pluginmanager):
    """Accept pyproject's ``-n auto`` when pytest-xdist is not loaded (``-p no:xdist``): the suite then runs in one process."""
    if not pluginmanager.has_plugin("xdist"):
        # xdist declares -n the same way (a lowercase short option is reserved for plugins).
        parser.getgroup("xdist")._addoption("-n", "--numprocesses", dest="numprocesses", default=None,
                                            help="workers (pytest-xdist is not loaded: ignored, the tests run in this process)")


# The slow tier as a whole module: property tests that run hundreds of commands, and real processes
# killed, raced, interrupted or kept waiting.  ``-m "not slow"`` leaves them out (the fast tier); a
# single slow test elsewhere carries ``@pytest.mark.slow`` itself.
SLOW_MODULES = frozenset({
    "test_buckets", "test_durability", "test_engine_equivalence", "test_ingest_properties", "test_integrity_stateful",
    "test_interrupt", "test_no_internal_error", "test_pg_concurrency", "test_read_properties", "test_readme",
    "test_sql_timeout",
})


def pytest_configure(config):
    """Compile the package's bytecode once, before any worker starts a CLI process; cache rewritten tests.

    With ``PYTHONDONTWRITEBYTECODE`` set (as on these machines) Python never
    caches what it compiles, so every ``usagebox`` the tests start compiled
    the whole package again: about half of its start-up (444 ms against
    228 ms, measured with farm-bench).  A user's ``pip install`` compiles
    at install time; an editable checkout writes the cache on its first run.
    """
    # And let pytest keep the test modules it rewrote for its assertions: rewriting all of them again
    # in every worker took 7 of the 8 seconds a collection took.  (Only this process's choice: the
    # CLI processes the tests start still write nothing.)
    sys.dont_write_bytecode = False
    if hasattr(config, "workerinput"):
        return  # the controller compiled the package
    import compileall

    compileall.compile_dir(str(Path(__file__).resolve().parent.parent / "usagebox_cli"), quiet=2)


def pytest_collection_modifyitems(config, items):
    slow = pytest.mark.slow
    for item in items:
        if item.module is not None and item.module.__name__.rpartition(".")[2] in SLOW_MODULES:
            item.add_marker(slow)


@pytest.fixture(autouse=True, scope="session")
def fixed_clock():
    """In-process "now" is ``TEST_NOW`` too (the CLI subprocesses get it from run_cli)."""
    from usagebox_cli import timefmt

    previous = timefmt.clock
    fixed = (TEST_NOW_DATETIME - timefmt.EPOCH) // timefmt.ONE_US
    timefmt.clock = lambda: fixed
    yield
    timefmt.clock = previous


class InProcessResult(Result):
    """What ``main`` wrote and the exit code it gave, in the shape of ``Result``."""

    def __init__(self, returncode: int, stdout: str, stderr: str):
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr


_CLI_ENV = {"NO_COLOR": "1", "COLUMNS": "200", "USAGEBOX_DB": None}


def run_cli_inprocess(args, *, db: Path | None = None, input: str | bytes | None = None, env: dict | None = None,
                      cwd: Path | None = None) -> InProcessResult:
    """``run_cli`` without the subprocess: ``cli.main(argv)`` with stdin, stdout, stderr and the environment swapped.

    ``main`` returns on success and calls ``sys.exit(code)`` otherwise, so the
    exit code is read from ``SystemExit``.  The environment is the one the
    subprocess fixture gives (``NO_COLOR``, ``COLUMNS``, no ``USAGEBOX_DB``),
    restored afterwards, and so is the working directory (``cwd``).
    """
    from usagebox_cli.cli import main

    argv = (["--db", str(db)] if db is not None else []) + [str(a) for a in args]
    data = input.encode() if isinstance(input, str) else (input or b"")
    stdin = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8")
    stdout, stderr = io.StringIO(), io.StringIO()
    changes = dict(_CLI_ENV, **(env or {}))
    saved = {name: os.environ.get(name) for name in changes}
    saved_stdin = sys.stdin
    for name, value in changes.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    sys.stdin = stdin
    saved_cwd = os.getcwd()
    if cwd is not None:
        os.chdir(cwd)
    code: object = 0
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                main(argv)
            except SystemExit as exc:
                code = exc.code
    finally:
        os.chdir(saved_cwd)
        sys.stdin = saved_stdin
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    if code is None:
        code = 0
    elif not isinstance(code, int):  # sys.exit("message") prints the message and exits 1
        stderr.write(f"{code}\n")
        code = 1
    return InProcessResult(code, stdout.getvalue(), stderr.getvalue())


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "usage.db"


@pytest.fixture(scope="session")
def ledgers(request) -> Ledgers:
    """Fresh ledgers on either engine (``tests/ledgers.py``): ``with ledgers.fresh("postgres") as db: ...``."""
    return Ledgers(request)


@pytest.fixture(params=ENGINES)
def ledger(request, ledgers: Ledgers, tmp_path: Path) -> str:
    """The ``--db`` of a ledger not yet created, once on SQLite and once on PostgreSQL (SPEC §11).

    A module runs its ``cli``/``cli_inprocess`` tests on both engines by
    overriding ``db`` with it: ``@pytest.fixture`` ``def db(ledger): return ledger``.
    """
    return ledgers.empty(request.param, tmp_path)


@pytest.fixture
def cli_subprocess(db: Path):
    """Run the CLI as a real process against the test's database: ``cli_subprocess("ingest", path, "--json")``."""

    def invoke(*args, input=None, env=None, cwd=None, timeout=120) -> Result:
        return Result(run_cli(args, db=db, input=input, env=env, cwd=cwd, timeout=timeout))

    return invoke


@pytest.fixture
def cli(request, db: Path):
    """The CLI as a test runs it: a real process (``cli_subprocess``), or, in a module or test marked
    ``cli_inprocess``, the in-process one; a marked module asks for ``cli_subprocess`` where a test needs a process."""
    if request.node.get_closest_marker("cli_inprocess") is not None:
        return request.getfixturevalue("cli_inprocess")
    return request.getfixturevalue("cli_subprocess")


@pytest.fixture
def cli_inprocess(db: Path):
    """Like ``cli`` but in the test process (milliseconds a command): ``cli_inprocess("usage", "acct_42", "--json")``."""

    def invoke(*args, input=None, env=None, cwd=None) -> InProcessResult:
        return run_cli_inprocess(args, db=db, input=input, env=env, cwd=cwd)

    return invoke


def write_ndjson(path: Path, events) -> Path:
    with open(path, "w", encoding="utf-8") as out:
        for event in events:
            out.write(event if isinstance(event, str) else json.dumps(event))
            out.write("\n")
    return path


def event(n: int = 1, **overrides) -> dict:
    """A valid Usage event; ``n`` varies the event_id."""
    base = {
        "event_id": f"evt_{n:06d}",
        "account_id": "acct_42",
        "meter_id": "claude_tokens",
        "model_id": "claude-opus-4-8",
        "unit": "tokens",
        "quantity": 100,
        "timestamp": "2026-06-16T10:14:05Z",
    }
    base.update(overrides)
    return base


@pytest.fixture(scope="module")
def parse_inline():
    """Parse in the test process instead of a forked reader, for modules that call ``ingest()`` often.

    Forking the large test process costs tens of milliseconds per ingest
    (measured: one property test took 15.0 s forking, 5.4 s inline).  What
    these modules test does not depend on where parsing runs; the reader
    process is covered by test_ingest_reader (identical results both ways),
    test_ingest_properties and every CLI test.
    """
    from usagebox_cli.ops import ingest_reader

    previous = ingest_reader.PARSE_IN_CHILD
    ingest_reader.PARSE_IN_CHILD = False
    yield
    ingest_reader.PARSE_IN_CHILD = previous
