"""Exercise checkers for the notebooks: they explain the first mistake and never crash the lesson.

Each checker takes the learner's function, runs it on a table of cases against the library's own
answer, prints one clear line, and returns a :class:`~cotlib.checks.core.Verdict`: ``True`` or
``False`` in code and tests, and nothing under the cell in a notebook (the line has said it). A
stub that still raises ``NotImplementedError`` is reported as "not done yet" so the notebook can
continue with the library's version.

One module per notebook (``nb00_setup`` … ``nb08_own_image``) over the shared :mod:`.core`;
every checker is importable from here, so notebooks call ``checks.check_x``. This is course
scaffolding: the pipeline modules never import it.

>>> cmp("answer", 3, 3)
✅ answer: matches
True
"""

from cotlib.checks.core import (
    COURSE_FAMILIES,
    NOT_DONE,
    Case,
    Verdict,
    call,
    checker,
    cmp,
    miss,
    run_cases,
    short,
)
from cotlib.checks.nb00_setup import check_weights_gib, weights_gib_cases, weights_gib_hint
from cotlib.checks.nb01_stages import check_split_stages, split_stages_cases
from cotlib.checks.nb02_teacher import check_conditioned_prompt, conditioned_prompt_cases
from cotlib.checks.nb03_filtering import (
    answer_check_cases,
    check_answer_check,
    check_hedging_exercise,
    hedging_cases,
)
from cotlib.checks.nb04_dataset import check_completion_labels, completion_labels_reference
from cotlib.checks.nb05_lora import check_lora_forward, check_lora_merge, tiny_lora_model
from cotlib.checks.nb06_inference import check_decode_stage, check_knockout, knockout_cases
from cotlib.checks.nb07_evaluation import budget_cases, check_best_within_budget
from cotlib.checks.nb08_own_image import check_first_upload, first_upload_cases

__all__ = [
    "COURSE_FAMILIES", "NOT_DONE", "Case", "Verdict", "answer_check_cases", "budget_cases", "call",
    "check_answer_check", "check_best_within_budget", "check_completion_labels",
    "check_conditioned_prompt", "check_decode_stage", "check_first_upload",
    "check_hedging_exercise", "check_knockout", "check_lora_forward", "check_lora_merge",
    "check_split_stages", "check_weights_gib", "checker", "cmp", "completion_labels_reference",
    "conditioned_prompt_cases", "first_upload_cases", "hedging_cases", "knockout_cases", "miss",
    "run_cases", "short", "split_stages_cases", "tiny_lora_model", "weights_gib_cases",
    "weights_gib_hint",
]
