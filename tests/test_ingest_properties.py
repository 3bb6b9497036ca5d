"""Property tests of ingest: every line has exactly one outcome, each event_id
is counted once, and the stored totals and rollups equal an exact recompute.

Scenarios are generated with hypothesis: event_ids come from a small pool so
repeats are common; a repeat is re-rendered (key order, ``5`` vs ``"5.000"``
vs ``5E0``, ``Z`` vs ``+05:45`` for the same instant, dimension ``7`` vs
``"7"``), or changed in one field.  Lines are split over several files,
ingested in a shuffled order over several calls, and some files are run
again.  A small reference model (plain Python, exact integers in millionths)
says what each line's outcome must be, following SPEC §2-3:

- a line that is not structurally valid is rejected, whatever its event_id;
- otherwise it is deduplicated first: a stored event_id with an equal
  canonical payload is a duplicate, with a different one a conflict;
- only a new event_id meets the policy checks (unknown fields, timestamps in
  the future, a Retraction's target) and is then accepted or rejected.

Every property runs on both engines (SPEC §11), a fresh ledger per example;
what is stored is read back with the tests' own SQL (``ledgers.LedgerSQL``),
never through the engine under test.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import defaultdict
import decimal
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Optional

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from ledgers import ENGINES, SCRATCH, LedgerSQL, examples
from usagebox_cli.engines import open_engine
from usagebox_cli.ops.ingest import IngestOptions, ingest

# Shrinking a failing scenario re-runs ingests for minutes; the unshrunk example is
# printed whole (files, plan), which is a complete reproduction.  Set
# USAGEBOX_SHRINK=1 to shrink anyway.
PHASES = list(Phase) if os.environ.get("USAGEBOX_SHRINK") else [p for p in Phase if p is not Phase.shrink]
SETTINGS = settings(
    max_examples=int(os.environ.get("USAGEBOX_EXAMPLES", "30")),
    deadline=None,
    database=None,
    phases=PHASES,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
US = 1_000_000
HOUR_US = 3600 * US
SCALE = 1_000_000
LIMIT = 10**12

USAGE, CORRECTION, RETRACTION = 0, 1, 2

EVENT_IDS = ["evt-a", "evt-b", "evt-c", "evt-d", "évt-ü", 'evt"q\\', "evt-" + "x" * 190]
ACCOUNTS = ["acct_1", "acct_2", "ácct/ü"]
METERS = ["claude_tokens", "tool_calls"]
MODELS = [None, "claude-opus-4-8", "claude-haiku-4"]
PRODUCTS = [None, "chat"]
UNITS = [None, "tokens"]
REFS = ["recon_may_2026_vendor", "evt-a", "evt-b"]
DIM_KEYS = ["region", "feature", "tier.level", "_x-y"]


def _ts(text: str) -> int:
    return (datetime.fromisoformat(text) - EPOCH) // timedelta(microseconds=1)


# A few hours (one on a leap day, one at a year boundary) so rollup buckets fill up.
BASE_HOURS = [_ts("2024-02-29T23:00:00+00:00"), _ts("2025-06-16T10:00:00+00:00"), _ts("2020-12-31T23:00:00+00:00")]
FUTURE_TS = _ts("9000-01-01T00:00:00+00:00")  # far beyond the 5-minute clock-skew allowance
OFFSETS = [None, 0, 120, -300, 330, 345, -570, 840, -720]  # minutes; None renders as "Z"


# -- the logical events ---------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    """A Usage or Correction event in canonical form (quantity in millionths)."""

    event_id: str
    account_id: str
    meter_id: str
    model_id: Optional[str]
    product_id: Optional[str]
    unit: Optional[str]
    quantity: int
    ts_us: int
    kind: int
    correction_ref: Optional[str]
    dimensions: Optional[tuple]  # sorted ((key, text), ...) or None

    def payload(self) -> tuple:
        return (self.account_id, self.meter_id, self.model_id, self.product_id, self.unit,
                self.quantity, self.ts_us, self.kind, self.correction_ref, self.dimensions)


@dataclass(frozen=True)
class RetractionSpec:
    event_id: str
    account_id: str
    correction_ref: str
    stated: tuple = ()  # ((field, canonical value), ...) that the line states explicitly


@dataclass
class Line:
    kind: str  # "blank" | "reject" | "event" | "retraction"
    text: str
    spec: object = None
    event_id: Optional[str] = None  # for rejects: the event_id a person would see, None when unparseable
    policy: Optional[str] = None  # "extra" | "future": refused only when the event_id is new


# -- strategies ----------------------------------------------------------------

quantity_usage = st.builds(
    lambda whole, digits, fraction: whole * SCALE + (fraction % 10**digits) * 10 ** (6 - digits) if digits else whole * SCALE,
    st.one_of(st.integers(0, 20), st.integers(0, LIMIT - 1)),
    st.integers(0, 6),
    st.integers(0, 999_999),
)


@st.composite
def quantity_correction(draw):
    value = draw(quantity_usage) or 1
    return -value if draw(st.booleans()) else value


@st.composite
def instant(draw):
    base = draw(st.sampled_from(BASE_HOURS))
    within = draw(st.one_of(st.just(0), st.just(HOUR_US - 1), st.integers(0, HOUR_US - 1)))
    grain = draw(st.sampled_from([1, 1000, US]))
    return base + within - within % grain


dimension_value = st.one_of(
    st.sampled_from(["us-east", "eu-west", "ü-Ω"]),
    st.integers(-3, 300).map(str),
    st.sampled_from(["true", "false"]),
)


@st.composite
def dimensions(draw):
    if draw(st.booleans()):
        return None
    keys = draw(st.lists(st.sampled_from(DIM_KEYS), min_size=1, max_size=3, unique=True))
    return tuple(sorted((key, draw(dimension_value)) for key in keys))


@st.composite
def new_spec(draw, event_id=None):
    kind = draw(st.sampled_from([USAGE, USAGE, USAGE, CORRECTION]))
    return Spec(
        event_id=event_id or draw(st.sampled_from(EVENT_IDS)),
        account_id=draw(st.sampled_from(ACCOUNTS)),
        meter_id=draw(st.sampled_from(METERS)),
        model_id=draw(st.sampled_from(MODELS)),
        product_id=draw(st.sampled_from(PRODUCTS)),
        unit=draw(st.sampled_from(UNITS)),
        quantity=draw(quantity_usage if kind == USAGE else quantity_correction()),
        ts_us=draw(instant()),
        kind=kind,
        correction_ref=None if kind == USAGE else draw(st.sampled_from(REFS)),
        dimensions=draw(dimensions()),
    )


@st.composite
def mutated(draw, spec: Spec):
    name = draw(st.sampled_from(["account_id", "meter_id", "model_id", "product_id", "unit", "quantity", "ts_us", "dimensions", "kind"]))
    if name == "kind":
        if spec.kind == USAGE:
            return replace(spec, kind=CORRECTION, correction_ref=draw(st.sampled_from(REFS)), quantity=spec.quantity or SCALE)
        return replace(spec, kind=USAGE, correction_ref=None, quantity=abs(spec.quantity))
    values = {
        "account_id": st.sampled_from(ACCOUNTS),
        "meter_id": st.sampled_from(METERS),
        "model_id": st.sampled_from(MODELS),
        "product_id": st.sampled_from(PRODUCTS),
        "unit": st.sampled_from(UNITS),
        "quantity": quantity_usage if spec.kind == USAGE else quantity_correction(),
        "ts_us": instant(),
        "dimensions": dimensions(),
    }
    return replace(spec, **{name: draw(values[name])})


# -- rendering: many texts for one canonical payload ------------------------------


def _number_text(draw, millionths: int) -> str:
    sign = "-" if millionths < 0 else ""
    whole, fraction = divmod(abs(millionths), SCALE)
    digits = f"{fraction:06d}".rstrip("0")
    form = draw(st.sampled_from(["plain", "plain", "padded", "exponent", "scientific"]))
    if form == "plain":
        return sign + (f"{whole}.{digits}" if digits else str(whole))
    if form == "padded":  # trailing zeros, also past the 6th digit ("1.1234560 is fine")
        padding = "0" * draw(st.integers(1, 2))
        return f"{sign}{whole}.{digits}{padding}"
    mantissa = int(f"{whole}{digits}")
    exponent = -len(digits)
    if form == "exponent" or mantissa < 10:
        return f"{sign}{mantissa}{draw(st.sampled_from(['e', 'E']))}{exponent}"
    text = str(mantissa)
    return f"{sign}{text[0]}.{text[1:]}E{exponent + len(text) - 1:+d}"


def _quantity_json(draw, millionths: int) -> str:
    text = _number_text(draw, millionths)
    as_string = draw(st.booleans())
    if as_string and "e" not in text.lower():
        return json.dumps(text)
    return text


def _timestamp_text(draw, ts_us: int) -> str:
    offset = draw(st.sampled_from(OFFSETS))
    local = EPOCH + timedelta(microseconds=ts_us + (offset or 0) * 60 * US)
    micro = local.microsecond
    needed = len(f"{micro:06d}".rstrip("0")) if micro else 0
    digits = draw(st.integers(needed, 6)) if needed else draw(st.sampled_from([0, 0, 1, 3]))
    fraction = ("." + f"{micro:06d}"[:digits]) if digits else ""
    if offset is None:
        zone = "Z"
    else:
        hours, minutes = divmod(abs(offset), 60)
        zone = f"{'-' if offset < 0 else '+'}{hours:02d}:{minutes:02d}"
    return local.strftime("%Y-%m-%dT%H:%M:%S") + fraction + zone


def _dimension_json(draw, value: str) -> str:
    if value in ("true", "false") and draw(st.booleans()):
        return value  # a JSON boolean is kept as its JSON text
    if value.lstrip("-").isdigit() and draw(st.booleans()):
        return value  # so is a JSON integer
    return json.dumps(value, ensure_ascii=draw(st.booleans()))


def _object(draw, members: list[tuple[str, str]]) -> str:
    order = draw(st.permutations(members))
    spacing = draw(st.sampled_from([": ", ":"]))
    separator = draw(st.sampled_from([", ", ","]))
    return "{" + separator.join(json.dumps(key) + spacing + value for key, value in order) + "}"


def _string(draw, value: str) -> str:
    return json.dumps(value, ensure_ascii=draw(st.booleans()))


def _optional(draw, members: list, name: str, value: Optional[str]) -> None:
    if value is not None:
        members.append((name, _string(draw, value)))
    elif draw(st.booleans()):
        members.append((name, "null"))  # a null optional field is the same as an absent one


def render_spec(draw, spec: Spec, *, extra: bool = False) -> str:
    members = [
        ("event_id", _string(draw, spec.event_id)),
        ("account_id", _string(draw, spec.account_id)),
        ("meter_id", _string(draw, spec.meter_id)),
        ("quantity", _quantity_json(draw, spec.quantity)),
        ("timestamp", json.dumps(_timestamp_text(draw, spec.ts_us))),
    ]
    _optional(draw, members, "model_id", spec.model_id)
    _optional(draw, members, "product_id", spec.product_id)
    _optional(draw, members, "unit", spec.unit)
    if spec.kind == USAGE:
        kind = draw(st.sampled_from([None, "absent", "Usage", "usage", "USAGE"]))
        if kind == "absent":
            pass
        else:
            members.append(("kind", "null" if kind is None else json.dumps(kind)))
    else:
        members.append(("kind", json.dumps(draw(st.sampled_from(["Correction", "correction", "CORRECTION"])))))
        members.append(("correction_ref", _string(draw, spec.correction_ref)))
    if spec.dimensions is not None:
        members.append(("dimensions", _object(draw, [(key, _dimension_json(draw, value)) for key, value in spec.dimensions])))
    elif draw(st.booleans()):
        members.append(("dimensions", "null"))
    if extra:
        members.append(("note", json.dumps("an unknown top-level field")))
    return _object(draw, members)


def render_retraction(draw, spec: RetractionSpec) -> str:
    members = [
        ("event_id", _string(draw, spec.event_id)),
        ("account_id", _string(draw, spec.account_id)),
        ("kind", json.dumps(draw(st.sampled_from(["Retraction", "retraction", "RETRACTION"])))),
        ("correction_ref", _string(draw, spec.correction_ref)),
    ]
    for name, value in spec.stated:
        if name == "quantity":
            members.append((name, _quantity_json(draw, value)))
        elif name == "ts_us":
            members.append(("timestamp", json.dumps(_timestamp_text(draw, value))))
        elif name == "dimensions":
            members.append((name, _object(draw, [(key, _dimension_json(draw, text)) for key, text in value])))
        else:
            members.append((name, _string(draw, value)))
    return _object(draw, members)


def structural_reject(draw) -> Line:
    """A line that fails validation whatever is stored: always rejected."""
    event_id = draw(st.sampled_from(EVENT_IDS))
    base = {"event_id": event_id, "account_id": "acct_1", "meter_id": "claude_tokens",
            "quantity": 1, "timestamp": "2025-06-16T10:14:05Z"}
    flaw = draw(st.sampled_from([
        "json", "seven_digits", "no_offset", "negative_usage", "too_big", "exponent_overflow",
        "missing_meter", "float_dimension", "zero_correction", "before_1970", "bad_kind",
        "retraction_without_ref", "nan_string",
    ]))
    if flaw == "json":
        return Line("reject", '{"event_id": ' + json.dumps(event_id) + ', "account_id": ', event_id=None)
    text = None
    if flaw == "seven_digits":
        text = json.dumps(base).replace('"quantity": 1', '"quantity": 1.1234567')
    elif flaw == "no_offset":
        base["timestamp"] = "2025-06-16T10:14:05"
    elif flaw == "negative_usage":
        base["quantity"] = "-0.5"
    elif flaw == "too_big":
        base["quantity"] = LIMIT
    elif flaw == "exponent_overflow":
        text = json.dumps(base).replace('"quantity": 1', '"quantity": 1e400')
    elif flaw == "missing_meter":
        del base["meter_id"]
    elif flaw == "float_dimension":
        base["dimensions"] = {"region": 1.5}
    elif flaw == "zero_correction":
        base.update(kind="Correction", correction_ref="x", quantity="0.000")
    elif flaw == "before_1970":
        base["timestamp"] = "1969-12-31T23:59:59Z"
    elif flaw == "bad_kind":
        base["kind"] = "Refund"
    elif flaw == "retraction_without_ref":
        base = {"event_id": event_id, "account_id": "acct_1", "kind": "Retraction"}
    elif flaw == "nan_string":
        base["quantity"] = "NaN"
    return Line("reject", text or json.dumps(base), event_id=event_id)


@st.composite
def scenario_lines(draw) -> list[Line]:
    count = draw(st.integers(1, 24))
    specs: list[Spec] = []
    lines: list[Line] = []
    for _ in range(count):
        options = ["new", "new", "reject", "blank", "retract", "policy"]
        if specs:
            options += ["same", "same", "same", "mutate", "mutate", "mutate"]
        choice = draw(st.sampled_from(options))
        if choice == "blank":
            lines.append(Line("blank", draw(st.sampled_from(["", "   ", "\t "]))))
        elif choice == "reject":
            lines.append(structural_reject(draw))
        elif choice in ("new", "same", "mutate"):
            if choice == "new":
                spec = draw(new_spec())
            else:
                # Usually the first payload seen for an event_id: the one that gets stored.
                firsts = list({spec.event_id: spec for spec in reversed(specs)}.values())
                spec = draw(st.sampled_from(firsts if draw(st.booleans()) else specs))
                if choice == "mutate":
                    spec = draw(mutated(spec))
            specs.append(spec)
            lines.append(Line("event", render_spec(draw, spec), spec=spec))
        elif choice == "policy":
            spec = draw(st.sampled_from(specs)) if specs and draw(st.booleans()) else draw(new_spec())
            policy = draw(st.sampled_from(["extra", "future"]))
            if policy == "extra":
                lines.append(Line("event", render_spec(draw, spec, extra=True), spec=spec, policy="extra"))
            else:
                future = replace(spec, ts_us=FUTURE_TS)
                lines.append(Line("event", render_spec(draw, future), spec=future, policy="future"))
        else:  # a Retraction, usually of a Usage event seen earlier
            usages = [spec for spec in specs if spec.kind == USAGE]
            target = draw(st.sampled_from(usages)) if usages and draw(st.integers(0, 4)) else None
            ref = target.event_id if target else draw(st.sampled_from(EVENT_IDS))
            account = target.account_id if target and draw(st.integers(0, 5)) else draw(st.sampled_from(ACCOUNTS))
            stated = []
            if target is not None:
                for name in draw(st.lists(st.sampled_from(["meter_id", "model_id", "unit", "quantity", "ts_us", "dimensions"]), unique=True, max_size=3)):
                    value = getattr(target, name)
                    if name == "quantity":
                        value = -value if draw(st.integers(0, 4)) else value + SCALE  # mostly the inherited value
                    if value is not None:
                        stated.append((name, value))
            retraction = RetractionSpec(draw(st.sampled_from(EVENT_IDS)), account, ref, tuple(stated))
            lines.append(Line("retraction", render_retraction(draw, retraction), spec=retraction))
    return lines


@st.composite
def scenarios(draw):
    """Lines split over files, and a plan of ingest calls: a shuffled first pass, then re-runs."""
    lines = draw(scenario_lines())
    file_count = draw(st.integers(1, min(4, len(lines))))
    cuts = sorted(draw(st.lists(st.integers(1, len(lines) - 1), min_size=file_count - 1, max_size=file_count - 1, unique=True))) if len(lines) > 1 else []
    bounds = [0, *cuts, len(lines)]
    files = [lines[start:end] for start, end in zip(bounds, bounds[1:])]
    files = [chunk for chunk in files if chunk]
    order = draw(st.permutations(range(len(files))))
    again = draw(st.lists(st.sampled_from(range(len(files))), max_size=4))
    calls = _group(draw, list(order)) + _group(draw, again)
    styles = [(draw(st.sampled_from(["\n", "\r\n"])), draw(st.booleans())) for _ in files]
    return files, calls, styles


def _group(draw, indices: list[int]) -> list[list[int]]:
    calls: list[list[int]] = []
    for index in indices:
        if calls and draw(st.booleans()):
            calls[-1].append(index)
        else:
            calls.append([index])
    return calls


# -- the reference model ---------------------------------------------------------


class Model:
    def __init__(self):
        self.stored: dict[str, tuple] = {}  # event_id -> canonical payload
        self.retracted: dict[str, str] = {}  # target event_id -> retracting event_id
        self.first: dict[str, Line] = {}  # event_id -> the line that was accepted for it

    def outcome(self, line: Line) -> tuple[Optional[str], Optional[tuple]]:
        """(outcome, canonical payload of the line when it has one)."""
        if line.kind == "blank":
            return None, None
        if line.kind == "reject":
            return "rejected", None
        if line.kind == "event":
            spec: Spec = line.spec
            payload = spec.payload()
            known = self.stored.get(spec.event_id)
            if known is not None:
                return ("duplicate" if known == payload else "conflict"), payload
            if line.policy is not None:
                return "rejected", payload
            self.stored[spec.event_id] = payload
            self.first[spec.event_id] = line
            return "accepted", payload
        outcome, payload = self._retraction(line.spec)
        if outcome == "accepted":
            self.first[line.spec.event_id] = line
        return outcome, payload

    def _retraction(self, spec: RetractionSpec):
        """The payload is the Retraction completed from its target; when it cannot be
        completed (no such target, another account, not a Usage event, a stated field
        that differs) it is the fields as the line states them."""
        stated = dict(spec.stated)
        payload = (spec.account_id, stated.get("meter_id"), stated.get("model_id"), None, stated.get("unit"),
                   stated.get("quantity"), stated.get("ts_us"), RETRACTION, spec.correction_ref, stated.get("dimensions"))
        target = self.stored.get(spec.correction_ref)
        problem = target is None or target[0] != spec.account_id or target[7] != USAGE
        if not problem:
            account, meter, model, product, unit, quantity, ts_us, _, _, dims = target
            inherited = {"meter_id": meter, "model_id": model, "unit": unit, "quantity": -quantity, "ts_us": ts_us, "dimensions": dims}
            if any(inherited[name] != value for name, value in spec.stated):
                problem = True
            else:
                payload = (account, meter, model, product, unit, -quantity, ts_us, RETRACTION, spec.correction_ref, dims)
                by = self.retracted.get(spec.correction_ref)
                if by is not None and by != spec.event_id:
                    problem = True
        known = self.stored.get(spec.event_id)
        if known is not None:
            return ("duplicate" if not problem and known == payload else "conflict"), payload
        if problem:
            return "rejected", payload
        self.stored[spec.event_id] = payload
        self.retracted[spec.correction_ref] = spec.event_id
        return "accepted", payload


# -- running a scenario ---------------------------------------------------------


def write_files(directory: Path, files: list[list[Line]], styles) -> list[Path]:
    paths = []
    for index, (lines, (newline, final_newline)) in enumerate(zip(files, styles)):
        path = directory / f"part{index}.{'ndjson' if index % 2 == 0 else 'jsonl'}"
        text = newline.join(line.text for line in lines) + (newline if final_newline else "")
        path.write_bytes(text.encode("utf-8"))
        paths.append(path)
    return paths


COUNT_KEYS = ("accepted", "duplicate", "conflict", "rejected")


def expect_call(model: Model, files: list[list[Line]], paths: list[Path], call: list[int]):
    """What one ingest call must report: counts, error entries, per-file counts, conflict payloads."""
    counts = dict.fromkeys(COUNT_KEYS, 0)
    errors = []
    per_file = []
    conflicts = set()
    for index in call:
        mine = dict.fromkeys(COUNT_KEYS, 0)
        nonblank = 0
        for number, line in enumerate(files[index], start=1):
            outcome, payload = model.outcome(line)
            if outcome is None:
                continue
            nonblank += 1
            counts[outcome] += 1
            mine[outcome] += 1
            if outcome in ("rejected", "conflict"):
                event_id = line.event_id if line.kind == "reject" else line.spec.event_id
                errors.append((str(paths[index]), number, event_id, outcome))
            if outcome == "conflict":
                conflicts.add((line.spec.event_id, payload))
        per_file.append((str(paths[index]), nonblank, *(mine[key] for key in COUNT_KEYS)))
    return counts, errors, per_file, conflicts


def summary_counts(summary) -> dict:
    return {"accepted": summary.accepted, "duplicate": summary.duplicates,
            "conflict": summary.conflicts, "rejected": summary.rejected}


def stored_events(store: LedgerSQL) -> dict[str, tuple]:
    rows = store.rows(
        "SELECT e.event_id, s.account_id, s.meter_id, s.model_id, s.product_id, s.unit, e.quantity, e.ts_us,"
        " e.kind, s.kind, e.correction_ref, s.dimensions FROM events e JOIN series s USING (series_id)"
    )
    found = {}
    for event_id, account, meter, model, product, unit, quantity, ts_us, kind, series_kind, ref, dims in rows:
        # stored as an exact integer (SQLite: not a REAL or TEXT cell; PostgreSQL: bigint)
        assert type(quantity) is int and kind == series_kind, (event_id, quantity, kind, series_kind)
        dims = None if dims is None else tuple(sorted(json.loads(dims).items()))
        found[event_id] = (account, meter, model, product, unit, quantity, ts_us, kind, ref, dims)
    return found


def check_rollups(store: LedgerSQL, stored: dict[str, tuple]) -> None:
    # 1. rollup_hourly equals a recompute from the events table, per (series_id, hour)
    from_events = store.rows(
        "SELECT series_id, ts_us / 3600000000, sum(quantity), count(*), min(quantity), max(quantity)"
        " FROM events GROUP BY 1, 2 ORDER BY 1, 2"
    )
    rollup = store.rows(
        "SELECT series_id, hour, quantity, event_count, min_quantity, max_quantity FROM rollup_hourly ORDER BY 1, 2"
    )
    assert rollup == from_events
    assert all(type(value) is int for row in rollup for value in row)  # exact integers, never REAL or NUMERIC
    check_daily_rollup(store)
    # 2. ... and the model's own recompute, keyed by the series' fields instead of its id
    expected = defaultdict(list)
    for payload in stored.values():
        account, meter, model, product, unit, quantity, ts_us, kind, _, dims = payload
        expected[(account, meter, model, product, unit, kind, dims, ts_us // HOUR_US)].append(quantity)
    expected_rows = sorted(
        ((key, (sum(values), len(values), min(values), max(values))) for key, values in expected.items()), key=repr
    )
    got = store.rows(
        "SELECT s.account_id, s.meter_id, s.model_id, s.product_id, s.unit, s.kind, s.dimensions, r.hour,"
        " r.quantity, r.event_count, r.min_quantity, r.max_quantity"
        " FROM rollup_hourly r JOIN series s USING (series_id)"
    )
    got_rows = sorted((
        ((a, m, mo, p, u, k, None if d is None else tuple(sorted(json.loads(d).items())), h), (q, c, lo, hi))
        for a, m, mo, p, u, k, d, h, q, c, lo, hi in got
    ), key=repr)
    assert got_rows == expected_rows


def check_daily_rollup(store: LedgerSQL) -> None:
    """Any further rollup the schema keeps (rollup_daily, per base series and UTC day) equals the events too."""
    if not store.has_table("rollup_daily"):
        return
    from_events = store.rows(
        "SELECT s.base_id, e.ts_us / 86400000000, sum(e.quantity), count(*), min(e.quantity), max(e.quantity)"
        " FROM events e JOIN series s USING (series_id) GROUP BY 1, 2 ORDER BY 1, 2"
    )
    daily = store.rows(
        "SELECT base_id, day, quantity, event_count, min_quantity, max_quantity FROM rollup_daily ORDER BY 1, 2"
    )
    assert daily == from_events


def decimal_quantity(model: Model, event_id: str) -> Decimal:
    """The exact quantity of a stored event, read again from the text of the line that was accepted."""
    line = model.first[event_id]
    if line.kind == "retraction":
        return -decimal_quantity(model, line.spec.correction_ref)
    value = json.loads(line.text, parse_float=Decimal)["quantity"]
    return Decimal(value) if isinstance(value, (str, int)) else value


def check_totals(store: LedgerSQL, model: Model) -> None:
    stored = model.stored
    total = sum(payload[5] for payload in stored.values())
    with decimal.localcontext(decimal.Context(prec=60, traps=[decimal.Inexact])):
        # a Decimal recompute over the first accepted occurrence of each event_id
        recomputed = sum((decimal_quantity(model, event_id) for event_id in stored), Decimal(0)) * SCALE
    assert recomputed == total
    assert store.one("SELECT coalesce(sum(quantity), 0), count(*) FROM events") == (total, len(stored))
    assert store.one("SELECT coalesce(sum(quantity), 0), coalesce(sum(event_count), 0) FROM rollup_hourly") == (total, len(stored))


def check_conflict_log(store: LedgerSQL, expected: set) -> None:
    logged = set()
    for event_id, incoming in store.rows("SELECT event_id, incoming FROM conflicts"):
        doc = json.loads(incoming, parse_float=Decimal)
        logged.add((event_id, _document_payload(doc)))
    assert logged == expected


def _document_payload(doc: dict) -> tuple:
    quantity = doc["quantity"]
    millionths = None if quantity is None else int(Decimal(str(quantity)) * SCALE)
    ts_us = None if doc["timestamp"] is None else _ts(doc["timestamp"].replace("Z", "+00:00"))
    kind = {"Usage": USAGE, "Correction": CORRECTION, "Retraction": RETRACTION}[doc["kind"]]
    dims = None if doc["dimensions"] is None else tuple(sorted(doc["dimensions"].items()))
    return (doc["account_id"], doc["meter_id"], doc["model_id"], doc["product_id"], doc["unit"],
            millionths, ts_us, kind, doc["correction_ref"], dims)


def run_scenario(db: str, files, calls, styles, *, rerun_everything: bool = False) -> None:
    with tempfile.TemporaryDirectory(dir=SCRATCH) as directory:
        directory = Path(directory)
        paths = write_files(directory, files, styles)
        conn = open_engine(db)
        store = LedgerSQL(db)
        try:
            model = Model()
            all_conflicts: set = set()

            def run_call(call):
                expected_counts, expected_errors, expected_files, conflicts = expect_call(model, files, paths, call)
                summary = ingest(conn, [str(paths[index]) for index in call], IngestOptions())
                nonblank = sum(1 for index in call for line in files[index] if line.kind != "blank")
                assert summary.accepted + summary.duplicates + summary.conflicts + summary.rejected == nonblank
                assert summary_counts(summary) == expected_counts, (call, summary.errors)
                assert [(e["source"], e["line"], e["event_id"], e["outcome"]) for e in summary.errors] == expected_errors
                segments = store.rows(
                    "SELECT path, lines, accepted, duplicates, conflicts, rejected FROM segments"
                    f" WHERE segment_id IN ({','.join('?' * len(summary.segments))}) ORDER BY segment_id",
                    summary.segments,
                )
                assert segments == expected_files
                all_conflicts.update(conflicts)
                return summary

            for call in calls:
                run_call(call)
            check_totals(store, model)
            assert stored_events(store) == model.stored
            check_rollups(store, model.stored)
            check_conflict_log(store, all_conflicts)

            if rerun_everything:
                everything = list(range(len(files)))
                # A first re-run may still accept lines that were refused for a reason that
                # has gone since (a Retraction read before its target); the model says so.
                settled = run_call(everything)
                totals = store.one("SELECT sum(quantity), count(*) FROM events")
                state = dict(model.stored)
                # From then on, running the same files again accepts nothing: every line that was
                # accepted or a duplicate is a duplicate, every conflict a conflict again (a line
                # refused as new can turn into a duplicate or conflict once its event_id was stored
                # later in that run), and the answer is the same each time.
                def keyed(errors):
                    return {(e["source"], e["line"]): e["outcome"] for e in errors}

                settled_errors = keyed(settled.errors)
                previous = None
                for _ in range(2):  # the second time through the fingerprint fast path
                    again = run_call(everything)
                    assert again.accepted == 0
                    again_errors = keyed(again.errors)
                    assert {k for k, v in settled_errors.items() if v == "conflict"} <= {k for k, v in again_errors.items() if v == "conflict"}
                    assert set(again_errors) <= set(settled_errors)  # nothing accepted or duplicate became an error
                    assert again.duplicates >= settled.accepted + settled.duplicates
                    if previous is not None:
                        assert summary_counts(again) == summary_counts(previous)
                        assert again.errors == previous.errors
                    previous = again
                    assert model.stored == state
                    assert store.one("SELECT sum(quantity), count(*) FROM events") == totals
                check_totals(store, model)
                assert stored_events(store) == model.stored
                check_rollups(store, model.stored)
                check_conflict_log(store, all_conflicts)
        finally:
            store.close()
            conn.close()


@pytest.mark.parametrize("engine", ENGINES)
def test_every_line_has_one_outcome_and_each_event_id_counts_once(ledgers, engine):
    @settings(SETTINGS, max_examples=examples(engine, SETTINGS.max_examples))
    @given(scenarios())
    def one_outcome_per_line(case):
        files, calls, styles = case
        with ledgers.fresh(engine) as db:
            run_scenario(db, files, calls, styles)

    one_outcome_per_line()


@pytest.mark.parametrize("engine", ENGINES)
def test_reingesting_the_same_files_yields_only_duplicates_and_the_same_conflicts(ledgers, engine):
    @settings(SETTINGS, max_examples=examples(engine, SETTINGS.max_examples))
    @given(scenarios())
    def reingest_gives_duplicates_only(case):
        files, calls, styles = case
        with ledgers.fresh(engine) as db:
            run_scenario(db, files, calls, styles, rerun_everything=True)

    reingest_gives_duplicates_only()


@pytest.mark.parametrize("engine", ENGINES)
def test_one_payload_in_many_renderings_is_one_event(ledgers, engine):
    """Key order, 5 vs "5.000" vs 5E0, Z vs +05:45, 7 vs "7": always the same event."""
    @settings(max_examples=examples(engine, 30), deadline=None, database=None, phases=PHASES,
              suppress_health_check=[HealthCheck.too_slow])
    @given(st.data())
    def one_event(data):
        spec = data.draw(new_spec())
        draw = data.draw
        texts = [render_spec(draw, spec) for _ in range(data.draw(st.integers(2, 6)))]
        with tempfile.TemporaryDirectory(dir=SCRATCH) as directory, ledgers.fresh(engine) as db:
            path = Path(directory) / "same.ndjson"
            path.write_text("\n".join(texts) + "\n", encoding="utf-8")
            conn = open_engine(db)
            try:
                summary = ingest(conn, [str(path)], IngestOptions())
                assert (summary.accepted, summary.duplicates, summary.conflicts, summary.rejected) == (1, len(texts) - 1, 0, 0), (texts, summary.errors)
                with LedgerSQL(db) as store:
                    assert stored_events(store) == {spec.event_id: spec.payload()}
            finally:
                conn.close()

    one_event()
