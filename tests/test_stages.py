"""Tests for cotlib.stages: tags, the tolerant parser, render, validation, final_answer."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cotlib import stages as S
from cotlib.stages import (
    DUPLICATED,
    EMPTY,
    MISSING,
    OUT_OF_ORDER,
    OUTSIDE_TEXT,
    PROBLEM_KINDS,
    STAGES,
    STRAY_CLOSE,
    UNCLOSED,
    UNKNOWN_TAG,
    Parsed,
    Problem,
    close_tag,
    final_answer,
    is_valid,
    next_stage,
    open_tag,
    parse,
    render,
    render_dict,
    render_stage,
    stage_prefix,
    validate,
)

GOOD = (
    "<SUMMARY> I will read the chart and compare the bars. </SUMMARY>\n\n"
    "<CAPTION> A bar chart: A=3, B=5. </CAPTION>\n\n"
    "<REASONING> B is 5, A is 3.\nSo B is taller. </REASONING>\n\n"
    "<CONCLUSION> B </CONCLUSION>"
)


def kinds(text) -> set[str]:
    return parse(text).problem_kinds()


# -----------------------------------------------------------------------------
# names and tags


def test_stage_names_and_tags():
    assert STAGES == ("SUMMARY", "CAPTION", "REASONING", "CONCLUSION")
    assert [open_tag(s) for s in STAGES] == ["<SUMMARY>", "<CAPTION>", "<REASONING>",
                                             "<CONCLUSION>"]
    assert close_tag("CONCLUSION") == "</CONCLUSION>"
    assert open_tag("summary") == "<SUMMARY>"
    assert set(S.STAGE_PURPOSE) == set(STAGES)
    assert all(S.STAGE_PURPOSE[s].strip() for s in STAGES)
    with pytest.raises(ValueError, match="unknown stage"):
        open_tag("ANSWER")


def test_next_stage_and_prefix():
    assert [next_stage(s) for s in STAGES] == ["CAPTION", "REASONING", "CONCLUSION", None]
    assert stage_prefix("CAPTION") == "<CAPTION>"
    with pytest.raises(ValueError):
        next_stage("FOO")


def test_problem_kinds_constants():
    expected = {MISSING, EMPTY, OUT_OF_ORDER, DUPLICATED, UNCLOSED, OUTSIDE_TEXT, UNKNOWN_TAG,
                STRAY_CLOSE}
    assert set(PROBLEM_KINDS) == expected
    assert len(PROBLEM_KINDS) == len(expected)


def test_problem_str():
    assert str(Problem(MISSING, "SUMMARY", "gone")) == "missing SUMMARY: gone"
    assert str(Problem(OUTSIDE_TEXT, None, "hi")) == "outside_text: hi"


# -----------------------------------------------------------------------------
# parse: the happy path and tolerance


def test_good_text_parses_ok():
    p = parse(GOOD)
    assert p.ok and p.problems == [] and p.missing == []
    assert p.stages == {
        "SUMMARY": "I will read the chart and compare the bars.",
        "CAPTION": "A bar chart: A=3, B=5.",
        "REASONING": "B is 5, A is 3.\nSo B is taller.",
        "CONCLUSION": "B",
    }
    assert list(p.stages) == list(STAGES)
    assert is_valid(GOOD) and validate(GOOD) == []


def test_tag_case_and_whitespace_tolerance():
    text = ("<summary>plan</summary><Caption>\n cap \n</CAPTION>   \n\n\t"
            "< REASONING >why</ reasoning >\n<\tConclusion\t>42< /CONCLUSION >")
    p = parse(text)
    assert p.ok, p.problems
    assert p.stages == {"SUMMARY": "plan", "CAPTION": "cap", "REASONING": "why",
                        "CONCLUSION": "42"}


def test_no_separator_between_sections():
    assert is_valid("<SUMMARY>a</SUMMARY><CAPTION>b</CAPTION><REASONING>c</REASONING>"
                    "<CONCLUSION>d</CONCLUSION>")


def test_spaced_angle_brackets_are_plain_text():
    # 'a < b > c' is math, not an unknown tag.
    p = parse(render("s", "c", "Since 1 < x > 0 and a<b, ...", "x"))
    assert p.ok, p.problems
    assert p.stages["REASONING"] == "Since 1 < x > 0 and a<b, ..."


# -----------------------------------------------------------------------------
# parse: every problem kind


def test_missing():
    p = parse("<SUMMARY>s</SUMMARY><CONCLUSION>c</CONCLUSION>")
    assert p.problem_kinds() == {MISSING}
    assert p.missing == ["CAPTION", "REASONING"]
    assert [x.stage for x in p.problems] == ["CAPTION", "REASONING"]


def test_empty():
    p = parse(render("s", "", "r", "c"))
    assert p.problem_kinds() == {EMPTY}
    assert p.stages["CAPTION"] == ""
    assert p.problems[0].stage == "CAPTION"
    assert kinds(render("s", "c", "r", "   \n ")) == {EMPTY}


def test_out_of_order():
    text = ("<CAPTION>c</CAPTION><SUMMARY>s</SUMMARY>"
            "<REASONING>r</REASONING><CONCLUSION>d</CONCLUSION>")
    p = parse(text)
    assert p.problem_kinds() == {OUT_OF_ORDER}
    assert p.problems[0].stage == "SUMMARY"
    assert "CAPTION" in p.problems[0].detail
    assert p.stages["SUMMARY"] == "s"


def test_duplicated_keeps_first():
    text = GOOD + "\n\n<CONCLUSION> A </CONCLUSION>"
    p = parse(text)
    assert p.problem_kinds() == {DUPLICATED}
    assert p.problems[0].stage == "CONCLUSION"
    assert p.stages["CONCLUSION"] == "B"


def test_unclosed_conclusion_in_truncated_generation():
    text = GOOD.rsplit("<CONCLUSION>", 1)[0] + "<CONCLUSION> The answer is B, because"
    p = parse(text)
    assert p.problem_kinds() == {UNCLOSED}
    assert p.problems[0].stage == "CONCLUSION"
    assert p.stages["CONCLUSION"] == "The answer is B, because"
    assert final_answer(text) == "The answer is B, because"


def test_unclosed_stage_ends_at_next_opener():
    text = ("<SUMMARY>s<CAPTION>c</CAPTION><REASONING>r</REASONING>"
            "<CONCLUSION>d</CONCLUSION>")
    p = parse(text)
    assert p.problem_kinds() == {UNCLOSED}
    assert p.problems[0].stage == "SUMMARY"
    assert p.stages == {"SUMMARY": "s", "CAPTION": "c", "REASONING": "r", "CONCLUSION": "d"}


def test_outside_text():
    p = parse("Sure! Here is my answer.\n" + GOOD + "\nHope this helps")
    assert p.problem_kinds() == {OUTSIDE_TEXT}
    assert len(p.problems) == 1
    assert "Sure!" in p.problems[0].detail
    assert p.problems[0].stage is None
    # whitespace outside is fine
    assert is_valid("\n\n  " + GOOD + "\n\t ")


def test_outside_text_excerpt_is_short():
    p = parse(GOOD + "x" * 5000)
    (problem,) = p.problems
    assert problem.kind == OUTSIDE_TEXT
    assert len(problem.detail) < 100


def test_unknown_tag_inside_stage():
    text = render("s", "c", "r", "<ANSWER>B</ANSWER>")
    p = parse(text)
    assert p.problem_kinds() == {UNKNOWN_TAG}
    assert len(p.problems) == 2  # opener and closer
    assert "<ANSWER>" in p.problems[0].detail
    assert p.problems[0].stage == "CONCLUSION"
    assert p.stages["CONCLUSION"] == "<ANSWER>B</ANSWER>"  # kept verbatim


def test_unknown_tag_outside_stages():
    p = parse(GOOD + "<FOO>")
    assert p.problem_kinds() == {UNKNOWN_TAG}  # the tag is not also counted as outside text
    p = parse(GOOD + "<ANSWER>B</ANSWER>")
    assert p.problem_kinds() == {UNKNOWN_TAG, OUTSIDE_TEXT}


def test_stray_close():
    p = parse("</SUMMARY>" + GOOD)
    assert p.problem_kinds() == {STRAY_CLOSE}
    assert p.problems[0].stage == "SUMMARY"
    assert "no opening tag" in p.problems[0].detail


def test_mismatched_close_inside_other_stage():
    text = GOOD.replace("</CAPTION>", "</SUMMARY></CAPTION>")
    p = parse(text)
    assert p.problem_kinds() == {STRAY_CLOSE}
    assert "inside CAPTION" in p.problems[0].detail


def test_many_problems_at_once():
    text = "hello <CONCLUSION>4</CONCLUSION><SUMMARY></SUMMARY><SUMMARY>x</SUMMARY><REASONING>r"
    assert kinds(text) == {OUTSIDE_TEXT, OUT_OF_ORDER, EMPTY, DUPLICATED, UNCLOSED, MISSING}


def test_empty_and_junk_inputs():
    assert parse("").problem_kinds() == {MISSING}
    assert parse("").missing == list(STAGES)
    assert parse(None).problem_kinds() == {MISSING}
    assert parse(GOOD.encode()).ok
    assert parse(b"\xff\xfe<SUMMARY>").stages == {"SUMMARY": ""}
    assert parse(bytearray(GOOD.encode())).ok
    assert isinstance(parse(12345), Parsed)
    assert final_answer(None) == "" and final_answer(b"B") == "B"


# -----------------------------------------------------------------------------
# render


def test_render_format_and_roundtrip():
    text = render("  plan ", "cap", "why", "B", sep="\n")
    assert text == ("<SUMMARY> plan </SUMMARY>\n<CAPTION> cap </CAPTION>\n"
                    "<REASONING> why </REASONING>\n<CONCLUSION> B </CONCLUSION>")
    assert parse(text).stages == {"SUMMARY": "plan", "CAPTION": "cap", "REASONING": "why",
                                  "CONCLUSION": "B"}
    assert render_dict(parse(GOOD).stages) == GOOD


def test_render_rejects_stage_tags_in_text():
    with pytest.raises(ValueError, match="REASONING text contains a stage tag"):
        render("s", "c", "x </REASONING> y", "d")
    with pytest.raises(ValueError, match="stage tag"):
        render("< conclusion >", "c", "r", "d")


def test_render_dict_errors():
    with pytest.raises(ValueError, match=r"missing stages \['CAPTION', 'REASONING'\]"):
        render_dict({"SUMMARY": "s", "CONCLUSION": "c"})
    full = dict(zip(STAGES, "abcd"))
    with pytest.raises(ValueError, match="unknown stages"):
        render_dict({**full, "ANSWER": "x"})


# -----------------------------------------------------------------------------
# final_answer: the answer to grade, never a guess from REASONING


def test_final_answer_conclusion():
    assert final_answer(GOOD) == "B"
    assert final_answer(render("s", "c", "r", "  The answer is (C).  ")) == "The answer is (C)."


def test_final_answer_unclosed_conclusion():
    assert final_answer("<SUMMARY>s</SUMMARY><CONCLUSION>  7\n") == "7"
    assert final_answer("<SUMMARY>s</SUMMARY><CONCLUSION> 7 </CONCLUS") == "7"  # cut mid-tag
    assert final_answer("<SUMMARY>s</SUMMARY><CONCLUSION> 7 <") == "7"


def test_final_answer_empty_conclusion_is_no_answer():
    assert final_answer(render("s", "c", "r1\nMaybe 4.", "")) == ""
    assert final_answer("<SUMMARY>s</SUMMARY><REASONING>4</REASONING><CONCLUSION>") == ""
    # an opened CONCLUSION is the answer even when text follows it
    assert final_answer("<REASONING>r</REASONING><CONCLUSION></CONCLUSION> 4") == ""


def test_final_answer_missing_conclusion_never_reads_the_reasoning():
    text = "<SUMMARY>s</SUMMARY><REASONING>\n3 + 4 = 7\n\nMaybe 4.\n  \n</REASONING>"
    assert final_answer(text) == ""
    assert final_answer("<SUMMARY>s</SUMMARY><REASONING>Maybe 4.") == ""  # cut off
    assert final_answer("<SUMMARY>plan</SUMMARY><CAPTION> a cat </CAPTION>") == ""
    assert final_answer("<SUMMARY>plan</SUMMARY><CAPTION></CAPTION>") == ""


def test_final_answer_after_the_last_stage():
    stages3 = "<SUMMARY>s</SUMMARY>\n<CAPTION>c</CAPTION>\n<REASONING>Maybe 3.</REASONING>"
    assert final_answer(stages3 + "\nThe answer is 4.") == "The answer is 4."
    assert final_answer(stages3 + " 4 </CONCLUSION>") == "4"  # stray closing tag removed
    assert final_answer(stages3 + " <ANSWER>4</ANSWER>") == "4"  # unknown tags removed
    assert final_answer(stages3 + " 4 </CONCL") == "4"  # partial tag removed
    assert final_answer(stages3 + "<SUMMARY> again") == ""  # a stage is open at the end
    assert final_answer("<SUMMARY>s<CAPTION>c</CAPTION> 4") == "4"


def test_final_answer_no_tags_is_the_whole_text():
    assert final_answer("  42 \n") == "42"
    assert final_answer("The answer is 42. </CONCLUSION>") == "The answer is 42."
    assert final_answer("a < b > c") == "a < b > c"
    assert final_answer("42 </CONCL") == "42"


def test_final_answer_nothing():
    assert final_answer("") == ""
    assert final_answer("<SUMMARY></SUMMARY>") == ""


def test_grading_uses_final_answer_rule():
    from cotlib import evaluate, synth

    task = synth.make_task(3, "count_color")
    hedged = f"<SUMMARY>s</SUMMARY><REASONING>Maybe {task.answer}.</REASONING>"
    assert not evaluate.is_correct(task, hedged)
    assert evaluate.is_correct(task, hedged + f"\n{task.answer}")
    assert not evaluate.is_correct(task, render("s", "c", task.answer, ""))


# -----------------------------------------------------------------------------
# properties

stage_text = st.text(
    alphabet=st.characters(blacklist_characters="<>", blacklist_categories=("Cs",)),
    min_size=1, max_size=200,
).filter(lambda s: s.strip())

TAG_FRAGMENTS = (
    [open_tag(s) for s in STAGES] + [close_tag(s) for s in STAGES]
    + ["<summary>", "< CONCLUSION >", "</ reasoning>", "<ANSWER>", "</ANSWER>", "<FOO",
       "<", ">", "</", "/", "x", "B", " ", "\t", "\n", "\x00", "é"]
)


@settings(max_examples=300, deadline=None)
@given(stage_text, stage_text, stage_text, stage_text, st.sampled_from(["\n\n", "\n", " ", ""]))
def test_render_parse_roundtrip(summary, caption, reasoning, conclusion, sep):
    text = render(summary, caption, reasoning, conclusion, sep=sep)
    p = parse(text)
    assert p.ok, p.problems
    assert p.stages == {"SUMMARY": summary.strip(), "CAPTION": caption.strip(),
                        "REASONING": reasoning.strip(), "CONCLUSION": conclusion.strip()}
    assert final_answer(text) == conclusion.strip()
    assert render_dict(p.stages, sep=sep) == text


@settings(max_examples=200, deadline=None)
@given(stage_text, stage_text, st.booleans(), st.booleans())
def test_final_answer_never_reads_reasoning(summary, reasoning, closed, with_caption):
    text = render_stage("SUMMARY", summary) + (render_stage("CAPTION", "c") if with_caption else "")
    text += "<REASONING>" + reasoning + ("</REASONING>" if closed else "")
    assert final_answer(text) == ""
    assert final_answer(text + "<CONCLUSION>") == ""


def _check_parsed(p: Parsed) -> None:
    assert isinstance(p, Parsed)
    assert set(p.stages) <= set(STAGES)
    assert all(isinstance(v, str) and v == v.strip() for v in p.stages.values())
    assert p.problem_kinds() <= set(PROBLEM_KINDS)
    assert all(isinstance(str(x), str) for x in p.problems)
    assert p.ok == (not p.problems)
    assert sum(x.kind == MISSING for x in p.problems) == len(p.missing)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=3000))
def test_parse_never_raises_on_any_text(text):
    _check_parsed(parse(text))
    assert isinstance(final_answer(text), str)
    assert is_valid(text) == (validate(text) == [])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(TAG_FRAGMENTS), max_size=600))
def test_parse_never_raises_on_tag_soup(fragments):
    text = "".join(fragments)
    _check_parsed(parse(text))
    assert isinstance(final_answer(text), str)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=500))
def test_parse_never_raises_on_bytes(data):
    _check_parsed(parse(data))
    assert isinstance(final_answer(data), str)


@pytest.mark.parametrize("text", [
    "<" * 20000,
    "< " * 10000,
    "<" + " " * 20000,
    "<\t/" * 7000,
    "<a" * 10000,
    "<" + "a" * 20000,
    "< /" + " " * 20000 + "x",
    "<SUMMARY>" * 5000,
    "</SUMMARY>" * 5000,
])
@pytest.mark.timeout(30)
def test_parse_finishes_on_adversarial_input(text):
    # Catastrophic regex backtracking would hang here; pytest-timeout turns a hang into a failure.
    _check_parsed(parse(text))
    final_answer(text)


def test_untag_and_retag_round_trip_and_refuse_what_is_not_four_paragraphs():
    text = S.render("Plan.", "A grid.\n\nTwo cells.", "Step 1.\nStep 2.", "4")
    plain = S.untag(S.parse(text).stages)
    assert "<" not in plain and plain.count("\n\n") == 3  # a blank line inside a stage is folded
    assert S.final_answer(S.retag(plain)) == "4" and S.is_valid(S.retag(plain))
    for other in ("4", "a\n\nb\n\nc", "a\n\nb\n\nc\n\nd\n\ne",
                  "<SUMMARY> a </SUMMARY>\n\nb\n\nc\n\nd"):
        assert S.retag(other) == other  # graded whole, not well formed
    with pytest.raises(ValueError, match="CONCLUSION"):
        S.untag({"SUMMARY": "s", "CAPTION": "c", "REASONING": "r", "CONCLUSION": " "})
