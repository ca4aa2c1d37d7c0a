"""One answer normaliser, shared by the trace filter (notebook 03) and evaluation (notebook 07).

Two answers "match" when they mean the same thing after forgiving surface differences:

- case, surrounding punctuation, quotes, markdown bold, articles ("a", "an", "the");
- lead-ins such as "The answer is", "Answer:", "So,";
- numbers written in words or digits ("three" = "3", "3.0" = "3", "1,000" = "1000");
- units and counted nouns after a number ("3 objects" = "3", "45 %" = "45");
- yes/no variants ("Yes, there are." = "yes", "nope" = "no", "true" = "yes");
- multiple choice: a letter in any dress ("B", "(b)", "Option B", "B. blue") = that option's text.

``normalize_answer`` gives the canonical form; ``answers_match`` compares a prediction with the
standard answer and also accepts two common sentence shapes: a single number in a sentence about
a numeric answer ("I count 3 in total."), and the tail of "... is X" / "... = X" ("The tallest bar
is blue.", "4 + 3 = 7"). It never accepts a prediction that names two different options.

>>> normalize_answer("  The answer is Three. ")
'3'
>>> answers_match("(B)", "blue", choices=["red", "blue"])
True
>>> answers_match("Yes, there are more circles.", "yes"), answers_match("7", "8")
(True, False)
"""

from __future__ import annotations

import re
import string
import unicodedata

# -----------------------------------------------------------------------------
# vocabularies

_UNITS = {
    "0": "zero", "1": "one", "2": "two", "3": "three", "4": "four", "5": "five", "6": "six",
    "7": "seven", "8": "eight", "9": "nine", "10": "ten", "11": "eleven", "12": "twelve",
    "13": "thirteen", "14": "fourteen", "15": "fifteen", "16": "sixteen", "17": "seventeen",
    "18": "eighteen", "19": "nineteen",
}
WORD_TO_NUMBER: dict[str, int] = {word: int(d) for d, word in _UNITS.items()}
WORD_TO_NUMBER["none"] = 0
WORD_TO_NUMBER["no"] = 0  # only used before a noun: "no red objects" -> 0 (see _words_to_digits)
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70,
         "eighty": 80, "ninety": 90}
WORD_TO_NUMBER.update(_TENS)

YES = {"yes", "y", "yeah", "yep", "yup", "true", "correct", "affirmative"}
NO = {"no", "n", "nope", "nah", "false", "incorrect", "negative"}

ARTICLES = {"a", "an", "the"}

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

_LETTER_RE = re.compile(
    r"^(?:option|choice|answer|letter)?\s*[\(\[]?\s*([a-z])\s*[\)\]\.:]?(?:\s+(.*))?$"
)
_NUMBER_RE = re.compile(r"-?\d+(?:\.\d+)?")
_TOKEN_RE = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?|\d+(?:\.\d+)?|[^\W_]+")  # drops %, $, °
_PUNCT = string.punctuation + "“”‘’«»…–—"


def _strip(s: str) -> str:
    """Strip spaces and punctuation from both ends, keeping the minus sign of '-2'."""
    stripped = s.strip(" " + _PUNCT)
    return "-" + stripped if re.match(r"^\s*-\d", s) else stripped


# -----------------------------------------------------------------------------
# helpers


def _clean(text: object) -> str:
    """Lower case, NFKC, markdown and quotes removed, whitespace collapsed."""
    if text is None:
        return ""
    s = unicodedata.normalize("NFKC", str(text)).lower()
    s = s.replace("**", " ").replace("__", " ").replace("`", " ")
    return " ".join(s.split())


def _strip_lead_ins(s: str) -> str:
    changed = True
    while changed and s:
        changed = False
        for lead in LEAD_INS:
            if s == lead:
                return ""
            if s.startswith(lead) and not s[len(lead)].isalnum():
                s = s[len(lead):].lstrip(" :,-=").strip()
                changed = True
                break
    return s


def _canonical_number(token: str) -> str:
    """'3.0' -> '3', '03' -> '3', '-2.50' -> '-2.5'."""
    if "." in token:
        token = token.rstrip("0").rstrip(".")
    sign = "-" if token.startswith("-") else ""
    body = token.lstrip("-").lstrip("0") or "0"
    if body.startswith("."):
        body = "0" + body
    return sign + body


def _words_to_digits(words: list[str]) -> list[str]:
    """Replace number words by digits: ['twenty', 'one', 'cats'] -> ['21', 'cats']."""
    out: list[str] = []
    i = 0
    while i < len(words):
        w = words[i]
        if w == "no" and i + 1 < len(words):  # "no red objects" -> "0 red objects"
            out.append("0")
        elif w in _TENS and i + 1 < len(words) and words[i + 1] in WORD_TO_NUMBER \
                and 0 < WORD_TO_NUMBER[words[i + 1]] < 10:
            out.append(str(_TENS[w] + WORD_TO_NUMBER[words[i + 1]]))
            i += 1
        elif w in WORD_TO_NUMBER and w != "no":
            out.append(str(WORD_TO_NUMBER[w]))
        else:
            out.append(w)
        i += 1
    return out


def _tokens(s: str) -> list[str]:
    """Words and numbers: decimals and thousands separators stay inside numbers, a leading minus
    sign stays on a number, and other punctuation separates words ("top-left" -> top, left)."""
    s = re.sub(r"(?<=\d),(?=\d{3}\b)", "", s)  # 1,000 -> 1000
    return _TOKEN_RE.findall(s)


