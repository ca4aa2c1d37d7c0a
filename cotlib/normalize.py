"""One answer matcher, shared by the trace filter (notebook 03) and evaluation (notebook 07).

``answers_match(pred, gold, choices, answer_letter)`` says whether a model's answer gives the
standard answer. It forgives how an answer is written, never what it says:

============  =========================================  =========================================
what          counts as equal                            never equal
============  =========================================  =========================================
surface       case, punctuation around the answer,       —
              quotes, markdown bold, articles ("a",
              "an", "the"), lead-ins ("The answer is",
              "Answer:", "So,")
numbers       the same value in digits or in words:      different values: "25" vs ".25", "3"
              "three", "twenty-one", "two hundred and    vs "−3", "two hundred" vs "2"; a bound
              five", "1,000", ".25" = "0.25", "−3"       or an estimate: "more than 3", "at
              (U+2212) = "-3" = "minus three", "3.0"     least 3", "about 3", "3 or more"
units and     on one side only ("3 objects" = "3",       on both sides and different: "7 kg" vs
count nouns   "45%" = "45"), or on both sides when one   "7 m", "2 triangles" vs "2 circles"; no
              contains the other ("3 circles" = "3 red   conversion ("1 kg" vs "1000 g")
              circles"); singular = plural
yes / no      "Yes", "yes, because …", "No there are     "yes or no", "yes and no", "yes/no",
              not", "nope", "true" = "yes"               "not yes"
multiple      a letter in any dress ("B", "(b)", "b)",   a letter and a text of different options
choice        "Option B", "B. blue", "B (blue)") = the   ("(A) blue" when A is red: "(A)" is a
              option's text ("A blue": "A" is the        letter); two options ("red or blue",
              article)                                   "B or C")
negations,    —                                          "not green", "isn't 3", "no blue" vs
alternatives                                             "blue", "3 or 4", "red and blue"
sentences     one number in a sentence about a number    a sentence with a negation or an
              ("I count 3 in total."); the tail of "…    alternative ("It is red or it is
              is X" or "… = X" ("4 + 3 = 7"); a          blue"); two numbers; two options
              sentence naming exactly one option
============  =========================================  =========================================

``normalize_answer`` gives the canonical form the comparisons use (a number keeps its unit:
"3 red objects" -> ``'3 red objects'``, and ``answers_match`` compares numbers by value and
unit as in the table).

>>> normalize_answer("  The answer is Three. ")
'3'
>>> answers_match("(B)", "blue", choices=["red", "blue"])
True
>>> answers_match("(A) blue", "blue", choices=["red", "blue"])  # letter and text disagree
False
>>> answers_match("Yes, there are more circles.", "yes"), answers_match("yes or no", "yes")
(True, False)
>>> answers_match("7 kg", "7 m"), answers_match(".25", "25"), answers_match("−3", "3")
(False, False, False)
"""

from __future__ import annotations

import re
import string
import unicodedata
from dataclasses import dataclass
from decimal import Context, Decimal, InvalidOperation

# -----------------------------------------------------------------------------
# vocabularies

_ONES = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
         "eight": 8, "nine": 9}
_TEENS = {"ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
          "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19}
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70,
         "eighty": 80, "ninety": 90}
_SCALES = {"thousand": 1000, "million": 10**6, "billion": 10**9}

#: Number words below one hundred and their values (``"zero"`` … ``"ninety"``).
WORD_TO_NUMBER: dict[str, int] = {"zero": 0, **_ONES, **_TEENS, **_TENS}

YES = {"yes", "y", "yeah", "yep", "yup", "true", "correct", "affirmative"}
NO = {"no", "n", "nope", "nah", "false", "incorrect", "negative"}

ARTICLES = {"a", "an", "the"}

