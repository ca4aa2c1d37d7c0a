"""cotlib.experiment: the four-system comparison, end to end at a tiny scale, and its report."""

from __future__ import annotations

import dataclasses
import json

import pytest

from cotlib import cli, env, evaluate, experiment, models, stages, synth


def test_missing_base_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.setattr(env, "BASE_DIR", tmp_path / "base")
    with pytest.raises(experiment.ExperimentError, match="scripts/pretrain_base.py"):
        experiment.base_folder()
    with pytest.raises(experiment.ExperimentError, match="--base PATH"):
        experiment.base_folder(tmp_path / "elsewhere")
    assert experiment.base_folder(models.tiny("idefics3")).name.startswith("idefics3")


def test_demo_without_a_base_fails_with_one_clear_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(env, "BASE_DIR", tmp_path / "base")
    monkeypatch.setenv("COTLIB_RUNS", str(tmp_path / "runs"))
    assert cli.main(["demo", "--fast"]) == 1
    err = capsys.readouterr().err
    assert "no base model" in err and "scripts/pretrain_base.py" in err


def test_extra_task_seed_does_not_overlap_the_shipped_splits():
    shipped = {t.seed for split in ("train", "val", "test")
               for t in synth.load_split(env.DATA_DIR / "tasks" / split)}
    extra = {t.seed for t in synth.make_tasks(400, seed=experiment.EXTRA_TASK_SEED)}
    assert not shipped & extra
    assert max(extra) < 10_000_000  # the base's pretraining stream starts there


def test_a_failed_second_training_process_names_its_log(tmp_path):
    from cotlib import train

    base = experiment.base_folder(models.tiny("idefics3"))
    config = experiment.ExperimentConfig.fast(side_by_side=True)
    built = {"cot": train.synthetic_traces(n=8)}  # and no run/dataset_direct for the other run
    with pytest.raises(experiment.ExperimentError, match="train_direct.log") as err:
        experiment.train_both(built, base, tmp_path, config, log=lambda _: None)
    assert "exit code 1" in str(err.value) and "side_by_side=False" in str(err.value)
    assert "no dataset at" in (tmp_path / "train_direct.log").read_text()
    assert (tmp_path / "adapter" / "adapter_config.json").exists()  # this process's run finished


@pytest.fixture(scope="module")
def fast_run(tmp_path_factory):
    """One whole experiment in fast mode on the tiny random idefics3 model (~15 s), with the two
    LoRA runs side by side as in the demo (fast mode's default is one after the other)."""
    run = tmp_path_factory.mktemp("experiment")
    config = experiment.ExperimentConfig.fast(base=str(models.tiny("idefics3")), side_by_side=True,
                                              untagged=True)
    lines: list[str] = []
    result = experiment.run_experiment(config, run, log=lines.append)
    return run, result, lines


def test_fast_run_writes_the_run_folder(fast_run):
    run, result, lines = fast_run
    for name in ("tasks/tasks.jsonl", "traces.jsonl", "verdicts.jsonl", "dataset",
                 "dataset_direct", "adapter/adapter_config.json",
                 "adapter_direct/adapter_config.json", "eval.json", "experiment.json",
                 "overhead.png", "by_type.png", "report.md", "train_direct.log",
                 "dataset_untagged", "adapter_untagged/adapter_config.json"):
        assert (run / name).exists(), name
    assert [line[:5] for line in lines if line.startswith("[")] == [
        f"[{k}/6]" for k in range(1, 7)]
    assert any("second process" in line for line in lines)
    assert "rows: preset cpu" in (run / "train_direct.log").read_text()  # the second run's output
    adapter = json.loads((run / "adapter" / "adapter_config.json").read_text())
    assert "lm_head" in adapter["modules_to_save"]  # trained in full next to LoRA
    info = json.loads((run / "experiment.json").read_text())
    assert info["kept"] <= info["traces"] == 24
    assert (info["training"]["CoT SFT"]["steps"] == info["training"]["direct SFT"]["steps"]
            == info["training"][experiment.UNTAGGED]["steps"])  # the same budget for each
    # rows follow the task order, not the teacher's arrival order: reruns train on the same data
    from datasets import load_from_disk

    order = [task.id for task in synth.load_split(run / "tasks")]
    ids = load_from_disk(str(run / "dataset"))["train"]["task_id"]
    assert ids == sorted(ids, key=order.index) and len(ids) == info["kept"]


