"""Common CEL expressions compiled to Python functions that answer exactly as the CEL library.

The CEL library converts every value it is given into its own types and copies a nested map on
each field access: with 20 rules that was most of the cost of ``qualify``. ``compile_fast`` turns
a common expression, when its rule is compiled, into a Python closure over the event's values
(``rules.context.Activation.values``): field paths, literals, ``== != < <= > >= in && || ! ?:``,
arithmetic, ``size int double string has``, ``duration``/``timestamp`` of a literal, the string
and timestamp methods and the list macros.

A closure only answers what it can answer exactly as the library would. A missing key, mixed
types (which the library compares or refuses its own way), an overflow, a division by zero,
a non-ASCII ``size``, a timestamp with an offset: it raises ``Undecided`` (or Python raises),
and the library evaluates the expression, so every error and every corner stays the library's.
``tests/rules/test_fast_cel.py`` checks the two against each other.
"""

from __future__ import annotations

import datetime as dt
import operator
import re
from collections.abc import Callable
from typing import Any

import cel

Fast = Callable[[dict], Any]
INT_MIN, INT_MAX = -(2**63), 2**63 - 1
_NONE = type(None)
_ZERO = dt.timedelta(0)


class Undecided(Exception):
    """The Python evaluation cannot vouch for the library's answer."""


class _Refused(Exception):
    """The expression is left to the library."""


_TOKEN = re.compile(r"""\s*(?:
    (?P<float>\d*\.\d+(?:[eE][+-]?\d+)?|\d+[eE][+-]?\d+)
  | (?P<int>0[xX][0-9a-fA-F]+|\d+)
  | (?P<string>'[^'\\\n\r]*'|"[^"\\\n\r]*")
  | (?P<name>[A-Za-z_]\w*)
  | (?P<op>==|!=|<=|>=|&&|\|\||[-+*/%<>!?:.,()\[\]])
)""", re.VERBOSE | re.ASCII)
_RESERVED = frozenset({"as", "break", "const", "continue", "else", "for", "function", "if", "import", "let",
                       "loop", "package", "namespace", "return", "var", "void", "while"})
_CONSTANTS = {"true": True, "false": False, "null": None}


def _tokens(source: str) -> list[tuple[str, Any]]:
    tokens, position, end = [], 0, len(source.rstrip())
    while position < end:
        match = _TOKEN.match(source, position)
        if match is None or match.end() == position:
            raise _Refused(source[position:])
        kind, text = match.lastgroup, match.group(match.lastgroup)
        if kind == "float":
            tokens.append(("lit", float(text)))
        elif kind == "int":
            value = int(text, 0) if text[:2].lower() == "0x" else int(text)
            if value > INT_MAX + 1:  # INT_MAX + 1 is only valid negated; the range check catches it
                raise _Refused(text)
            tokens.append(("lit", value))
        elif kind == "string":
            tokens.append(("lit", text[1:-1]))
        elif text in _CONSTANTS:
            tokens.append(("lit", _CONSTANTS[text]))
        elif text in _RESERVED:
            raise _Refused(text)
        else:
            tokens.append(("name" if kind == "name" and text != "in" else "op", text))
        position = match.end()
    tokens.append(("end", None))
    return tokens


