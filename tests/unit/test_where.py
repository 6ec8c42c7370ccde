"""logstream.shared.where against docs/reference/where.md: every operator on every kind of field,
precedence, the limits, the exact position of each error, and a property test that compares the
parser with a deliberately simple evaluator of generated expression trees."""

from __future__ import annotations

import operator
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from logstream.shared.errors import InvalidRequest
from logstream.shared.where import (
    MAX_COMPARISONS,
    MAX_DEPTH,
    MAX_WHERE_CHARS,
    Where,
    parse_where,
)


def view(
    *,
    level: str = "info",
    source: str | None = "api",
    message: str = "Order 17 shipped",
    channel: str = "logs:etl:ws1:wf1",
    fields: dict[str, Any] | None = None,
) -> SimpleNamespace:
    return SimpleNamespace(
        level=level, source=source, message=message, channel=channel, fields=fields
    )


FIELDS = {
    "table": "orders",
    "rows": 1500,
    "ratio": 0.25,
    "code": "404",
    "status": 404,
    "ok": True,
    "failed": False,
    "gone": None,
    "tags": ["a", "b"],
    "user": {"name": "Ada", "id": 7, "home": {"city": "London"}},
    "my key": "spaced",
    "a.b": "dotted",
    "x-y": 3,
}
RECORD = view(level="warn", source="test-runner", fields=FIELDS)


def matches(text: str, record: SimpleNamespace = RECORD) -> bool:
    result = parse_where(text).matches(record)
    assert type(result) is bool
    return result


# -- each operator on each kind of field ----------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # strings: exact, case-sensitive
        ("fields.table = orders", True),
        ("fields.table = Orders", False),
        ("fields.table = 'orders'", True),
        ('fields.table = "orders"', True),
        ("fields.table != orders", False),
        ("fields.table != invoices", True),
        ("fields.table ~ RDE", True),
        ("fields.table ~ xyz", False),
        ("fields.table ^= ord", True),
        ("fields.table ^= Ord", False),
        ("fields.table ^= rders", False),
        # numbers: 1 = 1.0; ordering
        ("fields.rows = 1500", True),
        ("fields.rows = 1500.0", True),
        ("fields.rows = 1.5e3", True),
        ("fields.rows = '1500'", False),
        ("fields.rows != 1500", False),
        ("fields.rows > 1000", True),
        ("fields.rows >= 1500", True),
        ("fields.rows < 1500", False),
        ("fields.rows <= 1500", True),
        ("fields.ratio < 0.5", True),
        ("fields.ratio > -1", True),
        ("fields.rows ~ 15", False),  # ~ is for text
        ("fields.rows ^= 1", False),
        # a number literal equals the string as written
        ("fields.code = 404", True),
        ("fields.code = 404.0", False),
        ("fields.status = 404", True),
        ("fields.code > 400", False),  # ordering needs a number field
        ("fields.code ~ 40", True),  # a number after ~ is its text
        ("fields.code ^= 40", True),
        # booleans: never numbers
        ("fields.ok = true", True),
        ("fields.ok = TRUE", True),
        ("fields.ok = false", False),
        ("fields.ok = 1", False),
        ("fields.ok > 0", False),
        ("fields.ok = 'true'", False),
        ("fields.failed = false", True),
        ("fields.failed = 0", False),
        ("fields.failed != false", False),
        # null and missing
        ("fields.gone = null", True),
        ("fields.gone = NULL", True),
        ("fields.gone != null", False),
        ("fields.gone = ''", False),
        ("fields.gone ~ ''", False),
        ("fields.nothing = null", True),
        ("fields.nothing != null", False),
        ("fields.nothing = x", False),
        ("fields.nothing != x", True),
        ("fields.nothing ~ x", False),
        ("fields.nothing ^= ''", False),
        ("fields.nothing > 0", False),
        ("fields.nothing < 0", False),
        ("fields.nothing in (x, 1)", False),
        ("fields.nothing not in (x, 1)", True),
        ("fields.nothing in (x, null)", True),
        ("fields.nothing not in (x, null)", False),
        # a path through a non-object is missing
        ("fields.table.x = null", True),
        ("fields.table.x != orders", True),
        ("fields.tags.0 = a", False),
        ("fields.rows.x > 0", False),
        # lists and objects equal nothing
        ("fields.tags = a", False),
        ("fields.tags != a", True),
        ("fields.user = null", False),
        # nested and quoted keys
        ("fields.user.name = Ada", True),
        ("fields.user.home.city ^= Lon", True),
        ("fields.user.id >= 7", True),
        ("fields.user.missing.deeper = null", True),
        ("fields.'my key' = spaced", True),
        ('fields."my key" = spaced', True),
        ("fields.'a.b' = dotted", True),
        ("fields.a.b = dotted", False),
        ("fields.x-y = 3", True),
        ("fields.'user'.'name' = Ada", True),
        ('fields.user."home".city = London', True),
        # in / not in
        ("fields.table in (invoices, orders)", True),
        ("fields.table in (invoices)", False),
        ("fields.table not in (invoices, orders)", False),
        ("fields.table NOT IN (invoices)", True),
        ("fields.rows in (1, 1500.0)", True),
        ("fields.code in (403, 404)", True),
        ("fields.ok in (1, 'true', true)", True),
        ("fields.ok in (1, 'true')", False),
        # the record's own fields
        ("message ~ ORDER", True),
        ("message ~ 17", True),
        ("message = 'Order 17 shipped'", True),
        ("message ^= Order", True),
        ("message ^= order", False),
        ("channel = logs:etl:ws1:wf1", True),
        ("channel ^= logs:etl:", True),
        ("channel in (logs:a:b, logs:etl:ws1:wf1)", True),
        ("source = test-runner", True),
        ("source ^= test", True),
        ("source != null", True),
        ("source = null", False),
    ],
)
def test_each_operator_on_each_kind_of_field(text, expected):
    assert matches(text) is expected


