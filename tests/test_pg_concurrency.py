"""Several `usagebox ingest` processes and readers on one PostgreSQL ledger over TCP, at the same time.

The promise (SPEC §11): nothing lost or counted twice, no lock error,
deadlock, serialization failure or unique violation reaches the user; a
batch that loses a race is decided again inside, so the events another
writer stored first are reported as duplicates (or, for a different payload,
as a conflict logged once; for a second Retraction of one event, as a
rejection).

The first test lets real processes race on the same and overlapping files
with readers running alongside, and checks the totals against a Decimal
recompute.  The others make one race happen for certain: a "holder"
connection keeps rows (or a conflict log entry) uncommitted, an ingest is
started and seen waiting for them, then the holder commits.  Without the
internal re-decision each of them ends the ingest with exit 2 (or, for the
deadlock, gives up after its attempts); without the conflict lock the
conflict is logged twice.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path

import pytest

from conftest import TEST_NOW, run_cli_inprocess, write_ndjson
from pgcluster import Cluster, import_psycopg

psycopg = import_psycopg()
from usagebox_cli import exactjson  # noqa: E402
from usagebox_cli.engines.postgres import connection, periods, writer  # noqa: E402
from usagebox_cli.events import event_document  # noqa: E402
from usagebox_cli.readers.ndjson import parse_line  # noqa: E402

ACCOUNTS = [f"acct_{n}" for n in range(4)]
METERS = {"tokens": "tokens", "credits": "credits"}
JUNE_DAY_US = 86_400 * 1_000_000
JUNE = 1_780_272_000_000_000  # 2026-06-01T00:00:00Z


@pytest.fixture
def tcp_ledger(pg_server) -> str:
    """A fresh ledger reached over loopback TCP, as a URI (what a collector on another host would use)."""
    uri = pg_server.conninfo(pg_server.database(), tcp=True)
    connection.open_ledger(uri).close()
    return uri


def _events(count: int, seed: int, prefix: str = "e", days: tuple[int, int] = (0, 30)) -> list[dict]:
    """Usage with exact fractional quantities, and every tenth event a negative Correction of the one before."""
    rng = random.Random(seed)
    out: list[dict] = []
    for n in range(count):
        meter = rng.choice(sorted(METERS))
        quantity = str(rng.randint(1, 50_000)) if meter == "tokens" else f"{rng.randint(1, 99_999) / 1000:.3f}"
        ts = JUNE + rng.randrange(days[0] * JUNE_DAY_US, days[1] * JUNE_DAY_US)
        event = {"event_id": f"{prefix}{rng.getrandbits(64):016x}", "account_id": rng.choice(ACCOUNTS),
                 "meter_id": meter, "unit": METERS[meter], "quantity": quantity,
                 "timestamp": f"{ts // 1_000_000}", "model_id": rng.choice(["m1", "m2"])}
        if n % 10 == 9:
            previous = out[-1]
            event.update(kind="Correction", correction_ref=previous["event_id"], account_id=previous["account_id"],
                         meter_id=previous["meter_id"], unit=previous["unit"], model_id=previous["model_id"],
                         quantity="-0.5")
        out.append(event)
    for event in out:  # RFC 3339, not a bare number
        seconds = int(event["timestamp"])
        event["timestamp"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))
    return out


def _env(extra: dict | None = None) -> dict:
    env = dict(os.environ, NO_COLOR="1", COLUMNS="200", USAGEBOX_NOW=TEST_NOW)
    env.pop("USAGEBOX_DB", None)
    env.update(extra or {})
    return env


def _start(uri: str, *args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "usagebox_cli", "--db", uri, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env(env))


def _finish(process: subprocess.Popen, timeout: float = 60) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def _run(uri: str, *args: str) -> tuple[int, object, str]:
    """A command in this process (no interpreter start-up): exit code, its JSON document, stderr."""
    result = run_cli_inprocess(["--db", uri, *args])
    return result.returncode, (json.loads(result.stdout, parse_float=Decimal) if result.stdout.strip() else None), \
        result.stderr


def _expected(events: list[dict]) -> dict:
    totals: dict = {}
    for event in events:
        key = (event["account_id"], event["meter_id"])
        quantity, count = totals.get(key, (Decimal(0), 0))
        totals[key] = (quantity + Decimal(event["quantity"]), count + 1)
    return totals


def _stored(uri: str) -> dict:
    totals = {}
    for account in ACCOUNTS:
        code, document, err = _run(uri, "usage", account, "--period", "2026-06", "--group-by", "meter_id", "--json")
        assert code == 0, err
        for group in document["groups"]:
            totals[(account, group["meter_id"])] = (Decimal(group["sum"]), group["count"])
    return totals


class StartingGate:
    """Holds the exclusive period lock (as a close does) until every writer queues behind it, then lets go.

    Each ingest batch begins by taking that lock shared, so releasing it
    starts all of them inside their first batch at the same moment: the race
    is certain, not left to how fast each interpreter starts.
    """

    def __init__(self, uri: str):
        self.conn = psycopg.connect(uri, autocommit=True)
        self.conn.execute("BEGIN")
        self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (periods.PERIOD_LOCK,))
        self.most_waiting = 0

    def open_when_waiting(self, writers: dict[str, subprocess.Popen], while_waiting, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        with psycopg.connect(self.conn.info.dsn, autocommit=True) as watcher:
            while self.most_waiting < len(writers) and time.monotonic() < deadline:
                for name, process in writers.items():
                    assert process.poll() is None, (name, process.communicate())
                (waiting,) = watcher.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                                             " AND mode = 'ShareLock' AND NOT granted").fetchone()
                self.most_waiting = max(self.most_waiting, waiting)
                while_waiting()
        self.conn.execute("COMMIT")
        self.conn.close()


def _summary(code: int, out: str, err: str) -> dict:
    assert "Error" not in err and "Traceback" not in err, err
    return json.loads(out)


def test_racing_ingests_of_the_same_and_overlapping_files_count_each_event_once_while_readers_read(
        tcp_ledger, tmp_path):
    events = _events(4_000, seed=13)
    lines = [json.dumps(event) for event in events]
    inputs = {
        "all_a": lines, "all_b": lines,  # the same file sent twice at once
        "head": lines[:2_500], "tail_reversed": lines[1_500:][::-1],
        "middle_shuffled": random.Random(7).sample(lines[1_000:3_000], 2_000),
    }
    paths = {name: write_ndjson(tmp_path / f"{name}.ndjson", body) for name, body in inputs.items()}
    readings = []
    gate = StartingGate(tcp_ledger)
    # One writer holds one transaction for its whole run (a user's USAGEBOX_COMMIT_LINES), so it also
    # locks rollup cells across batches; the others commit every batch, as PostgreSQL does by default.
    writers = {name: _start(tcp_ledger, "ingest", str(path), "--json",
                            env={"USAGEBOX_COMMIT_LINES": "100000"} if name == "all_b" else None)
               for name, path in paths.items()}

    def read() -> None:
        readings.append(("verify",) + _run(tcp_ledger, "verify", "--period", "2026-06", "--json"))
        readings.append(("usage",) + _run(tcp_ledger, "usage", "acct_0", "--period", "2026-06", "--json"))

    gate.open_when_waiting(writers, while_waiting=read)  # readers are not held up by a close's lock
    while any(process.poll() is None for process in writers.values()):
        read()
    summaries = {name: _summary(*_finish(process)) for name, process in writers.items()}
    for name, summary in summaries.items():
        assert writers[name].returncode == 0, (name, summary)
        assert (summary["conflicts"], summary["rejected"], summary["errors"]) == (0, 0, []), name
        assert summary["accepted"] + summary["duplicates"] == len(inputs[name]), name
    assert sum(summary["accepted"] for summary in summaries.values()) == len(events)
    assert readings and all(code == 0 for _, code, _, _ in readings), readings
    assert all(document["ok"] for what, _, document, _ in readings if what == "verify")
    assert _stored(tcp_ledger) == _expected(events)
    code, verified, _ = _run(tcp_ledger, "verify", "--period", "2026-06", "--json")
    assert code == 0 and verified["ok"] and verified["raw_count"] == len(events)
    assert gate.most_waiting == len(writers), "the ingests never queued together: no race was exercised"


# -- one race made certain: a holder keeps rows uncommitted until an ingest waits for them -------------


def _parsed(event: dict):
    return parse_line(json.dumps(event).encode(), "reject", False).event


def _document(event: dict) -> str:
    """The text an ingest logs for an event in a conflict."""
    return exactjson.dumps(event_document(_parsed(event)))


def _rows(events: list[dict], segment: int) -> list[writer.Row]:
    """The writer's rows for events without dimensions or product, as an ingest would store them."""
    rows = []
    for line, event in enumerate(events, 1):
        e = _parsed(event)
        rows.append(writer.Row(e.event_id, tuple(e[1:6]) + (e.kind, e.dimensions), e.quantity, e.ts_us, e.kind,
                               e.correction_ref, segment, line, 0))
    return rows


