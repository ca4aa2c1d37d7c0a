"""The one answer normaliser: shared by the filter (answer check) and evaluation."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cotlib import synth
from cotlib.normalize import answers_match, normalize_answer

COLOURS = ["red", "blue", "green", "yellow"]
NUMBERS = ["1", "2", "3", "4"]


@pytest.mark.parametrize(
    "text, choices, expected",
    [
        ("3", None, "3"),
        ("Three", None, "3"),
        ("twenty-one", None, "21"),
        ("3.0", None, "3"),
        ("03", None, "3"),
        ("1,000", None, "1000"),
        ("-2", None, "-2"),
        ("45%", None, "45"),
        ("$5", None, "5"),
        ("3 objects", None, "3"),
        ("There are 3 red objects.", None, "3"),
        ("The answer is: three.", None, "3"),
        ("No red objects", None, "0"),
        ("none", None, "0"),
        ("Yes", None, "yes"),
        ("yes, there are more circles", None, "yes"),
        ("Nope, it is not.", None, "no"),
        ("TRUE", None, "yes"),
        ("**Blue**", None, "blue"),
        ("The blue bar.", None, "blue bar"),
        ("top-left", None, "top left"),
        ("“red”", None, "red"),
        ("", None, ""),
        (None, None, ""),
        ("...", None, ""),
        ("B", COLOURS, "blue"),
        ("(b)", COLOURS, "blue"),
        ("Option B", COLOURS, "blue"),
        ("B. blue", COLOURS, "blue"),
        ("b) blue", COLOURS, "blue"),
        ("Answer: (A)", COLOURS, "red"),
        ("blue", COLOURS, "blue"),
        ("B. red", COLOURS, "b red"),  # letter and text disagree: stays unmatched
        ("C", NUMBERS, "3"),
        ("three", NUMBERS, "3"),
        ("A", ["yes", "no"], "yes"),
        ("F", COLOURS, "f"),  # no option F
    ],
)
def test_normalize_answer(text, choices, expected):
    assert normalize_answer(text, choices) == expected


@pytest.mark.parametrize(
    "pred, gold, choices, letter, expected",
    [
        ("3", "3", None, None, True),
        ("three", "3", None, None, True),
        ("I count 3 in total.", "3", None, None, True),
        ("2 + 1 = 3", "3", None, None, True),
        ("3 or 4", "3", None, None, False),
        ("4", "3", None, None, False),
        ("There are no red objects.", "0", None, None, True),
        ("The tallest bar is blue.", "blue", None, None, True),
        ("The tallest bar is not blue.", "blue", None, None, False),
        ("red", "blue", None, None, False),
        ("No there are not", "no", None, None, True),
        ("Yes", "no", None, None, False),
        ("B", "blue", COLOURS, "B", True),
        ("B", None, COLOURS, "B", True),
        ("b", "B", COLOURS, None, True),
        ("blue", "B", COLOURS, None, True),
        ("The answer is B (blue).", "blue", COLOURS, "B", True),
        ("A", "blue", COLOURS, "B", False),
        ("red or blue", "blue", COLOURS, "B", False),
        ("B. red", "blue", COLOURS, "B", False),
        ("", "3", None, None, False),
        ("3", "", None, None, False),
        ("3", None, None, None, False),
    ],
)
def test_answers_match(pred, gold, choices, letter, expected):
    assert answers_match(pred, gold, choices, letter) is expected


def test_every_synthetic_answer_matches_its_variants_and_no_other_option():
    for task in synth.make_tasks(44, seed=3, mc_fraction=0.5):
        gold, options = task.answer, task.choices
        assert answers_match(gold, gold, options, task.answer_letter)
        assert answers_match(f"The answer is {gold}.", gold, options, task.answer_letter)
        if options:
            assert answers_match(task.answer_letter, gold, options, task.answer_letter)
            assert answers_match(f"({task.answer_letter.lower()})", gold, options)
            for other in options:
                if other != gold:
                    assert not answers_match(other, gold, options, task.answer_letter), task.id
        if gold.isdigit():
            assert not answers_match(str(int(gold) + 1), gold)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40), st.one_of(st.none(), st.lists(st.text(max_size=8), max_size=4)))
def test_never_raises_and_is_reflexive(text, choices):
    norm = normalize_answer(text, choices)
    assert isinstance(norm, str)
    if norm:
        assert answers_match(text, text, choices)


def test_module_doctests():
    import doctest

    from cotlib import normalize

    result = doctest.testmod(normalize, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