def _yes_no(s: str, words: list[str]) -> str | None:
    """'yes'/'no' when the answer is a yes/no word alone or followed by punctuation ("No, ...").

    "no red objects" is not a "no": it is the count 0.
    """
    if not words or words[0] not in YES | NO:
        return None
    if len(words) == 1 or words[0] == "yes" or re.match(r"^\w+\s*[,.;:!]", s):
        return "yes" if words[0] in YES else "no"
    return None


# -----------------------------------------------------------------------------
# the normaliser


def normalize_answer(text: object, choices: list[str] | None = None) -> str:
    """The canonical form of an answer (a short lower-case string; ``""`` for nothing).

    With ``choices`` (the options of a multiple-choice question, in order A, B, C…), a letter
    becomes the option's normalised text, and so does an answer that is exactly one option's
    text. A letter whose text contradicts it ("B. red" when B is "blue") stays as written, so it
    will not match either option.

    >>> normalize_answer("**Twenty-one** apples")
    '21'
    >>> options = ["1", "2", "3"]
    >>> normalize_answer("Option (c)", options), normalize_answer("C. 3", options)
    ('3', '3')
    >>> normalize_answer("No."), normalize_answer("Nope, it is not."), normalize_answer("The bar")
    ('no', 'no', 'bar')
    """
    s = _clean(text)
    s = _strip(s)
    s = _strip(_strip_lead_ins(s))
    if choices:
        picked = _pick_choice(s, choices)
        if picked is not None:
            return picked
    return _normalize_plain(s)


def _normalize_plain(s: str) -> str:
    tokens = _tokens(s)
    words = [w for w in tokens if w not in ARTICLES] or tokens  # "a" alone stays "a"
    if not words:
        return ""
    yn = _yes_no(s, words)
    if yn is not None:
        return yn
    words = _words_to_digits(words)
    if _NUMBER_RE.fullmatch(words[0]) and not any(_NUMBER_RE.fullmatch(w) for w in words[1:]):
        return _canonical_number(words[0])  # "3 objects", "3 red circles", "45 %" -> the number
    return " ".join(_canonical_number(w) if _NUMBER_RE.fullmatch(w) else w for w in words)


def _pick_choice(s: str, choices: list[str]) -> str | None:
    """The normalised option text that ``s`` names (by letter or text), else None."""
    options = [_normalize_plain(_strip(_clean(c))) for c in choices]
    m = _LETTER_RE.match(s)
    if m and ord(m.group(1)) - ord("a") < len(choices):
        index = ord(m.group(1)) - ord("a")
        tail = m.group(2)
        is_letter = len(s) <= 3 or s.startswith(("option", "choice", "letter", "answer", "(", "["))
        is_letter = is_letter or (tail is not None and s[1:2] in ".):")
        if is_letter:
            if tail is None or _normalize_plain(tail) in ("", options[index]):
                return options[index]
            return None  # the letter and the text disagree
    plain = _normalize_plain(s)
    if plain in options:
        return plain
    return None


# -----------------------------------------------------------------------------
# matching


def _numbers(s: str) -> list[str]:
    return [_canonical_number(w) for w in _words_to_digits(_tokens(s)) if _NUMBER_RE.fullmatch(w)]


def _tail_candidates(s: str) -> list[str]:
    """Short tails of "... is X", "... are X", "... = X", "..., so X"."""
    out = []
    for sep in (" = ", "=", " is ", " are ", " was ", ", so ", " so "):
        if sep in s:
            tail = _strip(s.rsplit(sep, 1)[1])
            if tail and len(tail.split()) <= 4:
                out.append(tail)
    return out


def answers_match(
    pred: object,
    gold: object,
    choices: list[str] | None = None,
    answer_letter: str | None = None,
) -> bool:
    """True when the prediction ``pred`` gives the standard answer ``gold``.

    ``choices`` / ``answer_letter`` describe a multiple-choice question: ``gold`` may be the
    option text or its letter, and ``pred`` may be either too.

    >>> answers_match("There are 3 red objects.", "3"), answers_match("3 or 4", "3")
    (True, False)
    >>> answers_match("The tallest bar is blue.", "blue"), answers_match("B", "B", ["x", "y"])
    (True, True)
    >>> answers_match("b", None, choices=["red", "blue"], answer_letter="B")
    True
    """
    if choices and answer_letter and len(answer_letter.strip()) == 1:
        index = ord(answer_letter.strip().upper()) - ord("A")
        if 0 <= index < len(choices):
            gold = choices[index]
    if gold is None:
        return False
    g = normalize_answer(gold, choices)
    if not g:
        return False
    p = normalize_answer(pred, choices)
    if p == g:
        return True
    if not p:
        return False
    # sentence shapes: "... is X", "... = X"
    cleaned = _strip_lead_ins(_strip(_clean(pred)))
    for tail in _tail_candidates(cleaned):
        if normalize_answer(tail, choices) == g:
            return True
    if g in ("yes", "no"):  # "No there are not" (no comma) still starts with a no
        first = _tokens(cleaned)[:1]
        if first and first[0] in (YES if g == "yes" else NO):
            return True
    if _NUMBER_RE.fullmatch(g):  # one number in a sentence about a numeric answer
        nums = _numbers(cleaned)
        if nums and set(nums) == {g} and len(nums) == 1:
            return True
    if choices:  # a sentence that mentions exactly one option, and it is the right one
        options = [normalize_answer(c) for c in choices]
        words = f" {_normalize_plain(cleaned)} "
        named = [o for o in set(options) if o and f" {o} " in words]
        if named == [g]:
            return True
    return False