def test_fast_run_scores_every_system_and_the_report_shows_them(fast_run):
    run, result, _ = fast_run
    results = evaluate.load_results(run)
    assert [r.name for r in results] == [*experiment.SYSTEMS, experiment.BEST_OF_N,
                                         experiment.SWIRES, experiment.UNTAGGED]
    assert [r.n for r in results] == [8, 8, 8, 3, 3, 3, 8]  # searches on a subset, as configured
    assert results[0].format_rate == 0.0  # direct answers have no stages
    for searched in results[3:6]:
        assert searched.mean_tokens > results[0].mean_tokens  # the search samples many tokens
    assert all(len(r.rows) == r.n for r in results)
    assert experiment.table_matches_report(run)
    report = result.report.read_text()
    assert "on the first 3 of the 8 test tasks" in report
    assert "## Reading" in report and "Format compliance after CoT SFT" in report
    for what in ("Best-of-N vs greedy CoT SFT", "SWIRES vs greedy CoT SFT",
                 "CoT SFT vs the same traces without tags"):
        assert what in report


def test_untagged_ablation_trains_on_the_same_text_without_tags(fast_run):
    from cotlib import data

    run, _, _ = fast_run
    cot = data.load(run / "dataset")["train"]
    untagged = data.load(run / "dataset_untagged")["train"]
    assert untagged["task_id"] == cot["task_id"]
    for c, u in zip(cot["completion"], untagged["completion"]):
        tagged, plain = c[0]["content"][0]["text"], u[0]["content"][0]["text"]
        assert "<" not in plain and stages.retag(plain) == tagged  # the same text, tags removed


def test_direct_sft_trains_on_answers_only(fast_run):
    from cotlib import data

    run, _, _ = fast_run
    direct = data.load(run / "dataset_direct")["train"]
    cot = data.load(run / "dataset")["train"]
    assert direct["task_id"] == cot["task_id"]  # the same tasks
    texts = [c[0]["content"][0]["text"] for c in direct["completion"]]
    assert not any("<" in t for t in texts) and max(len(t.split()) for t in texts) <= 2
    assert all(stages.is_valid(c[0]["content"][0]["text"]) for c in cot["completion"])


def _result(name, tasks, correct, seconds=0.1, tokens=2):
    outputs = [t.answer if ok else "wrong" for t, ok in zip(tasks, correct)]
    return evaluate.score(name, tasks, outputs, seconds=[seconds] * len(tasks),
                          tokens=[tokens] * len(tasks))


def test_beam_stages_stop_within_the_answer_budget():
    """A random model never closes a stage: each stays within max_new_tokens, not the stage
    defaults (hundreds of tokens each), so the beam row costs what free generation may."""
    from cotlib import infer

    model, processor = models.load(models.tiny("idefics3"), dtype="float32", device="cpu")
    task = synth.make_tasks(1, seed=3)[0]
    a = experiment.answer_beam(model, processor, [task], n=2, max_new_tokens=5)
    assert a.tokens[0] <= len(stages.STAGES) * 2 * 5 < min(infer.DEFAULT_MAX_TOKENS.values())
    assert a.well_formed == [False]  # cut stages are not the model's own closings
    assert all(stages.open_tag(s) in a.outputs[0] for s in stages.STAGES)  # the decoder wrote them