class _Parser:
    """CEL's grammar, for what the closures support; anything else is refused."""

    def __init__(self, source: str):
        self.tokens = _tokens(source)
        self.at = 0

    def peek(self, *ops: str) -> bool:
        kind, value = self.tokens[self.at]
        return kind == "op" and value in ops

    def take(self, op: str | None = None):
        kind, value = self.tokens[self.at]
        if op is not None and not (kind == "op" and value == op):
            raise _Refused(f"expected {op}")
        self.at += 1
        return kind, value

    def parse(self) -> tuple:
        node = self.expression()
        if self.tokens[self.at][0] != "end":
            raise _Refused("trailing input")
        return node

    def expression(self) -> tuple:
        condition = self.binary(0)
        if not self.peek("?"):
            return condition
        self.take("?")
        then = self.binary(0)
        self.take(":")
        return ("?", condition, then, self.expression())

    _LEVELS = (("||",), ("&&",), ("==", "!=", "<", "<=", ">", ">=", "in"), ("+", "-"), ("*", "/", "%"))

    def binary(self, level: int) -> tuple:
        if level == len(self._LEVELS):
            return self.unary()
        node = self.binary(level + 1)
        while self.peek(*self._LEVELS[level]):
            op = self.take()[1]
            node = (op, node, self.binary(level + 1))
        return node

    def unary(self) -> tuple:
        if self.peek("!", "-"):
            op = self.take()[1]
            return ("!" if op == "!" else "neg", self.unary())
        return self.member()

    def member(self) -> tuple:
        node = self.primary()
        while self.peek(".", "["):
            if self.take()[1] == "[":
                node = ("index", node, self.expression())
                self.take("]")
                continue
            kind, name = self.take()
            if kind != "name":
                raise _Refused("field")
            node = ("call", name, [node, *self.arguments()]) if self.peek("(") else ("field", node, name)
        return node

    def arguments(self) -> list[tuple]:
        self.take("(")
        arguments = []
        while not self.peek(")"):
            arguments.append(self.expression())
            if not self.peek(")"):
                self.take(",")
        self.take(")")
        return arguments

    def primary(self) -> tuple:
        kind, value = self.take()
        if kind == "lit":
            return ("lit", value)
        if kind == "name":
            return ("global", value, self.arguments()) if self.peek("(") else ("name", value)
        if value == "(":
            node = self.expression()
            self.take(")")
            return node
        if value == "[":
            elements = []
            while not self.peek("]"):
                elements.append(self.expression())
                if not self.peek("]"):
                    self.take(",")
            self.take("]")
            return ("list", elements)
        raise _Refused(f"unexpected {value}")


def compile_fast(source: str) -> Fast:
    """A function deciding ``source`` in Python; ``undecided`` when it is left to the library."""
    try:
        return _Generator().function(_Parser(source).parse())
    except (_Refused, RecursionError, MemoryError, SyntaxError, ValueError):
        return undecided


def undecided(values: dict):
    raise Undecided


# --- the Python functions ---------------------------------------------------------------------


def _undecided():
    raise Undecided


def _int(value) -> int:
    if type(value) is not int or not INT_MIN <= value <= INT_MAX:
        raise Undecided
    return value


def _same(a, b, allowed: tuple) -> type:
    """The one type of two operands the functions may combine; ints must be CEL ints."""
    kind = type(a)
    if kind is not type(b) or kind not in allowed:
        raise Undecided
    if kind is int:
        _int(a), _int(b)
    elif kind is dt.datetime and (a.tzinfo is None or b.tzinfo is None):
        raise Undecided  # the library reads a naive datetime as local time
    return kind


_EQUALITY = (str, int, float, bool, _NONE)
_ORDERED = (int, float, str, dt.datetime, dt.timedelta)


def _compare(compare, allowed):
    def check(a, b):
        _same(a, b, allowed)
        return compare(a, b)
    return check


def _add(a, b):
    kind = _same(a, b, (int, float, str))
    return _int(a + b) if kind is int else a + b


def _sub(a, b):
    kind = _same(a, b, (int, float, dt.datetime))
    return _int(a - b) if kind is int else a - b


def _mul(a, b):
    kind = _same(a, b, (int, float))
    return _int(a * b) if kind is int else a * b


def _div(a, b):
    kind = _same(a, b, (int, float))
    if b == 0:
        raise Undecided
    if kind is float:
        return a / b
    quotient = abs(a) // abs(b)  # CEL truncates towards zero
    return _int(-quotient if (a < 0) != (b < 0) else quotient)


def _mod(a, b):
    _same(a, b, (int,))
    if b == 0 or a == INT_MIN:
        raise Undecided
    remainder = abs(a) % abs(b)  # with the sign of the dividend, as CEL's
    return -remainder if a < 0 else remainder


def _in(a, b):
    kind = type(b)
    if type(a) is str and kind is dict:
        return a in b
    if kind is list or kind is tuple:
        for element in b:
            _same(a, element, (str, int))
        return a in b
    raise Undecided