def test_a_record_without_fields_or_source_has_every_such_field_missing():
    bare = view(source=None, fields=None)
    assert matches("source = null", bare)
    assert matches("source != x", bare)
    assert not matches("source ~ ''", bare)
    assert not matches("source ^= ''", bare)
    assert matches("fields.a = null", bare)
    assert matches("fields.a.b not in (1)", bare)
    assert not matches("fields.a < 1", bare)
    assert matches("not fields.a = 1", bare)


def test_non_ascii_and_escapes_in_quoted_strings():
    record = view(fields={"ü ñ": "naïve", "q": 'it\'s "quoted" \\ here'})
    assert matches("fields.'ü ñ' = 'naïve'", record)
    # a bare word is ASCII letters, digits and _.:/@+-: the rest needs quotes
    assert refusal("fields.'ü ñ' ~ NAÏVE") == (18, "expected 'and', 'or' or the end but found 'Ï'")
    assert matches("fields.'ü ñ' ~ 'NAÏVE'", record)
    assert matches(r"""fields.q = 'it\'s "quoted" \\ here'""", record)
    assert matches(r'''fields.q = "it's \"quoted\" \\ here"''', record)


# -- levels --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("level", "text", "expected"),
    [
        ("warn", "level >= warn", True),
        ("warn", "level > warn", False),
        ("error", "level > warning", True),
        ("info", "level >= WARN", False),
        ("trace", "level < debug", True),
        ("fatal", "level <= error", False),
        ("fatal", "level >= fatal", True),
        ("warn", "level = warning", True),
        ("warn", "level = Warn", True),
        ("warn", "level = 'warn'", True),
        ("warn", "level != warn", False),
        ("info", "level != warn", True),
        ("warn", "level in (error, Warning)", True),
        ("debug", "level not in (error, warning)", True),
        ("warn", "level ~ AR", True),
        ("warn", "level ^= w", True),
        ("warn", "level ^= W", True),  # level values are compared lower case
        # a view whose level is not normalised is normalised before comparing
        ("WARNING", "level = warn", True),
        ("Warning", "level >= warn", True),
        ("Error", "level in (error)", True),
        ("bogus", "level >= trace", False),
        ("bogus", "level < fatal", False),
        ("bogus", "level != trace", True),
    ],
)
def test_levels_compare_by_rank_and_by_normalised_name(level, text, expected):
    assert matches(text, view(level=level)) is expected