class Holder:
    """A connection in an open transaction: what it writes stays uncommitted until ``commit``."""

    def __init__(self, uri: str, patient: bool = True):
        self.conn = connection.connect(uri)
        if patient:  # the ingest, not the holder, is the one that notices a deadlock
            self.conn.execute("SET deadlock_timeout = '60s'")
        (self.segment,) = self.conn.execute(
            "INSERT INTO usagebox.segments (path, input_format, started_at) VALUES ('holder', 'ndjson', 'now')"
            " RETURNING segment_id").fetchone()
        self.pid = self.conn.info.backend_pid
        self.conn.execute("BEGIN")

    def write(self, events=(), conflicts=()) -> writer.WriteResult:
        return writer.persist(self.conn, _rows(list(events), self.segment), list(conflicts), None,
                              writer.SeriesCache(), {})

    def commit(self) -> None:
        self.conn.execute("COMMIT")
        self.conn.close()


def _wait_until_blocked(uri: str, holder: Holder, process: subprocess.Popen, timeout: float = 30) -> None:
    """Until some other backend waits for a lock (the ingest, queued behind the holder)."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(uri, autocommit=True) as watcher:
        while time.monotonic() < deadline:
            assert process.poll() is None, process.communicate()
            waiting = watcher.execute("SELECT count(*) FROM pg_locks WHERE NOT granted AND pid <> %s",
                                      (holder.pid,)).fetchone()[0]
            if waiting:
                return
            time.sleep(0.02)
    raise AssertionError("the ingest never waited for the holder's rows")


def test_an_ingest_that_finds_another_writers_uncommitted_events_counts_them_as_duplicates(tcp_ledger, tmp_path):
    events = _events(300, seed=1)
    path = write_ndjson(tmp_path / "e.ndjson", events)
    holder = Holder(tcp_ledger)
    holder.write(events[100:250])
    ingest = _start(tcp_ledger, "ingest", str(path), "--json")
    _wait_until_blocked(tcp_ledger, holder, ingest)
    holder.commit()
    code, out, err = _finish(ingest)
    assert code == 0, err
    summary = _summary(code, out, err)
    assert (summary["accepted"], summary["duplicates"]) == (150, 150)
    assert _stored(tcp_ledger) == _expected(events)


def test_an_ingest_chosen_as_a_deadlock_victim_commits_its_earlier_batches_and_decides_again(tcp_ledger, tmp_path):
    # Two batches (5,000 lines each) in one transaction (PostgreSQL commits every batch unless
    # USAGEBOX_COMMIT_LINES says otherwise), P in early June and Q late in June, so they share no rollup
    # cell: the ingest stores P, then waits for the holder's uncommitted Q; the holder then writes P and
    # waits for the ingest.  The ingest notices the deadlock (its deadlock_timeout expires first; the
    # holder's is a minute) and must let go of P by committing it.
    first, second = _events(5_000, seed=2, days=(0, 14)), _events(5_000, seed=3, days=(16, 30))
    events = first + second
    path = write_ndjson(tmp_path / "pq.ndjson", events)
    # Every series stored beforehand, so that neither side waits for the other's new series rows instead.
    seeds = [dict(events[0], event_id=f"seed_{account}_{meter}_{model}_{kind}", account_id=account, meter_id=meter,
                  unit=METERS[meter], model_id=model, quantity="1", kind=kind,
                  **({"correction_ref": events[0]["event_id"]} if kind == "Correction" else {}))
             for account in ACCOUNTS for meter in METERS for model in ("m1", "m2") for kind in ("Usage", "Correction")]
    code, _, err = _run(tcp_ledger, "ingest", str(write_ndjson(tmp_path / "seeds.ndjson", seeds)), "--json")
    assert code == 0, err
    events += seeds
    holder = Holder(tcp_ledger)
    holder.write(second)
    ingest = _start(tcp_ledger, "ingest", str(path), "--json",
                    env={"USAGEBOX_COMMIT_LINES": "10000", "PGOPTIONS": "-c deadlock_timeout=4s"})
    _wait_until_blocked(tcp_ledger, holder, ingest)
    results = []
    racing = threading.Thread(target=lambda: results.append(holder.write(first)))
    racing.start()
    racing.join(30)
    assert not racing.is_alive(), "the ingest kept its first batch's rows locked after losing the deadlock"
    assert len(results[0].lost) == len(first)  # the ingest committed them first
    holder.commit()
    code, out, err = _finish(ingest)
    summary = _summary(code, out, err)
    assert code == 0 and (summary["accepted"], summary["duplicates"]) == (5_000, 5_000)
    assert _stored(tcp_ledger) == _expected(events)


def test_a_second_retraction_racing_the_first_is_rejected_and_the_same_correction_is_a_duplicate(tcp_ledger,
                                                                                                   tmp_path):
    target = {"event_id": "u1", "account_id": "acct_0", "meter_id": "tokens", "unit": "tokens", "quantity": "40",
              "timestamp": "2026-06-03T10:00:00Z", "model_id": "m1"}
    code, _, err = _run(tcp_ledger, "ingest", str(write_ndjson(tmp_path / "t.ndjson", [target])), "--json")
    assert code == 0, err
    correction = dict(target, event_id="c1", kind="Correction", correction_ref="u1", quantity="-1.25")
    first = {"event_id": "r1", "account_id": "acct_0", "kind": "Retraction", "correction_ref": "u1"}
    second = dict(first, event_id="r2")
    holder = Holder(tcp_ledger)
    holder.write([dict(target, event_id="r1", kind="Retraction", correction_ref="u1", quantity="-40"), correction])
    ingest = _start(tcp_ledger, "ingest", str(write_ndjson(tmp_path / "r.ndjson", [correction, second])), "--json")
    _wait_until_blocked(tcp_ledger, holder, ingest)
    holder.commit()
    code, out, err = _finish(ingest)
    summary = _summary(code, out, err)
    assert code == 1
    assert (summary["accepted"], summary["duplicates"], summary["rejected"]) == (0, 1, 1)
    assert summary["errors"][0]["reason"] == "event 'u1' is already retracted (by 'r1'); an event can be retracted once"
    assert _stored(tcp_ledger)[("acct_0", "tokens")] == (Decimal("-1.25"), 3)


def test_a_conflicting_payload_racing_the_first_is_a_conflict_logged_once(tcp_ledger, tmp_path):
    stored = {"event_id": "k1", "account_id": "acct_1", "meter_id": "tokens", "unit": "tokens", "quantity": "100",
              "timestamp": "2026-06-04T10:00:00Z"}
    incoming = dict(stored, quantity="200")
    path = write_ndjson(tmp_path / "k.ndjson", [incoming])
    holder = Holder(tcp_ledger)
    holder.write([stored])
    ingest = _start(tcp_ledger, "ingest", str(path), "--json")
    _wait_until_blocked(tcp_ledger, holder, ingest)
    holder.commit()
    code, out, err = _finish(ingest)
    assert code == 1 and _summary(code, out, err)["conflicts"] == 1
    # The same conflict being logged by another writer at the same moment: logged once.
    with psycopg.connect(tcp_ledger, autocommit=True) as conn:
        (logged,) = conn.execute("SELECT incoming FROM usagebox.conflicts").fetchone()
    other = dict(stored, event_id="k2")
    code, _, err = _run(tcp_ledger, "ingest", str(write_ndjson(tmp_path / "k2.ndjson", [other])), "--json")
    assert code == 0, err
    late = dict(incoming, event_id="k2")
    late_incoming = _document(late)
    holder = Holder(tcp_ledger)
    holder.write(conflicts=[writer.Conflict("k2", _document(other), late_incoming, "quantity",
                                            holder.segment, 1, "2026-06-05T00:00:00.000000Z")])
    ingest = _start(tcp_ledger, "ingest", str(write_ndjson(tmp_path / "late.ndjson", [late])), "--json")
    _wait_until_blocked(tcp_ledger, holder, ingest)
    holder.commit()
    code, out, err = _finish(ingest)
    assert code == 1 and _summary(code, out, err)["conflicts"] == 1
    with psycopg.connect(tcp_ledger, autocommit=True) as conn:
        rows = conn.execute("SELECT event_id, incoming FROM usagebox.conflicts ORDER BY conflict_id").fetchall()
    assert rows == [("k1", logged), ("k2", late_incoming)]


def test_a_close_period_racing_late_usage_from_several_processes_freezes_or_rejects_each_event(tcp_ledger,
                                                                                                 tmp_path):
    streams = [_events(12_000, seed=20 + n, prefix=f"p{n}_") for n in range(3)]
    for stream in streams:
        for event in stream:
            event["account_id"] = "acct_0"
    paths = [write_ndjson(tmp_path / f"late{n}.ndjson", stream) for n, stream in enumerate(streams)]
    ingests = [_start(tcp_ledger, "ingest", str(path), "--json", env={"USAGEBOX_COMMIT_LINES": "5000"})
               for path in paths]
    with psycopg.connect(tcp_ledger, autocommit=True) as conn:
        deadline = time.monotonic() + 60
        while conn.execute("SELECT count(*) FROM usagebox.events").fetchone()[0] < 5_000:
            assert time.monotonic() < deadline
            time.sleep(0.01)
    code, period, err = _run(tcp_ledger, "close-period", "acct_0", "2026-06", "--json")
    assert code == 0, err
    summaries = [_summary(*_finish(process)) for process in ingests]
    closed = "period 2026-06 is closed for acct_0; send a Correction (it lands as a pending adjustment) instead of new Usage"
    rejected = {error["event_id"] for summary in summaries for error in summary["errors"]}  # the first 1,000
    assert all(error["reason"] == closed for summary in summaries for error in summary["errors"])
    assert rejected, "the close landed after every ingest finished: no race was exercised"
    everything = {event["event_id"]: event for stream in streams for event in stream}
    with psycopg.connect(tcp_ledger, autocommit=True) as conn:
        stored = {row[0] for row in conn.execute("SELECT event_id FROM usagebox.events")}
        late_usage = conn.execute("SELECT count(*) FROM usagebox.events WHERE kind = 0 AND seq > %s",
                                  (period["watermark"],)).fetchone()[0]
        before = {row[0] for row in conn.execute("SELECT event_id FROM usagebox.events WHERE seq <= %s",
                                                 (period["watermark"],))}
    refused = everything.keys() - stored
    assert rejected <= refused and stored <= everything.keys()
    assert sum(summary["accepted"] for summary in summaries) == len(stored)
    assert sum(summary["rejected"] for summary in summaries) == len(refused)
    assert all(everything[event_id].get("kind") != "Correction" for event_id in refused)
    assert late_usage == 0
    frozen = _expected([everything[event_id] for event_id in before])
    assert Decimal(period["frozen"]["quantity"]) == sum(quantity for quantity, _ in frozen.values())
    assert period["frozen"]["event_count"] == sum(count for _, count in frozen.values())
    code, verified, _ = _run(tcp_ledger, "verify", "--json")
    assert code == 0 and verified["ok"]


# -- several hosts: each ingest in its own network namespace, reaching the server over a veth pair -------


def _ip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)


def _netns_unavailable() -> str | None:
    """Why this machine cannot make network namespaces, or None."""
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    if os.geteuid() != 0:
        return "making network namespaces needs root (CAP_NET_ADMIN)"
    probe = f"ubprobe{os.getpid() % 100_000}"
    made = _ip("netns", "add", probe)
    if made.returncode != 0:
        return f"`ip netns add` failed: {made.stderr.strip()}"
    _ip("netns", "del", probe)
    return None


@pytest.mark.slow
def test_three_hosts_each_in_its_own_network_namespace_write_one_ledger(tmp_path):
    reason = _netns_unavailable()
    if reason is not None:
        if os.environ.get("USAGEBOX_REQUIRE_POSTGRES"):
            pytest.fail(f"the several-hosts test must run in CI: {reason}")
        pytest.skip(reason)
    tag = os.getpid() % 100_000
    hosts = [(f"ubh{tag}n{n}", f"ubv{tag}h{n}", f"ubv{tag}p{n}", f"10.231.{n}.1", f"10.231.{n}.2") for n in range(3)]
    cluster = None
    try:
        for namespace, outside, inside, server_side, host_side in hosts:  # a /30 per host
            for command in (("netns", "add", namespace),
                            ("link", "add", outside, "type", "veth", "peer", "name", inside),
                            ("link", "set", inside, "netns", namespace),
                            ("addr", "add", f"{server_side}/30", "dev", outside),
                            ("link", "set", outside, "up"),
                            ("-n", namespace, "addr", "add", f"{host_side}/30", "dev", inside),
                            ("-n", namespace, "link", "set", inside, "up"),
                            ("-n", namespace, "link", "set", "lo", "up")):
                done = _ip(*command)
                assert done.returncode == 0, (command, done.stderr)
        # The server listens on the host-side addresses only (not loopback), and a namespace's one route to
        # its /30 is its veth: every connection below crosses a veth pair, as from another machine.
        cluster = Cluster(tcp=True, listen=",".join(host[3] for host in hosts)).start()
        cluster.trust("10.231.0.0/16")
        name = cluster.database()
        connection.open_ledger(cluster.conninfo(name)).close()
        shared = _events(1_500, seed=40, prefix="shared")  # every host also sends these: counted once
        own = [_events(2_500, seed=41 + n, prefix=f"host{n}_") for n in range(3)]
        ingests = []
        for n, (namespace, _, _, server_side, host_side) in enumerate(hosts):
            path = write_ndjson(tmp_path / f"host{n}.ndjson", own[n][:1_000] + shared + own[n][1_000:])
            uri = cluster.conninfo(name, tcp=True, host=server_side)
            ingests.append(subprocess.Popen(
                ["ip", "netns", "exec", namespace, sys.executable, "-m", "usagebox_cli", "--db", uri, "ingest",
                 str(path), "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env()))
        summaries = [_summary(*_finish(process, timeout=120)) for process in ingests]
        assert [process.returncode for process in ingests] == [0, 0, 0]
        assert sum(summary["accepted"] for summary in summaries) == len(shared) + sum(len(o) for o in own)
        assert sum(summary["duplicates"] for summary in summaries) == 2 * len(shared)
        everything = shared + [event for events in own for event in events]
        assert _stored(cluster.conninfo(name)) == _expected(everything)
        code, verified, _ = _run(cluster.conninfo(name), "verify", "--json")
        assert code == 0 and verified["ok"]
    finally:
        if cluster is not None:
            cluster.stop()
        for namespace, outside, _, _, _ in hosts:
            _ip("netns", "del", namespace)  # takes the namespace's end of the veth pair, and so the pair, with it
            _ip("link", "del", outside)