def _neg(value):
    return -value if type(value) is float else _int(-_int(value))


def _index(container, key):
    kind = type(container)
    if kind is dict and type(key) is str:
        return container[key]
    if (kind is list or kind is tuple) and 0 <= _int(key) < len(container):
        return container[key]
    raise Undecided


def _has(container, key: str) -> bool:
    if type(container) is not dict:
        raise Undecided
    return key in container


def _size(value) -> int:
    kind = type(value)
    if kind is str and not value.isascii():
        raise Undecided  # the library counts the bytes of a string
    if kind not in (str, list, tuple, dict):
        raise Undecided
    return len(value)


def _to_int(value) -> int:
    if type(value) is float and -9.2e18 < value < 9.2e18:
        return int(value)
    return _int(value)


def _to_double(value) -> float:
    if type(value) is float:
        return value
    if type(value) is int and -(2**53) <= value <= 2**53:
        return float(value)
    raise Undecided


def _to_string(value) -> str:
    return value if type(value) is str else str(_int(value))


def _elements(elements) -> list | tuple:
    if type(elements) is not list and type(elements) is not tuple:
        raise Undecided  # a map's keys come in the library's order
    return elements


# The list macros go element by element, in order, and stop where the library stops.
def _until(elements, body, stop: bool) -> bool:
    """``stop`` at the first element whose body is ``stop``, else ``not stop``; a body that is not
    a bool on the way is the library's to answer."""
    for element in _elements(elements):
        value = body(element)
        if value is stop:
            return stop
        if value is not (not stop):
            raise Undecided
    return not stop


def _exists(elements, body):
    return _until(elements, body, True)


def _all(elements, body):
    return _until(elements, body, False)


def _filter(elements, body):
    kept = []
    for element in _elements(elements):
        value = body(element)
        if type(value) is not bool:
            raise Undecided
        if value:
            kept.append(element)
    return kept


def _exists_one(elements, body):
    return len(_filter(elements, body)) == 1


def _map(elements, body):
    return [body(element) for element in _elements(elements)]


_BINARY = {
    "==": _compare(operator.eq, _EQUALITY), "!=": _compare(operator.ne, _EQUALITY),
    "<": _compare(operator.lt, _ORDERED), "<=": _compare(operator.le, _ORDERED),
    ">": _compare(operator.gt, _ORDERED), ">=": _compare(operator.ge, _ORDERED),
    "+": _add, "-": _sub, "*": _mul, "/": _div, "%": _mod, "in": _in,
}
_MACROS = {"exists": _exists, "all": _all, "exists_one": _exists_one, "filter": _filter, "map": _map}
_CONVERSIONS = {"int": _to_int, "double": _to_double, "string": _to_string}

# The templates: {v} and {w} stand for temporaries, {c} for a constant.
_COMPARISONS = {"==": "{v} == {c}", "!=": "{v} != {c}", "<": "{v} < {c}", "<=": "{v} <= {c}",
                ">": "{v} > {c}", ">=": "{v} >= {c}"}
_FLOAT_ARITHMETIC = {"+": "{v} + {c}", "-": "{v} - {c}", "*": "{v} * {c}", "/": "{v} / {c}"}
# What a value must be for Python to compare it with a constant of each type as the library does.
_COMPARABLE = {
    str: "type({v}) is _str", float: "type({v}) is _float", int: "type({v}) is _int and _MIN <= {v} <= _MAX",
    dt.timedelta: "type({v}) is _timedelta", dt.datetime: "type({v}) is _datetime and {v}.utcoffset() is not None",
}
_EQUATABLE = {bool: "type({v}) is _bool", _NONE: "{v} is None"}
_STRING_METHODS = {"startsWith": "{v}.startswith({w})", "endsWith": "{v}.endswith({w})", "contains": "{w} in {v}"}
# The library reads a timestamp's fields in its own offset: Python reads those of UTC ones only.
_TIMESTAMP_METHODS = {
    "getFullYear": "{v}.year", "getMonth": "{v}.month - 1", "getDate": "{v}.day", "getDayOfMonth": "{v}.day - 1",
    "getDayOfYear": "{v}.timetuple().tm_yday - 1", "getDayOfWeek": "({v}.weekday() + 1) % 7",
    "getHours": "{v}.hour", "getMinutes": "{v}.minute", "getSeconds": "{v}.second",
    "getMilliseconds": "{v}.microsecond // 1000",
}
_UTC_TIMESTAMP = "type({v}) is _datetime and ({v}.tzinfo is _UTC or {v}.utcoffset() == _ZERO)"
_NOT_CONSTANT = object()


