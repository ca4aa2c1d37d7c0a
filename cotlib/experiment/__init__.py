"""The miniature LLaVA-CoT experiment: does answering in four stages help a tiny model?

Four systems answer the same held-out tasks (``data/tasks/heldout``: 330, 30 per task type):

1. **base** — the shipped base model (``data/base``), answering directly, as it was pretrained;
2. **direct SFT** — a LoRA adapter trained on the same tasks with the answers only;
3. **CoT SFT** — a LoRA adapter trained on four-stage traces (teacher → filter → dataset),
   with the same settings (epochs, learning rate, rank, batch) as the direct adapter;
4. **CoT SFT + beam** — the CoT adapter with LLaVA-CoT's stage-level beam search.

Each step is a plain function that reads and writes the run folder (``runs/<name>/``: ``tasks/``,
``traces.jsonl``, ``verdicts.jsonl``, ``dataset/``, ``adapter/``, ``eval.json``, ``report.md``);
:func:`run_experiment` calls them in order. ``cotlib demo`` and notebook 07 both use it.

Two choices the report repeats, because they matter when reading the numbers:

* the CoT SFT row decodes **freely** (one greedy ``model.generate``, nothing forced), so its format
  compliance is what the model learned. Staged decoding (:mod:`cotlib.infer`) feeds every opening
  tag itself; for the beam row a trace counts as well formed only if the model closed every stage
  with its own closing tag;
* the beam search referees candidates by their length-normalised log-likelihood, not by the model
  as its own judge (LLaVA-CoT's choice): a few-million-parameter model was never taught to answer
  "I choose response [1]".

>>> ExperimentConfig.fast().test_tasks
8

The package, read in this order (each module imports only the ones above it):
:mod:`~cotlib.experiment.config` (the systems' names, :func:`training_recipe`,
:class:`ExperimentConfig`, :class:`Experiment`, :func:`base_folder`),
:mod:`~cotlib.experiment.answering` (answering and scoring the systems, the image controls),
:mod:`~cotlib.experiment.report` (:func:`reading`, :func:`write_report`),
:mod:`~cotlib.experiment.pipeline` (tasks, traces, filter and datasets, training,
:func:`run_experiment`). Every public name is re-exported here: ``from cotlib import experiment;
experiment.X``.
"""


from cotlib.experiment.answering import (
    Answers,
    answer_beam,
    answer_best_of_n,
    answer_freely,
    answer_search,
    answer_swires,
    base_controls,
    evaluate_systems,
)
from cotlib.experiment.config import (
    BEST_OF_N,
    EXTRA_TASK_SEED,
    SWIRES,
    SYSTEMS,
    UNTAGGED,
    Experiment,
    ExperimentConfig,
    ExperimentError,
    base_folder,
    training_recipe,
)
from cotlib.experiment.pipeline import (
    DATASET_FOLDERS,
    attribution_of,
    filter_and_build,
    loss_rose,
    make_traces,
    prepare_tasks,
    run_experiment,
    train_adapter,
    train_both,
)
from cotlib.experiment.report import (
    MULTI_STEP,
    reading,
    recorded_recipe,
    same_tasks,
    subset,
    table_matches_report,
    write_report,
)

__all__ = [
    "Answers", "BEST_OF_N", "DATASET_FOLDERS", "EXTRA_TASK_SEED", "Experiment",
    "ExperimentConfig", "ExperimentError", "MULTI_STEP", "SWIRES", "SYSTEMS", "UNTAGGED",
    "answer_beam", "answer_best_of_n", "answer_freely", "answer_search", "answer_swires",
    "attribution_of", "base_controls", "base_folder", "evaluate_systems", "filter_and_build",
    "loss_rose", "make_traces", "prepare_tasks", "reading", "recorded_recipe", "run_experiment",
    "same_tasks", "subset", "table_matches_report", "train_adapter", "train_both",
    "training_recipe", "write_report",
]
