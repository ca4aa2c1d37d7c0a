"""cotlib.evaluate: scoring reads the CONCLUSION, counts format, and reports the overhead."""

from __future__ import annotations

import pytest

from cotlib import checks, evaluate, stages, synth


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
    assert "| cot | 22 | 100.0% | 85.1%–100.0% | 100.0% | 30.0 | 0.300 | 15.0x | 3.0x |" in table
    assert "| count_color |" in evaluate.by_type_table([direct, cot])
    for table in (evaluate.comparison_table, evaluate.by_type_table):
        with pytest.raises(ValueError, match="no results"):
            table([])


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
    assert checks.check_best_within_budget(evaluate.best_within_budget)

    def ignores_budget(results, max_seconds):
        return max(results, key=lambda r: r.accuracy).name if results else None

    def strict(results, max_seconds):
        fits = [r for r in results if r.mean_seconds < max_seconds]
        return max(fits, key=lambda r: r.accuracy).name if fits else None

    def stub(results, max_seconds):
        raise NotImplementedError

    assert not checks.check_best_within_budget(ignores_budget)
    assert "does not fit" in capsys.readouterr().out
    assert not checks.check_best_within_budget(strict)
    assert "(<=)" in capsys.readouterr().out
    assert not checks.check_best_within_budget(stub)
    assert "not done yet" in capsys.readouterr().out


# --- intervals, paired tests and controls (the experiment's measurement) ---------------------

def test_wilson_interval_covers_and_narrows():
    lo, hi = evaluate.wilson_interval(30, 100)
    assert lo < 0.30 < hi
    lo2, hi2 = evaluate.wilson_interval(300, 1000)
    assert hi2 - lo2 < hi - lo  # more tasks, narrower interval
    assert evaluate.wilson_interval(10, 10)[1] == 1.0 and evaluate.wilson_interval(10, 10)[0] > 0.6
    with pytest.raises(ValueError, match="at least one task"):
        evaluate.wilson_interval(0, 0)
    with pytest.raises(ValueError, match="impossible"):
        evaluate.wilson_interval(5, 4)


def test_mcnemar_exact_values():
    # two-sided exact binomial on the discordant tasks, checked by hand: 2 * P(X <= 2 | 12, 0.5)
    assert evaluate.mcnemar_p(10, 2) == pytest.approx(2 * (1 + 12 + 66) / 4096)
    assert evaluate.mcnemar_p(0, 0) == 1.0
    assert evaluate.mcnemar_p(5, 5) == 1.0
    assert evaluate.mcnemar_p(0, 6) == pytest.approx(2 / 64)
    assert evaluate.mcnemar_p(6, 0) == evaluate.mcnemar_p(0, 6)


def test_paired_comparison_matches_tasks_by_id_and_is_reproducible():
    ts = synth.make_tasks(60, seed=12)
    a = evaluate.score("a", ts, [t.answer if i % 3 else "x" for i, t in enumerate(ts)])
    b = evaluate.score("b", ts[::-1], [t.answer if i % 2 else "x" for i, t in enumerate(ts[::-1])])
    c = evaluate.paired_comparison(a, b)
    right_b = {r["task_id"]: r["correct"] for r in b.rows}
    only_a = sum(r["correct"] and not right_b[r["task_id"]] for r in a.rows)
    only_b = sum(right_b[r["task_id"]] and not r["correct"] for r in a.rows)
    assert (c.only_a, c.only_b, c.n) == (only_a, only_b, 60)
    assert c.difference == pytest.approx((only_a - only_b) / 60, abs=1e-4)
    assert c.interval[0] <= c.difference <= c.interval[1]
    assert evaluate.paired_comparison(a, b) == c  # fixed seed: same interval every run
    same = evaluate.paired_comparison(a, a)
    assert same.difference == 0 and not same.supported and same.p_value == 1.0
    assert "do not tell them apart" in same.sentence()
    other = evaluate.score("other", synth.make_tasks(3, seed=13), ["1", "2", "3"])
    with pytest.raises(ValueError, match="share no task"):
        evaluate.paired_comparison(a, other)


def test_controls_tell_a_reader_from_a_guesser():
    ts = synth.make_tasks(44, seed=14)

    def reader(tasks, images):  # reads the picture it is given
        out = []
        for t, im in zip(tasks, images):
            try:
                out.append(synth.solve(t.prompt_question(), synth.scene_from_image(im))[0])
            except ValueError:
                out.append("cannot tell")
        return out

    def guesser(tasks, images):  # never looks: the majority answer of the type
        return evaluate.majority_answers(tasks)

    seen = evaluate.controls(reader, ts, name="reader")
    blind = evaluate.controls(guesser, ts, name="guesser")
    assert seen["real"].accuracy == 1.0
    assert seen["shuffled"].accuracy < 0.6 and seen["blank"].accuracy < 0.5
    assert blind["real"].accuracy == blind["shuffled"].accuracy == blind["blank"].accuracy
    assert blind["real"].accuracy == seen["majority"].accuracy
    table = evaluate.controls_table(seen)
    assert "| **all** | 44 |" in table and "count_sum" in table


def test_shuffled_images_keep_the_kind_and_move_every_image():
    ts = synth.make_tasks(22, seed=15)
    real = evaluate.control_images(ts, "real")
    moved = evaluate.control_images(ts, "shuffled", seed=3)
    for t, im, r in zip(ts, moved, real):
        assert synth.scene_from_image(im)["kind"] == t.scene["kind"]
        assert im.tobytes() != r.tobytes()
    with pytest.raises(ValueError, match="condition must be one of"):
        evaluate.control_images(ts, "upside-down")
