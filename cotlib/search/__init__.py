"""Stage-level beam search (LLaVA-CoT), best-of-N and greedy, with pluggable scorers.

LLaVA-CoT's inference-time scaling: for each stage, sample N candidates (T=0.6, top-p 0.9),
each stopped at the stage's closing tag, then run a pairwise knockout judged by the model itself
with a stage-specific prompt whose answer reads "Since [reason], I choose response [1/2]." The
winner is appended and the next stage is searched the same way.

Here the N candidates are decoded in one batched call from a copy of the shared prefix cache
(:meth:`cotlib.infer.DecodeState.repeat`), and any *scorer* can referee the knockout:

- :func:`judge_scorer` — the model itself, with :data:`JUDGE_PROMPTS`;
- :func:`loglik_scorer` — the candidates' (length-normalised) log-likelihood;
- :func:`openai_judge_scorer` — an external judge through the ``openai`` client;
- :func:`function_scorer` — any function of a candidate.

A judge answer that cannot be parsed does not crash the search (LLaVA-CoT's script raises an
IndexError there): that comparison falls back to the log-likelihood scorer and the fallback is
recorded. A candidate that never closed its stage loses to one that did, without asking the
judge. Everything — candidates, comparisons, raw judge answers, winners — is returned in a
:class:`SearchTree` for display.

>>> from cotlib import models
>>> from PIL import Image
>>> model, processor = models.load(models.tiny("idefics3"))
>>> tree = beam_search_stages(model, processor, Image.new("RGB", (64, 64)), "How many?", n=2,
...                           scorer=loglik_scorer(), force_tokens_per_stage=2)
>>> [len(step.candidates) for step in tree.steps]
[2, 2, 2, 2]

The package, read in this order (each module imports only the ones above it):
:mod:`~cotlib.search.tree` (:class:`Candidate`, :class:`JudgeContext`, :class:`Decision`,
:class:`Comparison`, :class:`StageSearch`, :class:`SearchTree`),
:mod:`~cotlib.search.scorers` (:class:`Scorer`, :class:`ScoreScorer`, :func:`loglik_scorer`,
:func:`function_scorer`, :func:`knockout`),
:mod:`~cotlib.search.judges` (:data:`JUDGE_PROMPTS`, the model judge, the OpenAI judge and
rater, their parsers), :mod:`~cotlib.search.beam` (:func:`beam_search_stages`,
:func:`best_of_n`, :func:`greedy`), :mod:`~cotlib.search.retracing` (:func:`swires`),
:mod:`~cotlib.search.drawing` (:func:`draw_tree`). Every public name is re-exported here:
``from cotlib import search; search.X``.
"""

from cotlib.search.beam import beam_search_stages, best_of_n, greedy
from cotlib.search.drawing import draw_tree
from cotlib.search.judges import (
    JUDGE_PROMPTS,
    ModelJudge,
    OpenAIJudge,
    OpenAIRater,
    judge_prompt,
    judge_scorer,
    openai_judge_scorer,
    openai_reward_scorer,
    parse_judgement,
    parse_rating,
)
from cotlib.search.retracing import rank_candidates, swires
from cotlib.search.scorers import (
    Scorer,
    ScoreScorer,
    function_scorer,
    knockout,
    length_normalised_loglik,
    loglik_scorer,
)
from cotlib.search.tree import (
    ANSWER,
    LLAVA_COT_SAMPLING,
    Candidate,
    Comparison,
    Decision,
    JudgeContext,
    SearchTree,
    StageSearch,
)

# The former private name, still reached through the package (tests/test_search.py).
_rank = rank_candidates

__all__ = [
    "ANSWER", "JUDGE_PROMPTS", "LLAVA_COT_SAMPLING", "Candidate", "Comparison", "Decision",
    "JudgeContext", "ModelJudge", "OpenAIJudge", "OpenAIRater", "ScoreScorer", "Scorer",
    "SearchTree", "StageSearch", "beam_search_stages", "best_of_n", "draw_tree",
    "function_scorer", "greedy", "judge_prompt", "judge_scorer", "knockout",
    "length_normalised_loglik", "loglik_scorer", "openai_judge_scorer", "openai_reward_scorer",
    "parse_judgement", "parse_rating", "rank_candidates", "swires",
]
