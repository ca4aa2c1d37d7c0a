"""cotlib.evaluate: scoring reads the CONCLUSION, counts format, and reports the overhead."""

from __future__ import annotations

import pytest

from cotlib import evaluate, stages, synth


@pytest.fixture(scope="module")
def tasks():
    return synth.make_tasks(22, seed=77)


def test_perfect_cot_outputs_score_full_marks(tasks):
    outputs = [stages.render("plan", "caption", "steps", t.answer) for t in tasks]
    result = evaluate.score("cot", tasks, outputs, seconds=[0.5] * 22, tokens=[40] * 22)
    assert result.accuracy == 1.0 and result.format_rate == 1.0
    assert set(result.by_type) == {t.task_type for t in tasks}
    assert result.stage_words["CONCLUSION"] >= 1


def test_direct_answers_are_correct_but_not_formatted(tasks):
    result = evaluate.score("direct", tasks, [t.answer for t in tasks])
    assert result.accuracy == 1.0 and result.format_rate == 0.0


def test_multiple_choice_letter_counts_as_the_option(tasks):
    mc = [t for t in synth.make_tasks(40, seed=5, mc_fraction=1.0) if t.choices][:5]
    result = evaluate.score("mc", mc, [f"({t.answer_letter})" for t in mc])
    assert result.accuracy == 1.0


def test_wrong_answers_and_broken_format_are_counted(tasks):
    outputs = [stages.render("p", "c", "r", "definitely wrong")] * len(tasks)
    outputs[0] = "<SUMMARY>cut off"
    result = evaluate.score("bad", tasks, outputs)
    assert result.accuracy == 0.0
    assert result.format_rate == pytest.approx((len(tasks) - 1) / len(tasks), abs=1e-3)
    assert result.rows[0]["well_formed"] is False


def test_comparison_table_shows_overhead(tasks):
    direct = evaluate.score("direct", tasks, [t.answer for t in tasks], seconds=[0.1] * 22,
                            tokens=[2] * 22)
    cot = evaluate.score("cot", tasks, [stages.render("p", "c", "r", t.answer) for t in tasks],
                         seconds=[0.3] * 22, tokens=[30] * 22)
    table = evaluate.comparison_table([direct, cot])
    assert "| cot | 22 | 100.0% | 100.0% | 30.0 | 0.300 | 15.0x | 3.0x |" in table
    assert "| count_color |" in evaluate.by_type_table([direct, cot])


def test_bad_input_is_refused_clearly(tasks):
    with pytest.raises(ValueError, match="one output each"):
        evaluate.score("x", tasks, ["1"])
    with pytest.raises(ValueError, match="no tasks"):
        evaluate.score("x", [], [])


def test_plot_and_save(tasks, tmp_path):
    r = evaluate.score("direct", tasks, [t.answer for t in tasks], seconds=[0.1] * 22)
    evaluate.plot_results([r], tmp_path / "eval.png")
    evaluate.save_results([r], tmp_path / "eval.json")
    assert (tmp_path / "eval.png").stat().st_size > 1000
    assert '"accuracy": 1.0' in (tmp_path / "eval.json").read_text()