def test_reading_follows_the_numbers():
    tasks = synth.make_tasks(100, seed=31)
    low = _result("direct", tasks, [i < 30 for i in range(100)])
    high = _result("cot", tasks, [i < 70 for i in range(100)], seconds=0.5, tokens=80)
    same = _result("cot", tasks, [i < 32 for i in range(100)], seconds=0.5, tokens=80)
    paid = experiment.reading([low, low, high, high])
    assert "reasoning paid" in paid[3] and "the data support that cot" in paid[1]
    assert paid[2].startswith("On the multi-step types")  # those types alone, paired
    assert "hurt" in experiment.reading([high, high, low, low])[3]
    unclear = experiment.reading([low, low, same, same])
    assert "cannot tell" in unclear[3] and "do not tell them apart" in unclear[1]
    assert "40x the generated tokens and 5.0x the seconds" in paid[1]


def test_loss_rose_flags_a_diverging_run():
    assert experiment.loss_rose([(20, 0.68), (40, 1.1), (60, 1.4), (80, 1.65), (100, 1.2),
                                 (120, 0.89), (140, 0.95), (160, 0.9)])
    assert not experiment.loss_rose([(20, 1.9), (40, 1.0), (60, 0.6), (80, 0.5)])
    assert not experiment.loss_rose([(20, 1.0)])


def test_same_tasks_rescores_on_a_subset():
    tasks = synth.make_tasks(10, seed=32)
    full = _result("cot", tasks, [i % 2 == 0 for i in range(10)])
    beam = _result("beam", tasks[:4], [True] * 4)
    sub = experiment.same_tasks(full, beam)
    assert sub.n == 4 and sub.accuracy == 0.5
    assert experiment.same_tasks(full, full) is full


def test_full_and_fast_exclude_each_other(capsys):
    from cotlib import cli

    assert cli.build_parser().parse_args(["demo", "--full"]).full
    assert cli.demo(fast=True, full=True) == 1
    assert "--fast and --full exclude each other" in capsys.readouterr().err


def test_both_adapters_train_with_the_config_recipe(tmp_path, monkeypatch):
    """train_both hands train.train the config's nested recipe, with the base, the output folder,
    the seed and the threads set per run, and the direct adapter's own learning rate."""
    from cotlib import train

    seen: dict[str, train.TrainSettings] = {}

    def fake_train(dataset, settings, verbose=True):
        seen[dataset] = settings
        return dataset

    monkeypatch.setattr(train, "train", fake_train)
    config = experiment.ExperimentConfig(side_by_side=False, threads=3, seed=5)
    assert experiment.train_both({"cot": "C", "direct": "D"}, tmp_path / "base", tmp_path,
                                 config, log=lambda _: None) == ("D", "C")
    cot, direct = seen["C"], seen["D"]
    assert (cot.model, cot.output_dir, cot.seed, cot.cpu_threads) == (
        str(tmp_path / "base"), str(tmp_path / "adapter"), 5, 3)
    assert (cot.epochs, cot.learning_rate, cot.lora_r, cot.modules_to_save, cot.batch_size,
            cot.grad_accum, cot.group_by_length) == (8.0, 1e-3, 64, ["lm_head"], 4, 1, True)
    assert direct.learning_rate == config.direct_learning_rate == 2.5e-4
    assert direct == dataclasses.replace(cot, learning_rate=2.5e-4,
                                         output_dir=str(tmp_path / "adapter_direct"))
    fast = experiment.ExperimentConfig.fast()
    assert (fast.train.epochs, fast.train.batch_size, fast.train.lora_r) == (1.0, 8, 64)


def test_demo_epochs_flag_sets_the_recipe(monkeypatch, capsys):
    seen = []

    def fake_run(config, run):
        seen.append(config)
        raise experiment.ExperimentError("stopped by the test")

    monkeypatch.setattr(experiment, "run_experiment", fake_run)
    assert cli.main(["demo", "--fast", "--epochs", "2", "--tasks", "4"]) == 1
    assert "stopped by the test" in capsys.readouterr().err
    config = seen[0]
    assert (config.train.epochs, config.train.batch_size, config.test_tasks) == (2.0, 8, 4)


