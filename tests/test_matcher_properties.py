"""Property-based tests of the answer matcher: it never credits an answer the model did not give.

Numbers are written here by the test's own speller (not the library's), in every form the
matcher promises to read: digits, words (hyphenated or not, with "and" after "hundred"), thousands
separators, leading-dot decimals, a U+2212 minus, a trailing ".0", with or without a unit or a
count noun on one side.
"""

from __future__ import annotations

from decimal import Decimal

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from cotlib.normalize import answers_match

FAST = settings(max_examples=150, deadline=None)

_ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
         "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
         "eighteen", "nineteen"]
_TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
UNITS = ["objects", "circles", "red squares", "kg", "cm", "items", "percent", "%"]
LEADS = ["{}", "{}.", "The answer is {}.", "**{}**", "Answer: {}"]


def _below_thousand(n: int, hyphen: bool, use_and: bool) -> list[str]:
    words: list[str] = []
    if n >= 100:
        words += [_ONES[n // 100], "hundred"]
        n %= 100
        if n and use_and:
            words.append("and")
    if n >= 20:
        tens, ones = divmod(n, 10)
        if ones:
            words += [f"{_TENS[tens]}-{_ONES[ones]}"] if hyphen else [_TENS[tens], _ONES[ones]]
        else:
            words.append(_TENS[tens])
    elif n or not words:
        words.append(_ONES[n])
    return words


def spell(n: int, hyphen: bool = True, use_and: bool = False) -> str:
    """English words for an integer with |n| < 10**9 ("minus two hundred and five")."""
    if n < 0:
        return "minus " + spell(-n, hyphen, use_and)
    if n == 0:
        return "zero"
    words: list[str] = []
    for scale, name in ((10**6, "million"), (1000, "thousand"), (1, "")):
        chunk, n = divmod(n, scale)
        if chunk:
            words += _below_thousand(chunk, hyphen, use_and) + ([name] if name else [])
    return " ".join(words)


def plain(value: Decimal) -> str:
    text = format(value.normalize(), "f") if value else "0"
    return text


def forms(value: Decimal) -> list[str]:
    """Every way this test writes ``value``."""
    digits = plain(value)
    out = [digits]
    integer = value == value.to_integral_value()
    if integer:
        out += [digits + ".0", digits + ".00"]
        if abs(value) < 10**9:
            out += [spell(int(value)), spell(int(value), hyphen=False),
                    spell(int(value), use_and=True)]
    if abs(value) >= 1000:
        whole, _, frac = digits.lstrip("-").partition(".")
        grouped = f"{int(whole):,}" + (f".{frac}" if frac else "")
        out.append(("-" if value < 0 else "") + grouped)
    if 0 < abs(value) < 1:
        out.append(digits.replace("0.", ".", 1))
    if value < 0:
        out += [f.replace("-", "\u2212", 1) for f in out if f.startswith("-")]
    return out


values = st.one_of(
    st.integers(-20, 120).map(Decimal),
    st.integers(-2_000_000, 2_000_000).map(Decimal),
    st.decimals(min_value=-10_000, max_value=10_000, places=2, allow_nan=False,
                allow_infinity=False),
    st.sampled_from(["0.25", "0.5", "-0.75", "0.05", "1000", "200", "205", "1001"]).map(Decimal),
).map(lambda d: d + 0)  # -0 -> 0


@st.composite
def written(draw, value: Decimal) -> str:
    return draw(st.sampled_from(LEADS)).format(draw(st.sampled_from(forms(value))))


@st.composite
def number_pair(draw, same: bool) -> tuple[str, str]:
    a = draw(values)
    if same:
        b = a
    else:
        b = draw(st.one_of(
            values,
            st.sampled_from([a * 10, a / 10, a * 100, a / 100, -a, a + 1, a - 1, a * 1000,
                             a / 1000, a + Decimal("0.01")]).map(lambda d: d + 0),
        ))
        assume(b != a)
    left, right = draw(written(a)), draw(written(b))
    side = draw(st.sampled_from(["none", "left", "right"]))
    unit = draw(st.sampled_from(UNITS))
    if side == "left":
        left = f"{left.rstrip('.').rstrip('*')} {unit}"
    elif side == "right":
        right = f"{right.rstrip('.').rstrip('*')} {unit}"
    return left, right


@FAST
@given(number_pair(same=False))
def test_different_numbers_never_match(pair):
    left, right = pair
    assert not answers_match(left, right), pair
    assert not answers_match(right, left), pair


@FAST
@given(number_pair(same=True))
def test_the_same_number_in_any_two_forms_matches(pair):
    left, right = pair
    assert answers_match(left, right), pair
    assert answers_match(right, left), pair


@FAST
@given(values, values, st.sampled_from(UNITS[:5]), st.sampled_from(UNITS[:5]))
def test_units_on_both_sides_must_agree(a, b, unit_a, unit_b):
    assume(unit_a != unit_b)
    assert not answers_match(f"{plain(a)} {unit_a}", f"{plain(b)} {unit_b}")


# -----------------------------------------------------------------------------
# multiple choice

OPTION_POOL = ["red", "blue", "green", "yellow", "purple", "orange", "circle", "square",
               "triangle", "yes", "no", "0", "1", "2", "3", "5", "12"]
LETTER_ONLY = ["{L}", "({l})", "{l})", "{L}.", "Option {L}", "option ({l})", "The answer is ({L})."]
LETTER_TEXT = ["({L}) {t}", "{L}. {t}", "{L}) {t}", "{L}: {t}", "{L} ({t})", "Option {L}: {t}"]
TEXT_ONLY = ["{t}", "The answer is {t}.", "**{t}**", "{T}."]


@st.composite
def question(draw):
    choices = draw(st.lists(st.sampled_from(OPTION_POOL), min_size=2, max_size=5, unique=True))
    gold = draw(st.integers(0, len(choices) - 1))
    return choices, gold


def say(template: str, index: int, text: str) -> str:
    letter = chr(ord("A") + index)
    return template.format(L=letter, l=letter.lower(), t=text, T=text.capitalize())


@FAST
@given(question(), st.sampled_from(LETTER_ONLY + LETTER_TEXT + TEXT_ONLY), st.booleans())
def test_letter_and_text_of_the_same_option_match(q, template, gold_as_letter):
    choices, gold = q
    pred = say(template, gold, choices[gold])
    letter = chr(ord("A") + gold)
    assert answers_match(pred, choices[gold], choices, letter), (pred, choices)
    assert answers_match(pred, letter if gold_as_letter else choices[gold], choices), pred


@FAST
@given(question(), st.integers(0, 4), st.sampled_from(LETTER_ONLY + LETTER_TEXT + TEXT_ONLY))
def test_another_option_never_matches(q, other, template):
    choices, gold = q
    other %= len(choices)
    assume(other != gold)
    pred = say(template, other, choices[other])
    assert not answers_match(pred, choices[gold], choices, chr(ord("A") + gold)), (pred, choices)


@FAST
@given(question(), st.integers(0, 4), st.sampled_from(LETTER_TEXT))
def test_a_letter_and_the_text_of_another_option_never_match(q, other, template):
    choices, gold = q
    other %= len(choices)
    assume(other != gold)
    for letter_of, text_of in ((gold, other), (other, gold)):
        letter = chr(ord("A") + letter_of)
        pred = template.format(L=letter, l=letter.lower(), t=choices[text_of])
        for standard in (gold, other):
            assert not answers_match(pred, choices[standard], choices,
                                     chr(ord("A") + standard)), (pred, choices, standard)


# -----------------------------------------------------------------------------
# negations and alternatives

NEGATIONS = ["not {}", "Not {}.", "It is not {}.", "The answer is not {}.", "definitely not {}",
             "It isn't {}.", "never {}", "{}? No.", "neither {} nor the other"]
JOINS = ["{a} or {b}", "{b} or {a}", "{a} and {b}", "{b} and {a}", "either {a} or {b}",
         "both {a} and {b}", "{a} or maybe {b}", "The answer is {a} or {b}."]


@st.composite
def candidates(draw):
    """A (standard answer, the model's way of writing it, another candidate, choices) tuple."""
    kind = draw(st.sampled_from(["number", "yesno", "colour", "option"]))
    if kind == "number":
        a = draw(values)
        b = draw(values)
        assume(a != b)
        return plain(a), draw(st.sampled_from(forms(a))), draw(st.sampled_from(forms(b))), None
    if kind == "yesno":
        gold = draw(st.sampled_from(["yes", "no"]))
        other = "no" if gold == "yes" else "yes"
        return gold, draw(st.sampled_from([gold, gold.capitalize()])), other, None
    colours = ["red", "blue", "green", "yellow"]
    gold, other = draw(st.lists(st.sampled_from(colours), min_size=2, max_size=2, unique=True))
    if kind == "colour":
        return gold, gold, other, None
    letter = chr(ord("A") + colours.index(gold))
    other_letter = chr(ord("A") + colours.index(other))
    way = draw(st.sampled_from([gold, letter, f"({letter})"]))
    other_way = draw(st.sampled_from([other, other_letter, f"({other_letter})"]))
    return gold, way, other_way, colours


@FAST
@given(candidates(), st.sampled_from(NEGATIONS))
def test_a_negated_answer_never_matches(c, template):
    gold, way, _, choices = c
    pred = template.format(way)
    assert not answers_match(pred, gold, choices), (pred, gold)


@FAST
@given(candidates(), st.sampled_from(JOINS))
def test_an_answer_joined_to_another_candidate_never_matches(c, template):
    gold, way, other, choices = c
    pred = template.format(a=way, b=other)
    assert not answers_match(pred, gold, choices), (pred, gold)
