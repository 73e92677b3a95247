"""``loyalty.jsontext``: ``pg_json`` (orjson's speed, json's text for everything json would write)
and ``unstorable`` (what PostgreSQL cannot store, found by orjson first and by a walk when in doubt)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import uuid
from decimal import Decimal

import pytest

from loyalty.jsontext import _unstorable, pg_json, unstorable


@dataclasses.dataclass
class Point:
    x: int


VALUES = [
    {"event_id": "e-1", "amount": "12.50", "items": [{"sku": "C-1", "quantity": 2}], "ok": True, "none": None},
    {"text": "ação, 東京, emoji 🎉", "quote": 'a "b" \\ c', "control": "\t\n"},
    {"big": 2**70, "negative_big": -(2**80)},  # beyond 64 bits: orjson refuses, json writes it
    {1: "int key", "nested": {2: [3]}},  # keys that are not strings: json turns them into strings
    [1.5, 0.1, 1e300, -0.0, 12345678901234567890],
    {"when": dt.datetime(2026, 11, 30, 8, 0, tzinfo=dt.UTC), "day": dt.date(2026, 11, 30)},
    {"money": Decimal("1.50"), "id": uuid.UUID(int=7), "point": Point(3)},
]


@pytest.mark.parametrize("value", VALUES)
def test_reads_back_as_json_would_write_it(value):
    assert json.loads(pg_json(value, default=str)) == json.loads(json.dumps(value, default=str))


def test_without_default_what_json_refuses_is_refused():
    with pytest.raises(TypeError):
        pg_json({"money": Decimal("1")})
    with pytest.raises(TypeError):
        json.dumps({"money": Decimal("1")})


STORABLE_OR_NOT = [
    ({"a": [1, {"b": "ok"}], "c": None}, None),
    ({"a": "\\u0000"}, None),  # the six characters, not a NUL: orjson's text has it, the walk says fine
    ({"a": 2**70}, None),  # orjson refuses the integer, the walk says fine
    ({"a": [{"b": "x\x00y"}]}, "null_characters_not_allowed"),
    ({"a": ["\ud800"]}, "surrogate_characters_not_allowed"),
    ({"\udfff": 1}, "surrogate_characters_not_allowed"),
    ({"a": [2**70, "\x00"]}, "null_characters_not_allowed"),
    ({1: "\x00"}, "null_characters_not_allowed"),
    (["fine", "\x00"], "null_characters_not_allowed"),
    ("x\x00", "null_characters_not_allowed"),
    ("plain", None),
]


@pytest.mark.parametrize(("value", "reason"), STORABLE_OR_NOT)
def test_unstorable_answers_as_the_walk_does(value, reason):
    assert unstorable(value) == _unstorable(value) == reason