#: Words that turn an answer into a negation; a sentence with one of them only matches exactly.
NEGATIONS = {"not", "never", "neither", "nor", "cannot", "none", "nothing", "without", "except"}
#: Words that offer alternatives ("3 or 4"): an answer with one of them only matches exactly.
ALTERNATIVES = {"or", "either", "nor", "versus", "vs", "neither"}
_JOINS = {"or", "and", "nor", "versus", "vs", "but"}
#: Words before a number that make it a bound or an estimate ("more than 3", "about 3").
QUALIFIERS = {"than", "least", "most", "about", "around", "approximately", "roughly", "nearly",
              "almost", "over", "under", "above", "below", "up", "exceeds", "maximum",
              "minimum", "max", "min", "approx"}
#: Words after a number that are not a unit ("3 in total", "3 of them").
_FILLERS = {"in", "total", "of", "them", "all", "altogether", "overall", "here", "there",
            "exactly", "only", "is", "are", "image", "picture", "it", "this", "that"}

# Lead-in phrases removed from the front (longest first, repeated until none applies).
LEAD_INS = sorted(
    [
        "the answer is", "the final answer is", "final answer", "answer", "the answer",
        "my answer is", "the correct answer is", "the correct option is", "the option is",
        "the correct choice is", "the choice is", "so the answer is", "therefore the answer is",
        "so", "therefore", "thus", "hence", "it is", "it's", "this is", "that is",
        "there are", "there is", "there's", "i think", "i count", "i see", "we get",
        "the result is", "the total is", "in total", "total", "conclusion",
    ],
    key=len,
    reverse=True,
)

_PUNCT = string.punctuation + "“”‘’«»…–—"
# Leading junk: punctuation, except a bracket that opens a letter "(b)" and a sign or dot that
# starts a number ("-3", ".25").
_LEAD_JUNK = re.compile(r"^(?:[^\w(\[.\-]|[(\[](?!\s*[a-z]\s*[)\]])|[.\-](?!\.?\d))+")
_TRAIL_JUNK = _PUNCT.replace(")", "").replace("]", "") + " \t\n"
# A letter: "(b)", "[b]", "b.", "b)", "b:", "b" alone, "b (blue)"; after option/choice/letter
# also "option b, the blue bar".
_LETTER_RE = re.compile(
    r"^(?:[(\[]\s*(?P<a>[a-z])\s*[)\]]|(?P<b>[a-z])(?:\s*[.):](?![\w.])|(?=\s*$)|(?=\s+[(\[])))"
    r"(?P<tail>.*)$"
)
_PREFIXED_LETTER_RE = re.compile(
    r"^(?:option|choice|letter)\s*(?:[(\[]\s*(?P<a>[a-z])\s*[)\]]|(?P<b>[a-z])(?![\w']))"
    r"(?P<tail>.*)$"
)
_NUM_RE = re.compile(r"-?(?:\d+(?:\.\d+)?|\.\d+)")
_TOKEN_RE = re.compile(r"(?<![\w.])-?(?:\d+(?:\.\d+)?|\.\d+)|\d+(?:\.\d+)?|[^\W_]+")  # drops $, °
_THOUSANDS_RE = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")


# -----------------------------------------------------------------------------
# text helpers


def _clean(text: object) -> str:
    """Lower case, NFKC, U+2212 minus as '-', '%' as 'percent', no markdown, spaces collapsed."""
    if text is None:
        return ""
    s = unicodedata.normalize("NFKC", str(text)).lower()
    s = s.replace("\u2212", "-").replace("%", " percent ")
    s = s.replace("**", " ").replace("__", " ").replace("`", " ")
    return " ".join(s.split())


def _trim(s: str) -> str:
    """Strip spaces and punctuation from both ends, keeping '(b)', '-3' and '.25' intact."""
    s = _LEAD_JUNK.sub("", s.strip(), count=1)
    return s.rstrip(_TRAIL_JUNK)