def _checked(check: str, value: str, operand: str) -> str:
    """``check`` on ``operand``, assigned to the temporary ``value`` where it is first read."""
    return check.replace("{v}", f"({value} := {operand})", 1).replace("{v}", value)


class _Generator:
    """Python source for a parsed expression, compiled into one function of the variables.

    Each construct is written inline with the type checks that make Python's answer the
    library's (else ``_undecided()``); the rarer ones call the functions above. Nothing of the
    expression's own text reaches the source: variables, keys and literals are passed in as
    constants, so the source is made of the templates here and the generator's own names."""

    def __init__(self):
        self.namespace: dict[str, Any] = {
            "_undecided": _undecided, "_str": str, "_int": int, "_float": float, "_bool": bool, "_list": list,
            "_datetime": dt.datetime, "_timedelta": dt.timedelta, "_UTC": dt.UTC, "_ZERO": _ZERO,
            "_MIN": INT_MIN, "_MAX": INT_MAX, "_neg": _neg, "_index": _index, "_has": _has, "_size": _size,
        }
        self.names = 0

    def function(self, node: tuple) -> Fast:
        source = f"lambda env: {self.source(node, {})}"
        return eval(compile(source, "<cel>", "eval"), self.namespace)  # noqa: S307 - our own templates only

    def temporary(self) -> str:
        self.names += 1
        return f"_v{self.names}"

    def constant(self, value: Any) -> str:
        self.names += 1
        self.namespace[f"_c{self.names}"] = value
        return f"_c{self.names}"

    def source(self, node: tuple, scope: dict[str, str]) -> str:
        """``scope`` maps the variables of the enclosing macros to their Python parameters."""
        kind = node[0]
        if kind == "lit":
            return self.constant(node[1])
        if kind == "name":
            return scope.get(node[1]) or f"env[{self.constant(node[1])}]"
        if kind == "field":
            return f"{self.source(node[1], scope)}[{self.constant(node[2])}]"
        if kind == "list":
            return "[" + "".join(f"{self.source(element, scope)}, " for element in node[1]) + "]"
        if kind == "!":
            v = self.temporary()
            return f"(not {v} if type({v} := {self.source(node[1], scope)}) is _bool else _undecided())"
        if kind == "neg":
            return f"_neg({self.source(node[1], scope)})"
        if kind == "?":
            test, then, otherwise = (self.source(part, scope) for part in node[1:])
            v = self.temporary()
            return f"({then} if ({v} := {test}) is True else ({otherwise} if {v} is False else _undecided()))"
        if kind in ("&&", "||"):
            return self.logical(kind, self.source(node[1], scope), self.source(node[2], scope))
        if kind in _BINARY:
            return self.binary(kind, node[1], node[2], scope)
        if kind == "index":
            return f"_index({self.source(node[1], scope)}, {self.source(node[2], scope)})"
        if kind == "global":
            return self.call(node[1], node[2], scope)
        if kind == "call":
            return self.method(node[1], node[2], scope)
        raise _Refused(kind)

    def logical(self, op: str, left: str, right: str) -> str:
        # The library gives false && <error> = false and <error> && false too: decide from a
        # boolean left operand only, and leave anything else to the library.
        v, w = self.temporary(), self.temporary()
        right = f"({w} if type({w} := {right}) is _bool else _undecided())"
        if op == "&&":
            return f"({right} if ({v} := {left}) is True else (False if {v} is False else _undecided()))"
        return f"(True if ({v} := {left}) is True else ({right} if {v} is False else _undecided()))"

    def binary(self, op: str, left_node: tuple, right_node: tuple, scope: dict[str, str]) -> str:
        left, v = self.source(left_node, scope), self.temporary()
        literal = self.literal(right_node)
        kind = type(literal)
        template, check = None, None
        if op in _COMPARISONS and not (kind is int and literal > INT_MAX):
            template = _COMPARISONS[op]
            check = _COMPARABLE.get(kind) or (_EQUATABLE.get(kind) if op in ("==", "!=") else None)
        elif op in _FLOAT_ARITHMETIC and kind is float and literal != 0:
            template, check = _FLOAT_ARITHMETIC[op], _COMPARABLE[float]
        if check is not None:
            return f"({template.format(v=v, c=self.constant(literal))} if {_checked(check, v, left)} else _undecided())"
        if op == "in" and right_node[0] == "list" and all(
            element[0] == "lit" and type(element[1]) is str for element in right_node[1]
        ):
            strings = self.constant(frozenset(element[1] for element in right_node[1]))
            return f"({v} in {strings} if type({v} := {left}) is _str else _undecided())"
        return f"{self.constant(_BINARY[op])}({left}, {self.source(right_node, scope)})"

    def literal(self, node: tuple) -> Any:
        if node[0] == "lit":
            return node[1]
        if node[0] == "global" and node[1] in ("duration", "timestamp") and len(node[2]) == 1:
            return _literal_of(node[1], node[2][0])
        return _NOT_CONSTANT

    def call(self, function: str, arguments: list[tuple], scope: dict[str, str]) -> str:
        if function in ("duration", "timestamp") and len(arguments) == 1:
            return self.constant(_literal_of(function, arguments[0]))
        if function == "has" and len(arguments) == 1 and arguments[0][0] == "field":
            operand, key = arguments[0][1:]
            return f"_has({self.source(operand, scope)}, {self.constant(key)})"
        if function == "size" and len(arguments) == 1:
            return self.size(self.source(arguments[0], scope))
        if function in _CONVERSIONS and len(arguments) == 1:
            return f"{self.constant(_CONVERSIONS[function])}({self.source(arguments[0], scope)})"
        raise _Refused(function)

    def size(self, operand: str) -> str:
        v = self.temporary()
        return f"(len({v}) if type({v} := {operand}) is _list else _size({v}))"

    def method(self, name: str, arguments: list[tuple], scope: dict[str, str]) -> str:
        receiver, v = self.source(arguments[0], scope), self.temporary()
        if name in _MACROS and len(arguments) == 3 and arguments[1][0] == "name":
            parameter = self.temporary()
            body = self.source(arguments[2], {**scope, arguments[1][1]: parameter})
            return f"{self.constant(_MACROS[name])}({receiver}, lambda {parameter}: {body})"
        if name == "size" and len(arguments) == 1:
            return self.size(receiver)
        if name in _TIMESTAMP_METHODS and len(arguments) == 1:
            return (f"({_TIMESTAMP_METHODS[name].format(v=v)} if {_checked(_UTC_TIMESTAMP, v, receiver)} "
                    f"else _undecided())")
        if name in _STRING_METHODS and len(arguments) == 2:
            w, argument = self.temporary(), self.source(arguments[1], scope)
            return (f"({_STRING_METHODS[name].format(v=v, w=w)} if type({v} := {receiver}) is _str "
                    f"and type({w} := {argument}) is _str else _undecided())")
        raise _Refused(name)


def _literal_of(function: str, node: tuple):
    """``duration('...')`` / ``timestamp('...')`` as the library reads it, when Python holds it exactly."""
    if node[0] != "lit" or type(node[1]) is not str:
        raise _Refused(function)
    source = f"{function}('{node[1]}')"
    try:
        value = cel.evaluate(source)
        exact = cel.evaluate(f"{source} == value", {"value": value})
    except Exception as exc:
        raise _Refused(source) from exc
    if exact is not True:
        raise _Refused(source)
    return value