def test_level_ordering_follows_the_record_levels():
    ordered = ["trace", "debug", "info", "warn", "error", "fatal"]
    for low, bound in enumerate(ordered):
        where = parse_where(f"level >= {bound}")
        assert [where.matches(view(level=name)) for name in ordered] == [
            rank >= low for rank in range(len(ordered))
        ]


# -- combining -----------------------------------------------------------------------------


def flags(a: bool, b: bool, c: bool) -> SimpleNamespace:
    return view(fields={"a": a, "b": b, "c": c})


@pytest.mark.parametrize("bits", range(8))
def test_and_binds_tighter_than_or_and_not_tighter_than_and(bits):
    a, b, c = bool(bits & 4), bool(bits & 2), bool(bits & 1)
    record = flags(a, b, c)
    assert matches("fields.a = true or fields.b = true and fields.c = true", record) is (
        a or (b and c)
    )
    assert matches("fields.a = true and fields.b = true or fields.c = true", record) is (
        (a and b) or c
    )
    assert matches("(fields.a = true or fields.b = true) and fields.c = true", record) is (
        (a or b) and c
    )
    assert matches("not fields.a = true and fields.b = true", record) is ((not a) and b)
    assert matches("not (fields.a = true and fields.b = true)", record) is (not (a and b))
    assert matches("not not fields.a = true", record) is a
    assert matches("NOT fields.a = true OR fields.b = TRUE", record) is ((not a) or b)


def test_the_example_of_the_reference():
    text = "level >= warn and (fields.table = orders or fields.rows > 1000) and not source ^= test"
    assert not matches(text)  # source "test-runner"
    assert matches(text, view(level="error", source="api", fields=FIELDS))
    assert not matches(text, view(level="info", source="api", fields=FIELDS))
    assert matches(text, view(level="fatal", source=None, fields={"rows": 1001}))


@pytest.mark.parametrize(
    "text",
    [
        "level>=warn",
        "  level >= warn  ",
        "\tlevel\n>=\r\nwarn",
        "(level>=warn)and(source=test-runner)",
        "not(level<warn)",
        "fields.table in(orders)",
        "fields.table IN ( orders , x )",
        "level >= warn AnD source ^= test",
        "fields.ok=True",
    ],
)
def test_spacing_is_free_between_tokens_and_keywords_take_any_case(text):
    assert matches(text)


def test_a_where_keeps_its_text_is_immutable_and_hashable():
    text = "level >= warn and fields.rows > 1000"
    where = parse_where(text)
    assert str(where) == where.text == text
    assert repr(where) == f"Where({text!r})"
    assert where == parse_where(text) and hash(where) == hash(parse_where(text))
    assert where != parse_where("level >= warn")
    assert len({where, parse_where(text)}) == 1
    assert isinstance(where, Where)
    with pytest.raises(AttributeError):
        where.text = "level = info"
    with pytest.raises(AttributeError):
        where.matches = lambda view: True


# -- errors --------------------------------------------------------------------------------


def refusal(text: str) -> tuple[int, str]:
    with pytest.raises(InvalidRequest) as caught:
        parse_where(text)
    error = caught.value
    (detail,) = error.details
    assert detail["parameter"] == "where"
    assert error.message == f"where: {detail['problem']} at position {detail['position']}"
    assert error.to_body()["error"] == "invalid_request"
    return detail["position"], detail["problem"]


NESTED_TOO_DEEP = "(" * MAX_DEPTH + "not level = info" + ")" * MAX_DEPTH
MANY = " or ".join(["level=info"] * MAX_COMPARISONS)


