"""An event's explain trace as it is stored: compact, and read back as the engine wrote it.

The engine writes one dict a rule: ``{"rule_id", "rule", "outcome", "points", "detail"}``. Stored
as such, the keys are most of the bytes (about 1 kB an event with ten rules), and every processed
event's row crossed PostgreSQL's 2 kB threshold, so each status update compressed it too. Stored,
each line is a list ``[rule_id, rule, outcome, points, detail]`` with the outcome as its number
in ``OUTCOMES`` and ``points`` and ``detail`` left out while they are 0 and "" (a third of the
bytes): what it says is unchanged, and reading gives the dicts again. Traces stored as dicts
read as they are.
"""

from __future__ import annotations

from django.db import models

# The engine's outcomes (``rules.engine``); append only: stored traces refer to them by position.
OUTCOMES = ("fired", "condition_false", "not_this_event_type", "outside_window", "cap_reached", "no_points",
            "beaten_by_exclusive", "error")
_NUMBER = {outcome: number for number, outcome in enumerate(OUTCOMES)}
_KEYS = ("rule_id", "rule", "outcome", "points", "detail")
_DEFAULTS = (None, "", None, 0, "")  # what a left-out value reads as


def trace_pack(trace: list) -> list:
    """The stored form of ``trace`` (lines already packed, or of another shape, are kept as they are)."""
    packed = []
    append = packed.append
    for line in trace:
        if type(line) is not dict or len(line) != len(_KEYS):
            append(line)
            continue
        try:
            rule_id, rule, outcome, points, detail = (line["rule_id"], line["rule"], line["outcome"], line["points"],
                                                      line["detail"])
        except KeyError:
            append(line)
            continue
        outcome = _NUMBER.get(outcome, outcome)
        if detail != "":
            append([rule_id, rule, outcome, points, detail])
        elif points != 0:
            append([rule_id, rule, outcome, points])
        else:
            append([rule_id, rule, outcome])
    return packed


def trace_unpack(stored: list) -> list:
    """The trace as the engine wrote it, from its stored form (or from the dicts stored before)."""
    lines = []
    for line in stored:
        if not isinstance(line, list):
            lines.append(line)
            continue
        values = list(line) + list(_DEFAULTS[len(line):])
        if isinstance(values[2], int):
            values[2] = OUTCOMES[values[2]]
        lines.append(dict(zip(_KEYS, values, strict=True)))
    return lines



class TraceField(models.JSONField):
    """A JSON list of trace lines, stored packed (``trace_pack``) and read unpacked."""

    def get_prep_value(self, value):
        return super().get_prep_value(trace_pack(value) if isinstance(value, list) else value)

    def from_db_value(self, value, expression, connection):
        value = super().from_db_value(value, expression, connection)
        return trace_unpack(value) if isinstance(value, list) else value
