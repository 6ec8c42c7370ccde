"""The ``where=`` filter of a stream or history request (docs/reference/where.md): parse once,
then test every record with closures built at parse time.

``parse_where`` reads the text with a hand-written recursive descent over the characters (the
field syntax, ``fields."a b".c``, depends on where it stands, so there is no separate token
pass) and, as it goes, builds one closure per comparison and one per ``and`` / ``or`` / ``not``.
``Where.matches`` is the root closure itself: the gateway calls it once per record per filtered
connection, so a call does no parsing, no regex and no dispatch on the operator, only the
comparison itself and the attribute and dict lookups that reach the field.

Every refusal is an ``InvalidRequest`` whose message is ``where: <problem> at position <N>``
(N counts characters from 1) and whose details say the same for a program to point at.
"""

from __future__ import annotations

import operator
import re
import string
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, Protocol

from logstream.shared.errors import InvalidRequest
from logstream.shared.records import LEVELS, level_rank

__all__ = [
    "MAX_COMPARISONS",
    "MAX_DEPTH",
    "MAX_WHERE_CHARS",
    "RecordView",
    "Where",
    "parse_where",
]

# docs/reference/where.md#limits. A filter is typed by a person or built by a page; past these
# it is a program's output, and the bounds keep parsing and one record's test cheap (every
# record of a connection pays for every comparison) and the recursion far from Python's limit.
MAX_WHERE_CHARS = 1000
MAX_COMPARISONS = 64
MAX_DEPTH = 32


class RecordView(Protocol):
    """What ``Where.matches`` reads of a record: the stored record's filterable fields."""

    @property
    def level(self) -> str: ...
    @property
    def source(self) -> str | None: ...
    @property
    def message(self) -> str: ...
    @property
    def channel(self) -> str: ...
    @property
    def fields(self) -> dict[str, Any] | None: ...


_Test = Callable[[Any], bool]

_SPACE = frozenset(" \t\r\n")
_QUOTES = frozenset("'\"")
# ASCII only: ``str.isalnum`` would let other scripts' letters and digits into a bare word.
_KEY_CHARS = frozenset(string.ascii_letters + string.digits + "_-")
_WORD_CHARS = _KEY_CHARS | frozenset(".:/@+")
_ESCAPES = {"\\": "\\", "'": "'", '"': '"'}
# JSON's number syntax (RFC 8259 section 6): a bare word that is all of it is a number.
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
# Two-character operators first, so that ``<=`` is not read as ``<`` and a stray ``=``.
_OPERATORS = ("!=", "^=", "<=", ">=", "=", "~", "<", ">")
_OPERATOR_LIST = "=, !=, ~, ^=, <, <=, >, >=, in, not in"
_ORDER = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
# Words that join or negate comparisons: never a bare value, so that ``source = and`` says
# what is wrong instead of filtering on the text "and" (quote it for that).
_JOINERS = frozenset({"and", "or", "not", "in"})
_RECORD_FIELDS = ("level", "source", "message", "channel")
_FIELD_LIST = "level, source, message, channel, fields.<name>"
_LEVEL_LIST = ", ".join(LEVELS)
# Levels by every spelling a record or a filter may use (``logstream.shared.records`` stores
# them normalised; a lower-cased lookup catches any other view).
_LEVEL_NAME = {name: name for name in LEVELS} | {"warning": "warn"}
_LEVEL_RANK = {spelling: level_rank(name) for spelling, name in _LEVEL_NAME.items()}
# Only these are numbers: ``bool`` is a subclass of ``int`` in Python but not a number in JSON.
_NUMBER_TYPES = (int, float)
# A field the record does not have (or a path through something that is not an object).
_MISSING: Any = object()
# How much of an offending token an error quotes.
_SHOWN_CHARS = 30


