"""The report: :func:`reading` (the systems compared in plain sentences, from the numbers),
:func:`write_report` (``eval.json``, the figures, ``report.md``) and
:func:`table_matches_report`."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cotlib import tables
from cotlib.evaluate import EvalResult
from cotlib.experiment.config import BEST_OF_N, EXTRA_TASK_SEED, SWIRES, UNTAGGED, Experiment

#: The task types that need more than one step (count two sets, or read two bars, then combine):
#: where reasoning in stages should help most.
MULTI_STEP = ("count_sum", "compare_counts", "count_color_shape", "bar_diff")


def subset(result: EvalResult, task_types: Sequence[str]) -> EvalResult:
    """``result`` re-scored on the tasks of ``task_types`` only (from its per-task rows)."""
    rows = [row for row in result.rows if row["task_type"] in task_types]
    if not rows:
        raise ValueError(f"{result.name!r} answered no task of the types {list(task_types)}")
    return _rescored(result, rows, f"the {', '.join(task_types)} tasks only")


def reading(results: Sequence[EvalResult]) -> list[str]:
    """Plain sentences comparing the systems, computed from the numbers (nothing is assumed
    about which way they point): each comparison is paired (the same tasks), with a 95% interval
    for the difference and an exact McNemar test, and says whether the data support it.
    Expects the four :data:`SYSTEMS` in order, then any of the other rows (:data:`BEST_OF_N`,
    :data:`SWIRES`, :data:`UNTAGGED`).

    >>> from cotlib import evaluate, stages, synth
    >>> ts = synth.make_tasks(44, seed=9)
    >>> direct = evaluate.score("direct SFT", ts, [t.answer if i % 2 else "x"
    ...                         for i, t in enumerate(ts)], seconds=[.01] * 44, tokens=[2] * 44)
    >>> cot = evaluate.score("CoT SFT", ts, [stages.render("p", "c", "r", t.answer) for t in ts],
    ...                      seconds=[.5] * 44, tokens=[80] * 44)
    >>> print(reading([direct, direct, cot, cot])[1])  # doctest: +NORMALIZE_WHITESPACE
    CoT SFT vs direct SFT: 100.0% vs 50.0% at 40x the generated tokens and 50x the seconds per
    answer. CoT SFT - direct SFT: +50.0 points (95% interval +36.4 to +63.6; 22 tasks right only
    for CoT SFT, 0 only for direct SFT, McNemar p = 4.77e-07): the data support that CoT SFT is
    more accurate.
    """
    from cotlib import evaluate

    base, direct, cot, beam = results[:4]

    def compare(a: EvalResult, b: EvalResult, what: str, paired=None) -> str:
        tok = _ratio(a.mean_tokens, b.mean_tokens)
        sec = _ratio(a.mean_seconds, b.mean_seconds)
        paired = paired or evaluate.paired_comparison(a, b)
        return (f"{what}: {a.accuracy:.1%} vs {b.accuracy:.1%} at {tok} the generated tokens and "
                f"{sec} the seconds per answer. " + paired.sentence())

    paired = evaluate.paired_comparison(cot, direct)
    lines = [compare(direct, base, "Direct SFT vs the base"),
             compare(cot, direct, "CoT SFT vs direct SFT", paired)]
    kinds = [k for k in MULTI_STEP if k in cot.by_type and k in direct.by_type]
    if kinds:
        multi = evaluate.paired_comparison(subset(cot, kinds), subset(direct, kinds))
        lines.append(f"On the multi-step types ({', '.join(kinds)}; {multi.n} tasks): "
                     + multi.sentence())
    if paired.supported:
        lines.append(
            "Here reasoning paid: the CoT adapter answers more tasks correctly than the "
            "direct-answer adapter trained on the same tasks with the same budget, as LLaVA-CoT "
            "found for an 11B model." if paired.difference > 0 else
            "Here forcing the model to reason first hurt: the direct-answer adapter, trained on "
            "the same tasks with the same budget, answers more tasks correctly — as R1-V "
            "reported for 2B models.")
    else:
        lines.append(f"On these {paired.n} tasks the run cannot tell CoT SFT and direct SFT "
                     "apart: a real difference smaller than the interval above would go unseen.")
    lines += [
        compare(beam, same_tasks(cot, beam), "Beam search vs greedy CoT SFT"
                + ("" if beam.n == cot.n else f" on the same {beam.n} tasks")),
        f"Format compliance after CoT SFT: {cot.format_rate:.1%} of free generations have all "
        f"four stages, in order, closed and non-empty; with beam search {beam.format_rate:.1%} "
        "closed every stage themselves.",
    ]
    by_name = {r.name: r for r in results[4:]}
    for name, what in ((BEST_OF_N, "Best-of-N"), (SWIRES, "SWIRES")):
        if name in by_name:
            r = by_name[name]
            lines.append(compare(r, same_tasks(cot, r), f"{what} vs greedy CoT SFT"
                                 + ("" if r.n == cot.n else f" on the same {r.n} tasks")))
    if UNTAGGED in by_name:
        lines.append(compare(cot, by_name[UNTAGGED], "CoT SFT vs the same traces without tags"))
    return lines


def _ratio(a: float, b: float) -> str:
    """``a / b`` as ``"40x"`` (``"1.3x"`` below 10, ``"?x"`` when ``b`` is 0).

    >>> _ratio(80, 2), _ratio(0.013, 0.01), _ratio(1, 0)
    ('40x', '1.3x', '?x')
    """
    if not b:
        return "?x"
    r = a / b
    return f"{r:.1f}x" if r < 10 else f"{r:.0f}x"


def same_tasks(result: EvalResult, other: EvalResult) -> EvalResult:
    """``result`` re-scored on the tasks ``other`` answered (e.g. greedy CoT on the beam-search
    subset), from its per-task rows."""
    if result.n == other.n:
        return result
    ids = {row["task_id"] for row in other.rows}
    rows = [row for row in result.rows if row["task_id"] in ids]
    return _rescored(result, rows, f"on the {len(rows)} tasks of {other.name}")


def _rescored(result: EvalResult, rows: list[dict], what: str) -> EvalResult:
    """``result``'s scores recomputed on ``rows`` (a part of its per-task rows); ``what`` is
    added to its note."""
    by_type: dict[str, list[bool]] = {}
    for row in rows:
        by_type.setdefault(row["task_type"], []).append(row["correct"])
    n = len(rows)
    return EvalResult(
        name=result.name, n=n, accuracy=round(sum(r["correct"] for r in rows) / n, 4),
        by_type={k: round(sum(v) / len(v), 4) for k, v in sorted(by_type.items())},
        format_rate=round(sum(r["well_formed"] for r in rows) / n, 4),
        mean_tokens=round(sum(r["tokens"] for r in rows) / n, 2),
        mean_seconds=round(sum(r["seconds"] for r in rows) / n, 4), rows=rows,
        note=f"{result.note}; {what}")


def _format_table(results: Sequence[EvalResult]) -> str:
    """Each system's format compliance and how its other answers broke the format (markdown)."""
    from cotlib import stages

    rows = []
    for r in results:
        bad: Counter = Counter()
        for row in r.rows:
            if not row["well_formed"]:
                parsed = stages.parse(row["output"])
                kinds = sorted(parsed.problem_kinds()) or ["a stage not closed by the model"]
                bad[kinds[0]] += 1
        problems = ", ".join(f"{k} {v}" for k, v in bad.most_common()) or "none"
        rows.append([r.name, f"{r.format_rate:.1%}", problems])
    return tables.markdown_table(
        ["system", "format compliance", "first problem of the others"], rows)