def _strip_lead_ins(s: str) -> str:
    s = _trim(s)
    changed, passes = True, 0
    while changed and s and passes < 8:  # "So, the answer is: ..." needs three; bounded
        changed, passes = False, passes + 1
        for lead in LEAD_INS:
            if s == lead:
                return ""
            if s.startswith(lead) and not s[len(lead)].isalnum():
                s = _trim(s[len(lead):].lstrip(" :,="))
                changed = True
                break
    return s


def _tokens(s: str) -> list[str]:
    """Words and numbers: decimals and thousands separators stay inside numbers, a leading minus
    sign stays on a number, and other punctuation separates words ("top-left" -> top, left)."""
    return _TOKEN_RE.findall(_THOUSANDS_RE.sub("", s))


def _words(s: str) -> list[str]:
    tokens = _tokens(s)
    return [w for w in tokens if w not in ARTICLES] or tokens  # "a" alone stays "a"


def _fmt(value: Decimal) -> str:
    """'3.0' -> '3', '0.250' -> '0.25', '-0' -> '0', 1E+3 -> '1000'."""
    if value == 0:
        return "0"
    text = format(value, "f")  # exact: no rounding to the context's precision
    return text.rstrip("0").rstrip(".") if "." in text else text


def _singular(word: str) -> str:
    if len(word) > 3 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith(("ses", "xes", "zes", "ches", "shes")):
        return word[:-2]
    if len(word) > 2 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


# -----------------------------------------------------------------------------
# numbers


def _read_number(words: list[str], i: int) -> tuple[Decimal, int] | None:
    """The number that starts at ``words[i]`` and the index after it, else None.

    Digits ("3", "-2.5", ".25"), digits with a scale ("2 thousand"), words ("two hundred and
    five", "twenty one"), a sign word ("minus three"), and "no"/"none" before a noun (0).
    """
    n = len(words)
    if i >= n:
        return None
    sign, j = 1, i
    if words[j] in ("minus", "negative") and j + 1 < n:
        sign, j = -1, j + 1
    w = words[j]
    if _NUM_RE.fullmatch(w):
        try:
            value = Decimal(w)
        except InvalidOperation:  # pragma: no cover - the regex only passes valid decimals
            return None
        j += 1
        if j < n and (words[j] == "hundred" or words[j] in _SCALES):  # "2 thousand"
            value = value.scaleb(len(str(100 if words[j] == "hundred" else _SCALES[words[j]])) - 1,
                                 Context(prec=len(w) + 12))
            j += 1
        return (value.copy_negate() if sign < 0 else value), j
    if sign == 1 and w in ("none", "zero"):
        return Decimal(0), j + 1
    if sign == 1 and w == "no" and j + 1 < n and words[j + 1] not in _JOINS | NEGATIONS \
            and not _NUM_RE.fullmatch(words[j + 1]) and words[j + 1] not in WORD_TO_NUMBER:
        return Decimal(0), j + 1  # "no red objects" -> 0
    total, current, last, cap = 0, 0, None, None
    while j < n:
        w = words[j]
        if w in _ONES:
            if last in ("unit", "teen"):
                break
            current, last = current + _ONES[w], "unit"
        elif w in _TEENS or w in _TENS:
            if last in ("unit", "teen", "tens"):
                break
            current += _TEENS.get(w, 0) + _TENS.get(w, 0)
            last = "teen" if w in _TEENS else "tens"
        elif w == "hundred":
            if current >= 100 or last == "hundred":
                break
            current, last = (current or 1) * 100, "hundred"
        elif w in _SCALES:
            scale = _SCALES[w]
            if cap is not None and scale >= cap:
                break
            total, current, cap, last = total + (current or 1) * scale, 0, scale, "scale"
        elif w == "and" and last in ("hundred", "scale") and j + 1 < n \
                and (words[j + 1] in _ONES or words[j + 1] in _TEENS or words[j + 1] in _TENS):
            last = "and"  # "two hundred and five"
        else:
            break
        j += 1
    if last is None:
        return None
    return Decimal(sign * (total + current)), j