@pytest.mark.parametrize(
    ("text", "position", "problem"),
    [
        ("", 1, "expected a comparison but found the end"),
        ("   ", 4, "expected a comparison but found the end"),
        ("level >=", 9, "expected a value after '>=' but found the end"),
        ("level = info and", 17, "expected a comparison after 'and' but found the end"),
        ("level = info OR ", 17, "expected a comparison after 'OR' but found the end"),
        ("not", 4, "expected a comparison after 'not' but found the end"),
        (
            "lvl = info",
            1,
            "unknown field 'lvl' (level, source, message, channel, fields.<name>)",
        ),
        (
            "level = info and Level = warn",
            18,
            "unknown field 'Level' (level, source, message, channel, fields.<name>)",
        ),
        ("(level = info", 1, "unclosed '('"),
        ("level = info and ((source = a) or x = 1", 35, "unknown field 'x' "),
        ("(level = info or (source = a)", 1, "unclosed '('"),
        ("fields.a in (1, 2", 13, "unclosed '('"),
        ("message = 'abc", 11, "unterminated string"),
        ('fields."abc = 1', 8, "unterminated string"),
        ("message = 'abc\\", 11, "unterminated string"),
        ("fields.rows < 'abc'", 15, "'<' needs a number but found ''abc''"),
        ("fields.rows < abc", 15, "'<' needs a number but found 'abc'"),
        ("fields.rows >= true", 16, "'>=' needs a number but found 'true'"),
        ("message < 5", 9, "'<' compares numbers, but message is text"),
        ("level = info info", 14, "expected 'and', 'or' or the end but found 'info'"),
        ("level = info)", 13, "')' without a matching '('"),
        ("(level = info info)", 15, "expected 'and', 'or' or ')' but found 'info'"),
        (
            "level >= wrn",
            10,
            "unknown level 'wrn' (trace, debug, info, warn, error, fatal)",
        ),
        ("level = 3", 9, "unknown level '3' (trace, debug, info, warn, error, fatal)"),
        (
            "level in (info, null)",
            17,
            "unknown level 'null' (trace, debug, info, warn, error, fatal)",
        ),
        (
            "level",
            6,
            "expected an operator (=, !=, ~, ^=, <, <=, >, >=, in, not in) after 'level' but found the end",
        ),
        ("fields.a == 1", 11, "expected a value after '=' but found '='"),
        ("fields.a = and", 12, "expected a value after '=' but found 'and'"),
        ("fields.a not (1)", 14, "expected 'in' after 'not' but found '('"),
        ("fields.a in 1", 13, "expected '(' after 'in' but found '1'"),
        ("fields.a in ()", 14, "expected a value after '(' but found ')'"),
        ("fields.a in (1,)", 16, "expected a value after ',' but found ')'"),
        ("fields.a in (1 2)", 16, "expected ',' or ')' but found '2'"),
        ("fields = 1", 8, "expected '.<name>' after 'fields' but found '='"),
        ("fields.a..b = 1", 10, "expected a key after 'fields.a.' but found '.b'"),
        (
            "fields.a:b = 1",
            9,
            "expected an operator (=, !=, ~, ^=, <, <=, >, >=, in, not in) after 'fields.a' but found ':b'",
        ),
        ("and level = info", 1, "expected a comparison but found 'and'"),
        ("level = info & source = a", 14, "expected 'and', 'or' or the end but found '&'"),
        ("message = 'a\\nb'", 13, "unknown escape '\\n' in a string (only \\\\, \\' and \\\")"),
        ("()", 2, "expected a comparison after '(' but found ')'"),
        ("a" * (MAX_WHERE_CHARS + 1), 1001, "the filter is longer than 1000 characters"),
        (MANY + " or level = warn", len(MANY) + 5, "more than 64 comparisons"),
        (
            "(" * (MAX_DEPTH + 1) + "level = info" + ")" * (MAX_DEPTH + 1),
            33,
            "nested deeper than 32 levels of '(' and 'not'",
        ),
        (NESTED_TOO_DEEP, MAX_DEPTH + 1, "nested deeper than 32 levels of '(' and 'not'"),
        (
            "not " * (MAX_DEPTH + 1) + "level = info",
            4 * MAX_DEPTH + 1,
            "nested deeper than 32 levels of '(' and 'not'",
        ),
    ],
)
def test_each_bad_expression_names_its_problem_and_position(text, position, problem):
    found_position, found_problem = refusal(text)
    assert (found_position, found_problem[: len(problem)]) == (position, problem)