class Where:
    """A parsed ``where=`` filter: ``matches(view)`` tests a record, ``text`` is what was given.

    Immutable; equal (and hashing the same) when the text is the same.
    """

    __slots__ = ("matches", "text")
    matches: Callable[[RecordView], bool]
    text: str

    def __init__(self, text: str, test: Callable[[RecordView], bool]) -> None:
        object.__setattr__(self, "text", text)
        # The root closure itself, not a method calling it: one call less per record.
        object.__setattr__(self, "matches", test)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("a Where is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("a Where is immutable")

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"Where({self.text!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Where) and other.text == self.text

    def __hash__(self) -> int:
        return hash((Where, self.text))


def parse_where(text: str) -> Where:
    """The filter ``text`` states, or ``InvalidRequest`` naming the first problem and where."""
    if len(text) > MAX_WHERE_CHARS:
        raise _invalid(f"the filter is longer than {MAX_WHERE_CHARS} characters", MAX_WHERE_CHARS)
    return Where(text, _Parser(text).parse())


def _invalid(problem: str, index: int) -> InvalidRequest:
    position = index + 1
    return InvalidRequest(
        f"where: {problem} at position {position}",
        details=[{"parameter": "where", "position": position, "problem": problem}],
    )


class _Literal:
    """A value as parsed: its kind, its Python value, the text as written, where it stands."""

    __slots__ = ("at", "kind", "text", "value", "written")

    def __init__(self, kind: str, value: Any, text: str, at: int, written: str) -> None:
        self.kind = kind  # "string", "number", "bool" or "null"
        self.value = value
        self.text = text  # a quoted string's content; any other value as written
        self.at = at
        self.written = written  # as written, quotes and all, for messages


class _Field:
    __slots__ = ("at", "get", "name", "shown")

    def __init__(self, name: str, shown: str, at: int, get: Callable[[Any], Any]) -> None:
        self.name = name  # "level", "source", "message", "channel" or "fields"
        self.shown = shown  # as written, for messages
        self.at = at
        self.get = get


class _Parser:
    """One pass over ``text``: each grammar rule is a method that reads its part from ``pos``
    (a 0-based index; ``_invalid`` makes it 1-based) and returns its closure.

    ``depth`` is how many ``(`` and ``not`` enclose the rule; ``after`` is the token before it
    (``and``, ``(``...), so that a problem can say what it expected after what.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.end = len(text)
        self.pos = 0
        self.comparisons = 0

    # -- the grammar -----------------------------------------------------------------------

    def parse(self) -> _Test:
        test = self.or_expr(0, None)
        self.skip()
        if self.pos < self.end:
            if self.text[self.pos] == ")":
                self.fail("')' without a matching '('")
            self.fail(f"expected 'and', 'or' or the end but found {self.found()}")
        return test

    def or_expr(self, depth: int, after: str | None) -> _Test:
        tests = [self.and_expr(depth, after)]
        while (word := self.keyword("or")) is not None:
            tests.append(self.and_expr(depth, word))
        return _any(tests)

    def and_expr(self, depth: int, after: str | None) -> _Test:
        tests = [self.not_expr(depth, after)]
        while (word := self.keyword("and")) is not None:
            tests.append(self.not_expr(depth, word))
        return _all(tests)

    def not_expr(self, depth: int, after: str | None) -> _Test:
        self.skip()
        at = self.pos
        word = self.keyword("not")
        if word is None:
            return self.primary(depth, after)
        self.deeper(depth, at)
        return _negated(self.not_expr(depth + 1, word))

    def primary(self, depth: int, after: str | None) -> _Test:
        self.skip()
        if self.at_char("("):
            opened = self.pos
            self.deeper(depth, opened)
            self.pos += 1
            test = self.or_expr(depth + 1, "(")
            self.skip()
            if self.at_char(")"):
                self.pos += 1
                return test
            if self.pos >= self.end:
                self.fail("unclosed '('", opened)
            self.fail(f"expected 'and', 'or' or ')' but found {self.found()}")
        return self.comparison(after)

    def comparison(self, after: str | None) -> _Test:
        field = self.field(after)
        self.comparisons += 1
        if self.comparisons > MAX_COMPARISONS:
            self.fail(f"more than {MAX_COMPARISONS} comparisons", field.at)
        self.skip()
        op_at = self.pos
        word = self.keyword("not", "in")
        if word is not None and word.lower() == "not":
            if self.keyword("in") is None:
                self.fail(f"expected 'in' after '{word}' but found {self.found()}")
            return _negated(self.membership(field))
        if word is not None:
            return self.membership(field)
        op = self.operator(field)
        if op in _ORDER and field.name in ("source", "message", "channel"):
            self.fail(f"'{op}' compares numbers, but {field.name} is text", op_at)
        value = self.value(op)
        if field.name == "level":
            return _level_test(op, self.level_value(op, value))
        if op in _ORDER:
            if value.kind != "number":
                self.fail(f"'{op}' needs a number but found {_quoted(value.written)}", value.at)
            return _ordered(field.get, _ORDER[op], value.value)
        if op == "~":
            needle = value.text.lower()
            get = field.get
            return lambda view: _contains(get(view), needle)
        if op == "^=":
            prefix = value.text
            get = field.get
            return lambda view: _starts(get(view), prefix)
        equal = _equality(field.get, [value])
        return _negated(equal) if op == "!=" else equal

    def membership(self, field: _Field) -> _Test:
        """``in ( value, ... )``, the ``in`` already read."""
        self.skip()
        if not self.at_char("("):
            self.fail(f"expected '(' after 'in' but found {self.found()}")
        opened = self.pos
        self.pos += 1
        values = [self.value("(")]
        while True:
            self.skip()
            if self.at_char(")"):
                self.pos += 1
                break
            if self.at_char(","):
                self.pos += 1
                values.append(self.value(","))
                continue
            if self.pos >= self.end:
                self.fail("unclosed '('", opened)
            self.fail(f"expected ',' or ')' but found {self.found()}")
        if field.name == "level":
            names = frozenset(self.level_value("in", value) for value in values)
            return lambda view: _level_name(view.level) in names
        return _equality(field.get, values)

    def field(self, after: str | None) -> _Field:
        self.skip()
        at = self.pos
        word = self.word()
        if not word or word.lower() in _JOINERS:
            self.fail(f"expected a comparison{_after(after)} but found {self.found()}")
        if word in _RECORD_FIELDS:
            self.pos += len(word)
            return _Field(word, word, at, operator.attrgetter(word))
        if word != "fields" and not word.startswith("fields."):
            self.fail(f"unknown field {_quoted(word)} ({_FIELD_LIST})")
        self.pos += len("fields")
        keys = []
        while self.at_char("."):
            self.pos += 1
            if self.pos < self.end and self.text[self.pos] in _QUOTES:
                keys.append(self.quoted())
                continue
            start = self.pos
            while self.pos < self.end and self.text[self.pos] in _KEY_CHARS:
                self.pos += 1
            if self.pos == start:
                shown = self.text[at:start]
                self.fail(f"expected a key after {_quoted(shown)} but found {self.found()}")
            keys.append(self.text[start : self.pos])
        if not keys:
            self.fail(f"expected '.<name>' after 'fields' but found {self.found()}")
        return _Field("fields", self.text[at : self.pos], at, _path(tuple(keys)))

    def operator(self, field: _Field) -> str:
        for op in _OPERATORS:
            if self.text.startswith(op, self.pos):
                self.pos += len(op)
                return op
        self.fail(
            f"expected an operator ({_OPERATOR_LIST}) after {_quoted(field.shown)}"
            f" but found {self.found()}"
        )

    def value(self, after: str) -> _Literal:
        self.skip()
        at = self.pos
        if at < self.end and self.text[at] in _QUOTES:
            content = self.quoted()
            return _Literal("string", content, content, at, self.text[at : self.pos])
        word = self.word()
        if not word or word.lower() in _JOINERS:
            self.fail(f"expected a value after '{after}' but found {self.found()}")
        self.pos += len(word)
        lowered = word.lower()
        if lowered == "true" or lowered == "false":
            return _Literal("bool", lowered == "true", word, at, word)
        if lowered == "null":
            return _Literal("null", None, word, at, word)
        if _NUMBER.fullmatch(word):
            number = float(word) if any(c in word for c in ".eE") else int(word)
            return _Literal("number", number, word, at, word)
        return _Literal("string", word, word, at, word)

    def level_value(self, op: str, value: _Literal) -> str:
        """The level ``value`` names (normalised): only a level name compares with ``level``."""
        if op in ("~", "^="):
            return value.text.lower()
        if value.kind == "string" or value.kind == "number":
            name = _LEVEL_NAME.get(value.text.lower())
            if name is not None:
                return name
        self.fail(f"unknown level {_quoted(value.written)} ({_LEVEL_LIST})", value.at)

    # -- characters ------------------------------------------------------------------------

    def skip(self) -> None:
        text, pos, end = self.text, self.pos, self.end
        while pos < end and text[pos] in _SPACE:
            pos += 1
        self.pos = pos

    def at_char(self, char: str) -> bool:
        return self.pos < self.end and self.text[self.pos] == char

    def word(self) -> str:
        """The bare word at the cursor (empty if none), not consumed."""
        text, end = self.text, self.pos
        while end < self.end and text[end] in _WORD_CHARS:
            end += 1
        return text[self.pos : end]

    def keyword(self, *names: str) -> str | None:
        """Consume the next word if it is one of ``names`` (any case); return it as written."""
        self.skip()
        word = self.word()
        if word.lower() in names:
            self.pos += len(word)
            return word
        return None

    def quoted(self) -> str:
        """The quoted string at the cursor, consumed, its escapes resolved."""
        text, opened = self.text, self.pos
        quote = text[opened]
        pos = opened + 1
        parts: list[str] = []
        while pos < self.end:
            char = text[pos]
            if char == quote:
                self.pos = pos + 1
                return "".join(parts)
            if char == "\\":
                escaped = text[pos + 1 : pos + 2]
                if not escaped:
                    break
                if escaped not in _ESCAPES:
                    self.fail(
                        f"unknown escape {_quoted(char + escaped)} in a string"
                        " (only \\\\, \\' and \\\")",
                        pos,
                    )
                parts.append(_ESCAPES[escaped])
                pos += 2
                continue
            parts.append(char)
            pos += 1
        self.fail("unterminated string", opened)

    def deeper(self, depth: int, at: int) -> None:
        if depth + 1 > MAX_DEPTH:
            self.fail(f"nested deeper than {MAX_DEPTH} levels of '(' and 'not'", at)

    # -- messages --------------------------------------------------------------------------

    def found(self) -> str:
        """What stands at the cursor, for 'expected X but found Y'."""
        self.skip()
        text, at = self.text, self.pos
        if at >= self.end:
            return "the end"
        char = text[at]
        if char in _QUOTES:
            close = text.find(char, at + 1)
            return _quoted(text[at : close + 1] if close != -1 else text[at:])
        word = self.word()
        if word:
            return _quoted(word)
        for op in _OPERATORS:
            if text.startswith(op, at):
                return _quoted(op)
        return _quoted(char)

    def fail(self, problem: str, at: int | None = None) -> NoReturn:
        raise _invalid(problem, self.pos if at is None else at)


def _after(word: str | None) -> str:
    return "" if word is None else f" after '{word}'"


def _quoted(text: str) -> str:
    if len(text) > _SHOWN_CHARS:
        text = text[: _SHOWN_CHARS - 1] + "…"
    return f"'{text}'" if text.isprintable() else repr(text)


# -- closures ----------------------------------------------------------------------------------
# Each returns a real bool, so that ``and`` / ``or`` chains of them do too.


def _any(tests: Sequence[_Test]) -> _Test:
    if len(tests) == 1:
        return tests[0]
    if len(tests) == 2:
        first, second = tests
        return lambda view: first(view) or second(view)
    chain = tuple(tests)

    def any_of(view: Any) -> bool:
        for test in chain:
            if test(view):
                return True
        return False

    return any_of


def _all(tests: Sequence[_Test]) -> _Test:
    if len(tests) == 1:
        return tests[0]
    if len(tests) == 2:
        first, second = tests
        return lambda view: first(view) and second(view)
    chain = tuple(tests)

    def all_of(view: Any) -> bool:
        for test in chain:
            if not test(view):
                return False
        return True

    return all_of


def _negated(test: _Test) -> _Test:
    return lambda view: not test(view)


def _path(keys: tuple[str, ...]) -> Callable[[Any], Any]:
    """The getter of ``fields.<keys>``: the value, or ``_MISSING`` when there is none."""
    if len(keys) == 1:
        (key,) = keys

        def one(view: Any) -> Any:
            fields = view.fields
            return fields.get(key, _MISSING) if type(fields) is dict else _MISSING

        return one

    def nested(view: Any) -> Any:
        found = view.fields
        for key in keys:
            if type(found) is not dict:
                return _MISSING
            found = found.get(key, _MISSING)
        return found

    return nested


def _equality(get: Callable[[Any], Any], values: Sequence[_Literal]) -> _Test:
    """``field = v`` for one value, ``field in (v, ...)`` for several: equal to any of them."""
    # Strings (quoted, bare, or a number's text as written) match a string field by set lookup.
    texts = frozenset(v.text for v in values if v.kind in ("string", "number"))
    numbers = tuple(v.value for v in values if v.kind == "number")
    booleans = tuple(v.value for v in values if v.kind == "bool")
    null = any(v.kind == "null" for v in values)
    if len(values) == 1 and not numbers:  # the common case, spelled out
        (only,) = values
        if only.kind == "string":
            wanted = only.value
            return lambda view: get(view) == wanted  # only a str equals a str
        if only.kind == "bool":
            flag = only.value
            return lambda view: get(view) is flag
        return lambda view: (found := get(view)) is None or found is _MISSING

    def equal(view: Any) -> bool:
        found = get(view)
        kind = type(found)
        if kind is str:
            return found in texts
        if kind is int or kind is float:
            return found in numbers  # 1 == 1.0, and no bool is left to equal 1
        if kind is bool:
            return found in booleans
        return null and (found is None or found is _MISSING)

    return equal


def _ordered(get: Callable[[Any], Any], compare: Callable[[Any, Any], bool], bound: Any) -> _Test:
    def ordered(view: Any) -> bool:
        found = get(view)
        kind = type(found)
        return (kind is int or kind is float) and compare(found, bound)

    return ordered


def _contains(found: Any, needle: str) -> bool:
    return type(found) is str and needle in found.lower()


def _starts(found: Any, prefix: str) -> bool:
    return type(found) is str and found.startswith(prefix)


def _level_name(level: str) -> str:
    name = _LEVEL_NAME.get(level)
    if name is None:
        lowered = level.lower()
        name = _LEVEL_NAME.get(lowered, lowered)
    return name


def _level_rank(level: str) -> int | None:
    rank = _LEVEL_RANK.get(level)
    return rank if rank is not None else _LEVEL_RANK.get(level.lower())


def _level_test(op: str, name: str) -> _Test:
    """A comparison on ``level``: by name, by rank, or as text, after normalising both sides."""
    if op == "=":
        return lambda view: _level_name(view.level) == name
    if op == "!=":
        return lambda view: _level_name(view.level) != name
    if op == "~":
        return lambda view: name in _level_name(view.level)
    if op == "^=":
        return lambda view: _level_name(view.level).startswith(name)
    compare, bound = _ORDER[op], _LEVEL_RANK[name]

    def ranked(view: Any) -> bool:
        rank = _level_rank(view.level)
        return rank is not None and compare(rank, bound)

    return ranked
