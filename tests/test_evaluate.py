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


def test_well_formed_override_for_staged_decoding(tasks):
    outputs = [stages.render("p", "c", "r", t.answer) for t in tasks]
    flags = [i % 2 == 0 for i in range(len(tasks))]
    result = evaluate.score("beam", tasks, outputs, well_formed=flags)
    assert result.format_rate == pytest.approx(sum(flags) / len(tasks), abs=1e-3)
    assert [row["well_formed"] for row in result.rows] == flags
    with pytest.raises(ValueError, match="well_formed"):
        evaluate.score("beam", tasks, outputs, well_formed=[True])


def test_results_round_trip_through_eval_json(tasks, tmp_path):
    r = evaluate.score("cot", tasks, [stages.render("a b", "c", "r", t.answer) for t in tasks],
                       seconds=[0.2] * 22, tokens=[30] * 22, note="greedy")
    evaluate.save_results([r], tmp_path / "eval.json")
    (back,) = evaluate.load_results(tmp_path)
    assert back == r
    with pytest.raises(FileNotFoundError, match="cotlib demo"):
        evaluate.load_results(tmp_path / "missing.json")


def test_stage_table_and_difference_se(tasks):
    direct = evaluate.score("direct", tasks, [t.answer for t in tasks])
    cot = evaluate.score("cot", tasks, [stages.render("a b c", "c", "r", t.answer) for t in tasks])
    table = evaluate.stage_table([direct, cot])
    assert "| cot | 3.0 | 1.0 | 1.0 |" in table and "| direct |" not in table
    assert evaluate.difference_se(direct, cot) == 0.0  # both perfect: no spread


def test_overhead_and_by_type_plots(tasks, tmp_path):
    direct = evaluate.score("direct", tasks, [t.answer for t in tasks], seconds=[0.01] * 22,
                            tokens=[2] * 22)
    cot = evaluate.score("cot", tasks, [stages.render("p", "c", "r", "x") for t in tasks],
                         seconds=[0.5] * 22, tokens=[90] * 22)
    fig = evaluate.plot_overhead([direct, cot], tmp_path / "overhead.png")
    assert [ax.get_xscale() for ax in fig.axes] == ["log", "log"]
    evaluate.plot_by_type([direct, cot], tmp_path / "by_type.png")
    assert (tmp_path / "overhead.png").stat().st_size > 1000
    assert (tmp_path / "by_type.png").stat().st_size > 1000


def test_best_within_budget_and_its_checker(capsys):
    assert evaluate.check_best_within_budget(evaluate.best_within_budget) is True

    def ignores_budget(results, max_seconds):
        return max(results, key=lambda r: r.accuracy).name if results else None

    def strict(results, max_seconds):
        fits = [r for r in results if r.mean_seconds < max_seconds]
        return max(fits, key=lambda r: r.accuracy).name if fits else None

    def stub(results, max_seconds):
        raise NotImplementedError

    assert evaluate.check_best_within_budget(ignores_budget) is False
    assert "does not fit" in capsys.readouterr().out
    assert evaluate.check_best_within_budget(strict) is False
    assert "(<=)" in capsys.readouterr().out
    assert evaluate.check_best_within_budget(stub) is False
    assert "not done yet" in capsys.readouterr().out