def _scan(words: list[str]) -> list[tuple[int, int, Decimal]]:
    """Every number in ``words``: (start, end, value)."""
    found, i = [], 0
    while i < len(words):
        got = _read_number(words, i)
        if got is None:
            i += 1
            continue
        found.append((i, got[1], got[0]))
        i = got[1]
    return found


def _canonical_words(words: list[str]) -> list[str]:
    """``words`` with every number written as canonical digits ('twenty one' -> '21')."""
    out, i = [], 0
    for start, end, value in _scan(words):
        out += words[i:start]
        out.append(_fmt(value))
        i = end
    return out + words[i:]


# -----------------------------------------------------------------------------
# reading an answer

EMPTY, NUMBER, YESNO, OPTION, LETTER, TEXT, CONFLICT = (
    "empty", "number", "yesno", "option", "letter", "text", "conflict")


@dataclass(frozen=True)
class _Form:
    """An answer read: its kind, canonical text, and for numbers the value and unit words."""

    kind: str
    text: str
    value: Decimal | None = None
    unit: tuple[str, ...] = ()
    option: int | None = None
    base: _Form | None = None  # an OPTION's own form (a number, a yes/no, a text)

    @property
    def number(self) -> _Form | None:
        """The number form inside (itself, or an option's), else None."""
        if self.kind == NUMBER:
            return self
        return self.base if self.base is not None and self.base.kind == NUMBER else None