def recorded_recipe(config: dict[str, Any]) -> dict[str, Any]:
    """The training recipe of a config recorded in ``experiment.json``: its ``train`` entry, or
    the config itself for files written before the recipe was nested (the training fields were
    then beside the others).

    >>> recorded_recipe({"train": {"lora_r": 64}, "seed": 0}), recorded_recipe({"lora_r": 16})
    ({'lora_r': 64}, {'lora_r': 16})
    """
    return config.get("train", config)


def write_report(experiment: Experiment) -> Path:
    """Write ``eval.json``, ``overhead.png``, ``by_type.png`` and ``report.md`` (the table the
    report shows is the one computed from ``eval.json``'s results)."""
    import matplotlib.pyplot as plt  # matplotlib's own backend choice (see train.card)

    from cotlib import evaluate

    run, results, info = experiment.run, experiment.results, experiment.info
    evaluate.save_results(results, run / "eval.json")
    if experiment.controls:
        evaluate.save_results(list(experiment.controls.values()), run / "controls.json")
    (run / "experiment.json").write_text(json.dumps(info, indent=1, default=str))
    for name, plot in (("overhead.png", evaluate.plot_overhead),
                       ("by_type.png", evaluate.plot_by_type)):
        fig = plot(results, run / name)
        plt.close(fig)
    cfg, tr, m = info["config"], info["training"], info["machine"]
    recipe = recorded_recipe(cfg)
    n_params = info.get("base_parameters")
    params = f"({n_params:,} parameters)" if n_params else ""
    size = f"{n_params / 1e6:.1f}M-parameter" if n_params else "small"
    timing = ", ".join(f"{k.replace('_', ' ')} {v:.0f} s" for k, v in info["timings"].items())
    lines = [
        "# cotlib demo: the miniature LLaVA-CoT experiment", "",
        f"Base model `{info['base']}` {params}. {info['train_tasks']} training tasks "
        f"({cfg['extra_train_tasks']} generated with seed {EXTRA_TASK_SEED}), "
        f"{info['test_tasks']} held-out test tasks (data/tasks/{info.get('test_split', 'test')})."
        , "",
        f"- teacher: the local teacher wrote {info['traces']} traces; the filter kept "
        f"{info['kept']} (rejected: {info['rejected'] or 'none'}). Both adapters train on the "
        "tasks of the kept traces: four-stage completions for CoT SFT, the answer alone for "
        "direct SFT.",
        f"- training (same data and budget for both): LoRA r={recipe['lora_r']} (+ "
        f"{', '.join(recipe['modules_to_save'] or ()) or 'nothing'} trained in full), learning "
        "rate " + (f"{recipe['learning_rate']}" if not cfg.get("direct_learning_rate") else
                   f"{recipe['learning_rate']} (CoT) and {cfg['direct_learning_rate']} (direct), "
                   "each picked on the validation split (scripts/tune_lr.py)")
        + f", {recipe['epochs']:g} epochs, batch {recipe['batch_size']}"
        f"{' of similar lengths' if recipe.get('group_by_length') else ''}"
        f"{' (the two runs side by side, one process each)' if info.get('side_by_side') else ''}; "
        + "; ".join(f"{k}: {v['steps']} steps, {v['seconds']:.0f} s" + (
            f", loss {v['loss_first']:.3f} -> {v['loss_last']:.3f}"
            if v["loss_first"] is not None else "") + (
            " (**the training loss rose**: this run made the model worse on its own training "
            "data, so its row measures the recipe, not the method)" if v.get("loss_rose") else "")
            for k, v in tr.items()),
        "", "## Results", "",
        evaluate.comparison_table(results), "",
        f"Tokens and seconds are per answer, on {m['device']} with {m['torch_threads']} torch "
        f"thread(s). Free generation decoded {cfg.get('answer_batch', 1)} tasks per batch: its "
        "seconds are a batch's time divided by its size (one user alone waits longer); beam "
        "search ran one task at a time. The last two columns compare with the first row.", "",
    ]
    lines += [f"- **{r.name}**: {r.note}" for r in results if r.note]
    lines += ["", "![accuracy against tokens and seconds per answer](overhead.png)", "",
              "## Reading", ""]
    lines += [f"- {s}" for s in reading(results)]
    lines += [
        "- For context: LLaVA-CoT reports that four-stage SFT (and then stage-level beam "
        "search) improves an 11B model; R1-V and others found that for ~2B models forcing a "
        f"chain of thought can lose to direct answers. A {size} model trained for minutes is far "
        "from both: read this as a measurement of the method on this model, not as evidence for "
        "or against it at scale.",
        "", "## Accuracy by task type", "", evaluate.by_type_table(results), "",
        "![accuracy by task type](by_type.png)", "",
        *_controls_section(experiment), *_attribution_section(info.get("attribution")),
        "## Format and stage lengths", "",
        _format_table(results), "",
        "Mean words per stage:", "", evaluate.stage_table(results), "",
        "## Run", "",
        f"- times: {timing}; total {info['total_seconds']:.0f} s",
        f"- machine: {m['device']}, {m['cpu_count']} CPU cores, load average "
        f"{m['load_average']} at the end",
        "- files: tasks/, traces.jsonl, verdicts.jsonl, dataset/, dataset_direct/, adapter/, "
        "adapter_direct/" + (", dataset_untagged/, adapter_untagged/" if cfg.get("untagged")
                             else "")
        + ", eval.json (every answer), experiment.json, overhead.png, by_type.png",
        "",
    ]
    path = run / "report.md"
    path.write_text("\n".join(lines))
    return path


