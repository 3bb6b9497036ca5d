"""The fast JSON writer (``dumps``, ``object_writer``) gives exactly the bytes of the general one.

``exactjson.dumps_general`` is the definition of the text (exact decimals, key
order); the fast path streams a million rows of ``sql`` and ``export``.  These
properties hold the two to the same bytes over rows of every shape: big and
tiny decimals, huge integers, unicode and control characters, nulls,
booleans, nested values, repeated column names, subclasses.
"""

from __future__ import annotations

import contextlib
import io
from decimal import Decimal

import pytest
from hypothesis import given, settings, strategies as st

from usagebox_cli import exactjson, render


class Label(str):
    """A str subclass that prints itself otherwise: the fast path must hand it to the general writer."""

    def __str__(self) -> str:
        return "label:" + super().__str__()


class Count(int):
    def __str__(self) -> str:
        return "count:" + super().__str__()


decimals = st.builds(lambda mantissa, exponent: Decimal(mantissa).scaleb(exponent),
                     st.integers(-10**30, 10**30), st.integers(-40, 40))
texts = st.text(max_size=20) | st.sampled_from(["", '"', "\\", "\n\t\r\x00\x1f", "é", "日本語", "🙂", "\u2028"])
scalars = st.one_of(
    st.none(), st.booleans(), texts, decimals,
    st.integers(), st.integers(-10**60, 10**60), st.sampled_from([0, -1, 2**63, -2**63 - 1]),
    st.builds(Label, texts), st.builds(Count, st.integers()),
)
values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.tuples(children, children)
    | st.dictionaries(texts | st.builds(Label, texts), children, max_size=4),
    max_leaves=12,
)
columns = st.lists(texts | st.sampled_from(["event_id", "quantity", "quantity"]), max_size=8)


@settings(max_examples=200, deadline=None)
@given(values)
def test_compact_dumps_is_the_general_text(value):
    assert exactjson.dumps(value) == exactjson.dumps_general(value)


@settings(max_examples=200, deadline=None)
@given(columns, st.data())
def test_a_row_is_written_as_its_dict_would_be(keys, data):
    row = data.draw(st.lists(values, min_size=len(keys), max_size=len(keys)))
    as_dict = dict(zip(keys, row))
    assert exactjson.object_writer(keys)(row) == exactjson.dumps_general(as_dict)
    depth = data.draw(st.integers(0, 3))
    indent = data.draw(st.sampled_from([1, 2, 4]))
    assert exactjson.object_writer(keys, indent, depth)(row) == exactjson.dumps_general(as_dict, indent, depth)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(["a", "b", "quantity", "é"]), min_size=1, max_size=5), st.data())
def test_streamed_rows_are_the_text_of_the_whole_document(keys, data):
    rows = data.draw(st.lists(st.lists(values, min_size=len(keys), max_size=len(keys)), max_size=5))
    records = [dict(zip(keys, row)) for row in rows]
    assert _printed(render.stream_rows, keys, iter(rows), "json") == exactjson.dumps_general({"rows": records}, indent=2) + "\n"
    assert _printed(render.stream_rows, keys, iter(rows), "ndjson") == "".join(
        exactjson.dumps_general(record) + "\n" for record in records)


def test_a_float_is_still_refused_on_the_fast_path():
    for write in (exactjson.dumps, exactjson.object_writer(["x"]), exactjson.object_writer(["x"], 2)):
        with pytest.raises(TypeError, match="floats are not written"):
            write([0.1] if write is not exactjson.dumps else {"x": [0.1]})


def test_known_texts():
    row = ["evt_1", 1, Decimal("0.000001"), Decimal("12345678901234567890.5"), None, True, {"k": "v", "n": 2}, "é\n"]
    keys = ["event_id", "count", "small", "big", "none", "flag", "dimensions", "text"]
    assert exactjson.object_writer(keys)(row) == (
        '{"event_id":"evt_1","count":1,"small":0.000001,"big":12345678901234567890.5,"none":null,'
        '"flag":true,"dimensions":{"k":"v","n":2},"text":"é\\n"}')
    assert exactjson.object_writer(["a", "a"])([1, 2]) == '{"a":2}'
    assert exactjson.object_writer([])([]) == exactjson.dumps_general({}) == "{}"


def _printed(function, *args) -> str:
    with contextlib.redirect_stdout(io.StringIO()) as out:
        function(*args)
    return out.getvalue()