def _units_agree(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    """A unit on one side only is fine; on both sides, one must contain the other."""
    sa, sb = {_singular(w) for w in a}, {_singular(w) for w in b}
    return not sa or not sb or sa <= sb or sb <= sa


def _same(a: _Form, b: _Form) -> bool:
    if a.kind in (EMPTY, CONFLICT) or b.kind in (EMPTY, CONFLICT):
        return False
    if a.kind == OPTION and b.kind == OPTION:
        return a.option == b.option
    na, nb = a.number, b.number
    if na is not None and nb is not None:
        return na.value == nb.value and _units_agree(na.unit, nb.unit)
    if na is not None or nb is not None:
        return False
    return a.text == b.text


def _yes_no(s: str, words: list[str]) -> str | None:
    """'yes'/'no' when the answer is a yes/no word alone, or followed by punctuation ("No, …"),
    or "yes …"; None for "yes or no", "yes and no", "yes/no" and for "no red objects" (0)."""
    if not words or words[0] not in YES | NO or _joined_verdict(s, words):
        return None
    if len(words) == 1 or words[0] == "yes" or re.match(r"^\w+\s*[,.;:!]", s):
        return "yes" if words[0] in YES else "no"
    return None


def _joined_verdict(s: str, words: list[str]) -> bool:
    """A yes/no word joined to another candidate: "yes or no", "yes and no", "yes/no"."""
    if len(words) < 2:
        return False
    second, third = words[1], words[2] if len(words) > 2 else ""
    return (second in ALTERNATIVES or second in YES | NO or bool(re.match(r"^\w+\s*/", s))
            or (second in _JOINS and third in YES | NO | {"not", "maybe"}))


def _read_plain(s: str) -> _Form:
    """A form for text that is not a letter (yes/no, a number with its unit, or words)."""
    words = _words(s)
    if not words:
        return _Form(EMPTY, "")
    yn = _yes_no(s, words)
    if yn is not None:
        return _Form(YESNO, yn)
    got = _read_number(words, 0)
    if got is not None:
        value, end = got
        rest = words[end:]
        clean = not _scan(rest) and not set(rest) & (NEGATIONS | ALTERNATIVES | {"no"})
        if clean:
            unit = tuple(w for w in rest if w not in _FILLERS)
            return _Form(NUMBER, " ".join([_fmt(value), *unit]), value=value, unit=unit)
    return _Form(TEXT, " ".join(_canonical_words(words)))


def _letter(s: str) -> tuple[str, str] | None:
    """(letter, rest) when ``s`` starts with a multiple-choice letter, else None."""
    m = _PREFIXED_LETTER_RE.match(s) or _LETTER_RE.match(s)
    if not m:
        return None
    return m.group("a") or m.group("b"), _trim(m.group("tail"))


def _mentioned(text: str, options: list[_Form]) -> set[int]:
    """Indices of the options whose canonical text appears as whole words in ``text``."""
    padded = f" {text} "
    return {i for i, o in enumerate(options) if o.text and f" {o.text} " in padded}


def _read(text: object, choices: list[str] | None = None) -> _Form:
    s = _strip_lead_ins(_clean(text))
    if not s:
        return _Form(EMPTY, "")
    options = [_read_plain(_trim(_clean(c))) for c in choices] if choices else []
    letter = _letter(s)
    if letter is not None:
        index = ord(letter[0]) - ord("a")
        tail = _read_plain(letter[1]) if letter[1] else None
        if not options or index >= len(options):
            return _Form(LETTER, " ".join([f"({letter[0]})"] + ([tail.text] if tail else [])))
        option = _Form(OPTION, options[index].text, option=index, base=options[index])
        if tail is None or tail.kind == EMPTY or _same(tail, options[index]):
            return option
        words = set(_words(letter[1]))
        if words & (NEGATIONS | ALTERNATIVES | _JOINS | {"no"}) or _letter(letter[1]):
            return _Form(CONFLICT, f"({letter[0]}) {tail.text}")
        named = _mentioned(tail.text, options)
        if named and named != {index}:
            return _Form(CONFLICT, f"({letter[0]}) {tail.text}")  # "(A) blue" when A is red
        return option  # "(B) because it is the tallest"
    plain = _read_plain(s)
    for i, o in enumerate(options):
        if _same(plain, o):
            return _Form(OPTION, o.text, option=i, base=o)
    return plain


# -----------------------------------------------------------------------------
# the normaliser


def normalize_answer(text: object, choices: list[str] | None = None) -> str:
    """The canonical form of an answer (a short lower-case string; ``""`` for nothing).

    With ``choices`` (the options of a multiple-choice question, in order A, B, C…), a letter
    becomes the option's normalised text, and so does an answer that is one option's text. A
    letter whose text names another option ("B. red" when B is "blue") stays as written, so it
    will not match either option. A letter with no such option stays a letter: ``'(f)'``.

    >>> normalize_answer("**Twenty-one** apples"), normalize_answer("two hundred and five")
    ('21 apples', '205')
    >>> options = ["1", "2", "3"]
    >>> normalize_answer("Option (c)", options), normalize_answer("C. 3", options)
    ('3', '3')
    >>> normalize_answer("No."), normalize_answer("Nope, it is not."), normalize_answer("The bar")
    ('no', 'no', 'bar')
    >>> normalize_answer(".25"), normalize_answer("−1,000.0"), normalize_answer("45%")
    ('0.25', '-1000', '45 percent')
    """
    return _read(text, choices).text


# -----------------------------------------------------------------------------
# matching


def _tail_candidates(s: str) -> list[str]:
    """Short tails of "... is X", "... are X", "... = X", "..., so X"."""
    out = []
    for sep in (" = ", "=", " is ", " are ", " was ", ", so ", " so "):
        if sep in s:
            tail = _trim(s.rsplit(sep, 1)[1])
            if tail and len(tail.split()) <= 4:
                out.append(tail)
    return out


def _letters_named(pred: object, words: list[str], n_options: int) -> set[int]:
    """Options a sentence names by letter: "(b)", "option b", a lone "B"; "A" only in capitals
    mid-sentence or next to "and"/"or", since "a" is also the article."""
    found = {ord(w) - ord("a") for w in words if len(w) == 1 and "b" <= w <= "z"}
    tokens = _tokens(_clean(pred))
    joins = _JOINS | ALTERNATIVES
    for i, w in enumerate(tokens):  # "a" next to "and"/"or", or last after one: a letter
        before = tokens[i - 1] if i else ""
        after = tokens[i + 1] if i + 1 < len(tokens) else ""
        if w == "a" and (after in joins or (before in joins and not after)):
            found.add(0)
    raw = unicodedata.normalize("NFKC", str(pred))
    for bracketed, capital_a in re.findall(r"[(\[]\s*([A-Za-z])\s*[)\]]|(?<=\w )(A)(?![\w'])",
                                           raw):
        found.add(ord((bracketed or capital_a).lower()) - ord("a"))
    return {i for i in found if i < n_options}


def _blocked(words: list[str], gold: _Form) -> bool:
    """Does the sentence negate, hedge between alternatives, or bound a number?"""
    if set(words) & (NEGATIONS | ALTERNATIVES):
        return True
    for i, w in enumerate(words):
        if w == "no":  # "no red objects" is the count 0 when the answer is a number
            count = gold.number is not None and _read_number(words, i) is not None
            if not count:
                return True
        if w == "t" and i and words[i - 1].endswith("n"):  # isn't, aren't, doesn't
            return True
    return False


def answers_match(
    pred: object,
    gold: object,
    choices: list[str] | None = None,
    answer_letter: str | None = None,
) -> bool:
    """True when the prediction ``pred`` gives the standard answer ``gold`` (see the table above).

    ``choices`` / ``answer_letter`` describe a multiple-choice question: ``gold`` may be the
    option text or its letter, and ``pred`` may be either too.

    >>> answers_match("There are 3 red objects.", "3"), answers_match("3 or 4", "3")
    (True, False)
    >>> answers_match("The tallest bar is blue.", "blue"), answers_match("B", "B", ["x", "y"])
    (True, True)
    >>> answers_match("b", None, choices=["red", "blue"], answer_letter="B")
    True
    >>> answers_match("not green", "green"), answers_match("two hundred", "2")
    (False, False)
    """
    if choices and answer_letter and len(answer_letter.strip()) == 1:
        index = ord(answer_letter.strip().lower()) - ord("a")
        if 0 <= index < len(choices):
            gold = choices[index]
    if gold is None:
        return False
    g = _read(gold, choices)
    if g.kind in (EMPTY, CONFLICT):
        return False
    p = _read(pred, choices)
    if _same(p, g):
        return True
    if p.kind != TEXT:  # a short answer (number, yes/no, option, letter) that differs
        return False
    cleaned = _strip_lead_ins(_clean(pred))
    words = _words(cleaned)
    if g.kind == YESNO or (g.base is not None and g.base.kind == YESNO):
        # "No there are not" (no comma) still starts with a no; "yes or no" does not
        polarity = YES if g.text == "yes" else NO
        return bool(words) and words[0] in polarity and not _joined_verdict(cleaned, words)
    if _blocked(words, g):
        return False
    if not set(words) & {"and", "but"} and ";" not in cleaned:
        for tail in _tail_candidates(cleaned):
            if _same(_read(tail, choices), g):
                return True
    number = g.number
    if number is not None:  # one number in a sentence about a numeric answer
        found = _scan(words)
        if len(found) == 1:
            start, end, value = found[0]
            qualified = start > 0 and words[start - 1] in QUALIFIERS
            unit = tuple(w for w in words[end:] if w not in _FILLERS)
            if value == number.value and not qualified and (
                    not number.unit or _units_agree(unit, number.unit)):
                return True
    if choices and g.kind == OPTION:  # a sentence that names exactly one option, the right one
        options = [_read_plain(_trim(_clean(c))) for c in choices]
        named = _mentioned(" ".join(_canonical_words(words)), options)
        named |= _letters_named(pred, words, len(options))
        if named == {g.option}:
            return True
    return False