def test_the_limits_themselves_are_allowed():
    at_limit = "fields.m = '" + "x" * (MAX_WHERE_CHARS - len("fields.m = ''")) + "'"
    assert len(at_limit) == MAX_WHERE_CHARS
    assert not matches(at_limit)
    assert matches(MANY, view(level="info"))
    deepest = "(" * MAX_DEPTH + "level = warn" + ")" * MAX_DEPTH
    assert matches(deepest)
    nots = "not " * MAX_DEPTH + "level = warn"
    assert matches(nots)
    mixed = "not (" * (MAX_DEPTH // 2) + "level = warn" + ")" * (MAX_DEPTH // 2)
    assert matches(mixed)


def test_long_tokens_are_cut_short_in_a_problem():
    position, problem = refusal("level = info " + "x" * 200)
    assert position == 14
    assert problem == "expected 'and', 'or' or the end but found '" + "x" * 29 + "…'"


def test_a_control_character_is_shown_escaped():
    assert refusal("level = info \x00") == (
        14,
        "expected 'and', 'or' or the end but found '\\x00'",
    )


# -- property: the parser agrees with a simple evaluator of generated trees ---------------------
#
# The trees below are built by the test and rendered to text by the test; the reference evaluator
# reads the tree and the record dict directly, following docs/reference/where.md sentence by
# sentence, and shares nothing with the parser.


@dataclass(frozen=True)
class Lit:
    kind: str  # string, number, bool, null
    value: Any
    written: str  # as it appears in the expression

    @property
    def text(self) -> str:
        """A quoted string's content; anything else as written."""
        return self.value if self.kind == "string" and self.written[:1] in "'\"" else self.written


@dataclass(frozen=True)
class Cmp:
    field: str | tuple[str, ...]  # a record field's name, or the keys of a fields.<path>
    op: str
    values: tuple[Lit, ...]  # one value, or the list of in / not in


@dataclass(frozen=True)
class Not:
    inner: Any


@dataclass(frozen=True)
class Both:  # and
    parts: tuple[Any, ...]


@dataclass(frozen=True)
class Either:  # or
    parts: tuple[Any, ...]


MISSING = object()
LEVEL_ORDER = ["trace", "debug", "info", "warn", "error", "fatal"]
ORDER = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
KEYS = ["a", "b", "x-y", "k k", "ü", "a.b"]
# Small pools, so that a generated value and a generated record often meet: case variants,
# numbers as text, keywords as text, characters that need escapes.
STRINGS = ["", "a", "A", "aB", "404", "1.5", "1e3", "it's", 'say "hi"', "b\\s", "ü", "Ü"]
STRINGS += ["null", "TRUE", "and", "logs:etl"]
RECORD_STRINGS = [*STRINGS, "Order 17 Shipped", "Größe ÜBER", "a:b/c@d+e-f_g.h", "x 'y' \\z"]
NUMBERS = [(0, "0"), (1, "1"), (1.0, "1.0"), (-3, "-3"), (404, "404"), (1.5, "1.5")]
NUMBERS += [(1000.0, "1e3"), (-0.5, "-0.5")]
LEVEL_SPELLINGS = ["trace", "debug", "info", "INFO", "warn", "warning", "Warning", "error", "fatal"]
BARE = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.:/@+-")
WORDS = {"and", "or", "not", "in", "true", "false", "null"}


def normal_level(level: str) -> str:
    level = level.lower()
    return "warn" if level == "warning" else level


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def lookup(record: dict[str, Any], field: str | tuple[str, ...]) -> Any:
    if isinstance(field, str):
        return record[field]  # a None source is null, which = null matches like missing
    found: Any = record["fields"]
    for key in field:
        if not isinstance(found, dict) or key not in found:
            return MISSING
        found = found[key]
    return found


def equal(found: Any, lit: Lit) -> bool:
    if lit.kind == "null":
        return found is None or found is MISSING
    if lit.kind == "bool":
        return isinstance(found, bool) and found == lit.value
    if lit.kind == "number":
        return (is_number(found) and found == lit.value) or (
            isinstance(found, str) and found == lit.written
        )
    return isinstance(found, str) and found == lit.value


def reference(node: Any, record: dict[str, Any]) -> bool:
    if isinstance(node, Not):
        return not reference(node.inner, record)
    if isinstance(node, Both):
        return all(reference(part, record) for part in node.parts)
    if isinstance(node, Either):
        return any(reference(part, record) for part in node.parts)
    op, values = node.op, node.values
    if node.field == "level":
        level = normal_level(record["level"])
        if op == "~":
            return values[0].text.lower() in level
        if op == "^=":
            return level.startswith(values[0].text.lower())
        names = [normal_level(lit.text) for lit in values]
        if op in ORDER:
            return ORDER[op](LEVEL_ORDER.index(level), LEVEL_ORDER.index(names[0]))
        inside = level in names
        return not inside if op in ("!=", "not in") else inside
    found = lookup(record, node.field)
    if op == "~":
        return isinstance(found, str) and values[0].text.lower() in found.lower()
    if op == "^=":
        return isinstance(found, str) and found.startswith(values[0].text)
    if op in ORDER:
        return is_number(found) and ORDER[op](found, values[0].value)
    inside = any(equal(found, lit) for lit in values)
    return not inside if op in ("!=", "not in") else inside


# Rendering: each choice (quotes, spacing, keyword case, extra parentheses) is drawn.


def bare_ok(text: str, *, as_text: bool) -> bool:
    """Can ``text`` be written without quotes and still mean that string?"""
    if not text or not set(text) <= BARE or text.lower() in {"and", "or", "not", "in"}:
        return False
    # after ~ and ^= every bare word is its text; elsewhere numbers and keywords are not strings
    return as_text or (text.lower() not in WORDS and not _is_json_number(text))


def _is_json_number(text: str) -> bool:
    import re

    return re.fullmatch(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?", text) is not None


def quote(draw, text: str) -> str:
    mark = draw(st.sampled_from(["'", '"']))
    escaped = text.replace("\\", "\\\\").replace(mark, "\\" + mark)
    return mark + escaped + mark


def keyword(draw, word: str) -> str:
    return draw(st.sampled_from([word, word.upper(), word.capitalize()]))


@st.composite
def string_lit(draw, near: Any, *, as_text: bool = False):
    """A string from the pool or, when ``near`` (the compared field's value in one of the
    records) is a string, that string as is, in another case, or a piece of it: values drawn
    on their own would seldom meet the records."""
    if isinstance(near, str) and draw(st.integers(0, 3)) > 0:
        start = draw(st.integers(0, len(near)))
        end = draw(st.integers(start, len(near)))
        case = draw(st.sampled_from([str, str.upper, str.lower, str.swapcase]))
        text = case(draw(st.sampled_from([near, near[:end], near[start:end]])))
    else:
        text = draw(st.sampled_from(STRINGS))
    if bare_ok(text, as_text=as_text) and draw(st.booleans()):
        return Lit("string", text, text)
    return Lit("string", text, quote(draw, text))


@st.composite
def number_lit(draw, near: Any):
    if is_number(near) and draw(st.booleans()):
        return Lit("number", near, repr(near))
    if isinstance(near, str) and _is_json_number(near) and draw(st.booleans()):
        return Lit("number", float(near), near)  # a number as written: equals that text
    value, written = draw(st.sampled_from(NUMBERS))
    return Lit("number", value, written)


@st.composite
def constant_lit(draw, near: Any):
    if isinstance(near, bool) and draw(st.booleans()):
        word = "true" if near else "false"
    else:
        word = draw(st.sampled_from(["true", "false", "null"]))
    written = keyword(draw, word)
    return Lit("null", None, written) if word == "null" else Lit("bool", word == "true", written)


@st.composite
def level_lit(draw):
    text = draw(st.sampled_from(LEVEL_SPELLINGS))
    if draw(st.booleans()):
        return Lit("string", text, text)
    return Lit("string", text, quote(draw, text))


record_field = st.sampled_from(["source", "message", "channel"])
# short paths of common keys, so that most comparisons reach a value
fields_path = st.sampled_from([1, 1, 1, 2, 2, 3]).flatmap(
    lambda length: st.tuples(*[st.sampled_from(["a", "a", "a", "b", "b", *KEYS])] * length)
)


@st.composite
def path_in(draw, record: dict[str, Any]):
    """A path to a value the record has (or, now and then, past it), else any path."""
    keys: list[str] = []
    found = record["fields"]
    while isinstance(found, dict) and found and (not keys or draw(st.booleans())):
        keys.append(draw(st.sampled_from(sorted(found))))
        found = found[keys[-1]]
    if keys and draw(st.integers(0, 4)) == 0:
        keys.append(draw(st.sampled_from(KEYS)))
    return tuple(keys) or draw(fields_path)


@st.composite
def comparison(draw, records: tuple[dict[str, Any], ...]):
    kind = draw(st.sampled_from(["level", "record", "fields", "fields"]))
    if kind == "level":
        op = draw(st.sampled_from(["=", "!=", "<", "<=", ">", ">=", "~", "^=", "in", "not in"]))
        if op in ("~", "^="):
            near = draw(st.sampled_from(LEVEL_SPELLINGS))
            return Cmp("level", op, (draw(string_lit(near, as_text=True)),))
        count = draw(st.integers(1, 3)) if op.endswith("in") else 1
        return Cmp("level", op, tuple(draw(level_lit()) for _ in range(count)))
    record = draw(st.sampled_from(records))
    field = draw(record_field) if kind == "record" else draw(path_in(record))
    near = lookup(record, field)
    ops = ["=", "!=", "~", "^=", "in", "not in"]
    if kind == "fields":
        ops += ["<", "<=", ">", ">="]
    op = draw(st.sampled_from(ops))
    if op in ORDER:
        return Cmp(field, op, (draw(number_lit(near)),))
    if op in ("~", "^="):
        text = st.one_of(
            *[string_lit(near, as_text=True)] * 3, number_lit(near), constant_lit(near)
        )
        return Cmp(field, op, (draw(text),))
    count = draw(st.integers(1, 3)) if op.endswith("in") else 1
    value = st.one_of(string_lit(near), number_lit(near), constant_lit(near))
    return Cmp(field, op, tuple(draw(value) for _ in range(count)))


def trees(records: tuple[dict[str, Any], ...]):
    return st.recursive(
        comparison(records),
        lambda inner: st.one_of(
            inner.map(Not),
            st.lists(inner, min_size=2, max_size=3).map(lambda parts: Both(tuple(parts))),
            st.lists(inner, min_size=2, max_size=3).map(lambda parts: Either(tuple(parts))),
        ),
        max_leaves=10,
    )


GAP = st.sampled_from(["", " ", "  ", "\t", "\n"])  # where tokens may touch
SPACE = st.sampled_from([" ", "  ", "\t", " \r\n "])  # between words


def field_text(draw, field: str | tuple[str, ...]) -> str:
    if isinstance(field, str):
        return field
    return "fields" + "".join(
        "." + (key if set(key) <= BARE - {".", ":", "/", "@", "+"} else quote(draw, key))
        for key in field
    )


STRENGTH = {Either: 1, Both: 2, Not: 3, Cmp: 4}


def render(draw, node: Any, weakest: int, state: dict[str, Any]) -> str:
    """``node`` as text, in parentheses when it binds weaker than ``weakest`` allows (or by
    chance); strength: or 1, and 2, not 3, a comparison 4. ``state``: the levels of '(' and
    'not' open here, the most seen, and every subtree with its text."""
    strength = STRENGTH[type(node)]
    parenthesised = strength < weakest or draw(st.integers(0, 9)) == 0
    opened = int(parenthesised) + int(isinstance(node, Not))
    state["depth"] += opened
    state["deepest"] = max(state["deepest"], state["depth"])
    if isinstance(node, Cmp):
        field = field_text(draw, node.field)
        if node.op.endswith("in"):
            op = " ".join(keyword(draw, word) for word in node.op.split())
            values = ("," + draw(GAP)).join(lit.written for lit in node.values)
            body = f"{field}{draw(SPACE)}{op}{draw(GAP)}({draw(GAP)}{values}{draw(GAP)})"
        else:
            body = f"{field}{draw(GAP)}{node.op}{draw(GAP)}{node.values[0].written}"
    elif isinstance(node, Not):
        body = f"{keyword(draw, 'not')}{draw(SPACE)}{render(draw, node.inner, 3, state)}"
    else:
        word = "and" if isinstance(node, Both) else "or"
        body = render(draw, node.parts[0], strength + 1, state)
        for part in node.parts[1:]:
            joined = f"{draw(SPACE)}{keyword(draw, word)}{draw(SPACE)}"
            body += joined + render(draw, part, strength + 1, state)
    state["depth"] -= opened
    text = f"({draw(GAP)}{body}{draw(GAP)})" if parenthesised else body
    state["subtrees"].append((node, text))
    return text


@st.composite
def expressions(draw, records: tuple[dict[str, Any], ...]):
    """A tree, its text, and each of its subtrees with its own text (a valid filter too)."""
    tree = draw(trees(records))
    state: dict[str, Any] = {"depth": 0, "deepest": 0, "subtrees": []}
    text = draw(GAP) + render(draw, tree, 0, state) + draw(GAP)
    # (a chain of nots is no leaf, so a tree may nest past the limit: those are not this test's)
    assume(state["deepest"] <= MAX_DEPTH and len(text) <= MAX_WHERE_CHARS)
    return tree, text, state["subtrees"]


leaf_values = st.one_of(
    st.sampled_from(RECORD_STRINGS),
    st.sampled_from([value for value, _ in NUMBERS] + [2.5, -1]),
    st.booleans(),
    st.none(),
    st.just(["a", 1]),
)


def objects(values):
    """An object that nearly always has the keys paths use most, so comparisons reach values."""
    return st.fixed_dictionaries(
        {"a": values, "b": values}, optional={key: values for key in KEYS[2:]}
    )


field_values = st.recursive(
    leaf_values, lambda inner: st.one_of(inner, inner, objects(inner)), max_leaves=6
)
records = st.fixed_dictionaries(
    {
        "level": st.sampled_from(LEVEL_SPELLINGS),
        "source": st.one_of(st.none(), st.sampled_from(RECORD_STRINGS)),
        "message": st.sampled_from(RECORD_STRINGS),
        "channel": st.sampled_from(["logs:etl", "logs:etl:ws1", "a"]),
        "fields": st.one_of(st.none(), objects(field_values), objects(field_values)),
    }
)


@settings(max_examples=500, deadline=None)
@given(data=st.data())
def test_the_parser_agrees_with_a_simple_evaluator_of_the_same_tree(data):
    record_list = data.draw(st.lists(records, min_size=1, max_size=4), label="records")
    tree, text, subtrees = data.draw(expressions(tuple(record_list)), label="expression")
    views = [SimpleNamespace(**record) for record in record_list]
    # The whole, then every part on its own: an and / or / not above a wrong comparison could
    # hide it from the whole's answer.
    for node, part in [(tree, text), *subtrees]:
        where = parse_where(part)
        for record, record_view in zip(record_list, views):
            assert where.matches(record_view) is reference(node, record), (part, record)