def _controls_section(experiment: Experiment) -> list[str]:
    from cotlib import evaluate

    if not experiment.controls:
        return []
    c = experiment.controls
    gap = 100 * (c["real"].accuracy - c["blank"].accuracy) if "blank" in c else float("nan")
    return [
        "## Does the base look at the image?", "",
        "The base's direct answers with each task's own image, with another task's image of the "
        "same kind (shapes or bars), and with a blank white image; and the most common answer of "
        "each task type among the training tasks, which needs no model at all. Accuracy in % "
        "(95% interval).", "",
        evaluate.controls_table(c), "",
        f"Real images minus blank images: {gap:+.1f} points. A model that scores about the same "
        "without the picture is answering from the question's wording.", ""]


def _attribution_section(table: dict | None) -> list[str]:
    if not table:
        return []
    wrong = table["n"] - table["correct"]
    cap = table["captions"]
    items = cap["items_right"] + cap["items_missed"]
    stages_ = ", ".join(f"{k} {v}" for k, v in table["wrong_by_stage"].items())
    by_stage = tables.markdown_table(
        ["task type", *table["wrong_by_stage"]],
        [[kind, *counts.values()] for kind, counts in table["by_type"].items()],
        "l" + "r" * len(table["wrong_by_stage"]))
    return [
        "## Where the wrong CoT answers went wrong", "",
        "Each CoT SFT answer checked stage by stage against the known scene "
        "(`cotlib.attribution`): CAPTION read back into a scene; REASONING re-solved on the "
        "model's own caption; CONCLUSION against the reasoning's result. A wrong answer goes to "
        "the first stage that failed: format (no CAPTION or CONCLUSION to read), perception (the "
        "caption's scene gives another answer), reasoning (it did not reach what its own "
        "caption implies), copy (the CONCLUSION differs from the reasoning's result).", "",
        f"- {table['correct']} of {table['n']} right; the {wrong} wrong: {stages_}.",
        f"- Captions read: {cap['read']}; exactly right: {cap['exact']}; scene items named right "
        f"{cap['items_right']} of {items}"
        + (f" ({cap['items_right'] / items:.1%})" if items else "")
        + f", invented {cap['items_invented']}.", "", by_stage, ""]


def table_matches_report(run: str | os.PathLike) -> bool:
    """True when ``report.md`` contains the comparison table computed from ``eval.json`` (the
    report's numbers are the measured ones)."""
    from cotlib import evaluate

    run = Path(run)
    table = evaluate.comparison_table(evaluate.load_results(run / "eval.json"))
    return table in (run / "report.md").read_text()