def test_report_reads_a_config_recorded_before_the_recipe_was_nested(fast_run, tmp_path):
    """experiment.json files written before ExperimentConfig.train (the training fields beside
    the others, as in data/results/demo) give the same report."""
    run, result, _ = fast_run
    info = json.loads((run / "experiment.json").read_text())
    assert info["config"]["train"]["lora_r"] == 64
    flat = {k: v for k, v in info["config"].items() if k != "train"} | info["config"]["train"]
    experiment.write_report(experiment.Experiment(tmp_path, result.results, dict(
        info, config=flat), result.controls))
    ours, old = ((folder / "report.md").read_text().splitlines() for folder in (run, tmp_path))
    training = [line for line in ours if line.startswith("- training")]
    assert training and training == [line for line in old if line.startswith("- training")]
    assert "LoRA r=64 (+ lm_head trained in full)" in training[0]


def test_answers_are_scored_as_typed_objects():
    """One evaluate.Answer per task scores as evaluate.score's parallel lists did; Answers reads
    each field of its answers."""
    tasks = synth.make_tasks(6, seed=33)
    texts = [stages.render("p", "c", "r", t.answer) if i % 2 else "wrong"
             for i, t in enumerate(tasks)]
    answers = experiment.Answers(evaluate.Answer(text, 0.1 * i, 10 + i, i % 3 != 0)
                                 for i, text in enumerate(texts))
    typed = evaluate.score_answers("s", tasks, answers, note="n")
    assert typed == evaluate.score("s", tasks, answers.outputs, seconds=answers.seconds,
                                   tokens=answers.tokens, well_formed=answers.well_formed,
                                   note="n")
    assert (typed.accuracy, typed.format_rate, typed.mean_tokens) == (0.5, 0.3333, 12.5)
    assert [row["output"] for row in typed.rows] == texts
    free = experiment.Answers([evaluate.Answer("3", tokens=1)])
    assert free.well_formed is None and free.outputs == ["3"]
    with pytest.raises(ValueError, match="2 tasks but 1 answers"):
        evaluate.score_answers("s", tasks[:2], free)
    with pytest.raises(ValueError, match="2 tasks but 1 tokens"):
        evaluate.score("s", tasks[:2], ["3", "4"], tokens=[1])


@pytest.mark.parametrize("name", ["demo", "full", "full_earlier_base"])
def test_recorded_runs_report_the_table_their_answers_give(name):
    """The shipped runs (notebook 07, README): the report's table is the one eval.json's answers
    give, and the full runs have every row of the paper's table on all 330 held-out tasks."""
    folder = env.DATA_DIR / "results" / name
    assert experiment.table_matches_report(folder)
    results = evaluate.load_results(folder)
    assert [r.name for r in results[:4]] == list(experiment.SYSTEMS)
    if name != "demo":
        assert [r.name for r in results[4:]] == [experiment.BEST_OF_N, experiment.SWIRES,
                                                 experiment.UNTAGGED]
        assert {r.n for r in results} == {330}


def test_the_package_reexports_its_names_and_keeps_modules_short():
    """cotlib.experiment is a package of short modules; callers keep writing ``experiment.X``,
    and the second training process's target is importable by its module path (``spawn``
    pickles it by name)."""
    import importlib
    import pickle
    from pathlib import Path

    folder = Path(experiment.__file__).parent
    lengths = {p.name: len(p.read_text().splitlines()) for p in folder.glob("*.py")}
    assert max(lengths.values()) <= 600, lengths
    assert all(hasattr(experiment, name) for name in experiment.__all__)
    from cotlib.experiment import pipeline

    target = pickle.loads(pickle.dumps(pipeline._train_in_second_process))
    assert target is importlib.import_module(target.__module__)._train_in_second_process
    assert experiment.run_experiment is pipeline.run_experiment
